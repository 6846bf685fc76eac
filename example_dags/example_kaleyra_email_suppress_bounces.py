"""
Suppress bounced addresses as soon as Kaleyra logs the bounce (Airflow 3: event-driven).

``KaleyraEmailNewLogRowsTrigger`` watches the logs through an ``AssetWatcher``; each batch of new
failed rows (``BOUNCE``, ``BLOCKED``, ``FAILED``, ``SUPPRESSED``) becomes an event on the asset
``kaleyra_email_failed_deliveries``, and each event starts a run of this DAG with the rows in the
event's ``payload``. The task adds the recipients to a suppression list (one address per line,
kept sorted) at the Airflow Variable ``kaleyra_email_suppression_list``, an object store URL
(``s3://bucket/suppressed.txt``, with the connection named by the Variable
``kaleyra_email_export_conn_id``) or, on one machine only, ``file://`` (on several workers each
would keep its own list). Adding an address twice is harmless, which matters after a triggerer
restart: the watcher then fires the watched days' rows again.

The task reads the whole list and writes it back, so two runs at once would each write the list
without the other's addresses: ``max_active_runs=1`` makes the next event's run wait for the one
before (Airflow queues it), whatever the executor.

On Airflow 2.11 there is no event-driven scheduling, and this file defines no DAG.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailNewLogRowsTrigger

try:
    from airflow.sdk import AssetWatcher
except ImportError:  # Airflow 2.11
    AssetWatcher = None

SUPPRESSION_LIST = "{{ var.value.kaleyra_email_suppression_list }}"
LIST_CONN_ID = "{{ var.value.get('kaleyra_email_export_conn_id', '') }}"


@task(templates_dict={"url": SUPPRESSION_LIST, "conn_id": LIST_CONN_ID})
def suppress_recipients(triggering_asset_events: Any = None, templates_dict: Any = None) -> dict[str, int]:
    """Add every recipient of the triggering events' rows to the suppression list; return the counts."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_kaleyra_email.output import write_bytes

    addresses = {
        address.strip().lower()
        for events in (triggering_asset_events or {}).values()
        for event in events
        for row in (event.extra.get("payload") or {}).get("rows", [])
        for address in str(row.get("to_mail") or "").split(",")
        if address.strip()
    }
    url, conn_id = templates_dict["url"], templates_dict.get("conn_id")
    path = ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)
    known = set(path.read_text().split()) if path.exists() else set()
    write_bytes(path, "".join(f"{address}\n" for address in sorted(known | addresses)).encode())
    return {"new_addresses": len(addresses - known), "suppressed": len(known | addresses)}


if AssetWatcher is not None:
    failed_deliveries = Asset(
        "kaleyra_email_failed_deliveries",
        watchers=[
            AssetWatcher(
                name="kaleyra_email_failed_deliveries",
                trigger=KaleyraEmailNewLogRowsTrigger(poll_interval=60),
            )
        ],
    )

    with DAG(
        dag_id="example_kaleyra_email_suppress_bounces",
        schedule=[failed_deliveries],
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,  # one read-and-rewrite of the list at a time
        default_args={"retries": 2},
        tags=["kaleyra", "example"],
    ) as dag:
        suppress_recipients()
