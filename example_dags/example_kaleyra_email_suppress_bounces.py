"""
Suppress bounced addresses as soon as Kaleyra logs the bounce (Airflow 3: event-driven).

``KaleyraEmailNewLogRowsTrigger`` watches the logs through an ``AssetWatcher``; each batch of new
failed rows (``BOUNCE``, ``BLOCKED``, ``FAILED``, ``SUPPRESSED``) becomes an event on the asset
``kaleyra_email_failed_deliveries``, and each event starts a run of this DAG with the rows in the
event's ``payload``. The task adds the recipients to a suppression list (one address per line,
kept sorted) at the Airflow Variable ``kaleyra_email_suppression_list``, a ``file://`` or object
store URL. Adding an address twice is harmless, which matters after a triggerer restart: the
watcher then fires the watched days' rows again.

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

SUPPRESSION_LIST = "{{ var.value.get('kaleyra_email_suppression_list', 'file:///tmp/kaleyra-email-suppressed.txt') }}"


@task(templates_dict={"url": SUPPRESSION_LIST})
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
    path = ObjectStoragePath(templates_dict["url"])
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
        tags=["kaleyra", "example"],
    ) as dag:
        suppress_recipients()
