"""The delivered sensor deferred through an authenticating proxy over TLS: its first poke (requests) and its trigger (httpx)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from airflow_provider_kaleyra_email.testing import KaleyraEmailEmulator
from tests.dag_files.wait_for_delivery import SLOW_TO_SHOW, wait_poke
from tests.dags import run_dag
from tests.network.test_corporate_network import tunnels


def send(emulator: KaleyraEmailEmulator, to: str) -> str:
    (message_id,) = emulator.dataset.send(from_mail="reports@shop.example.com", to=[to], subject="s").message_ids()
    return message_id


@pytest.fixture(scope="module")
def warmed_up(airflow_db):
    """Pay for the process's first ``dag.test()`` (Airflow's start-up) before the run that is timed by the emulator."""
    with KaleyraEmailEmulator() as emulator:
        os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = emulator.connection_json()
        try:
            run_dag(
                wait_poke,
                datetime(2026, 11, 1, tzinfo=timezone.utc),
                run_conf={"message_id": send(emulator, "a@x.com")},
            )
        finally:
            del os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"]


@pytest.mark.usefixtures("warmed_up")
def test_the_deferred_sensor_waits_through_the_proxy_over_tls_and_resumes(monkeypatch, tls_emulator, ca_bundle, proxy):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", tls_emulator.connection_json(verify=ca_bundle))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    tls_emulator.dataset.send_visibility_delay = 3.0  # the first (sync) poke meets a 404, so the sensor defers
    message_id = send(tls_emulator, "ops@example.com")

    dag_run = run_dag(
        SLOW_TO_SHOW["deferrable"], datetime(2026, 11, 2, tzinfo=timezone.utc), run_conf={"message_id": message_id}
    )

    (ti,) = dag_run.get_task_instances()
    assert ti.state == "success"
    statuses = [r.status for r in tls_emulator.requests_to(f"/stats/{message_id}")]
    assert statuses[0] == 404, "the first poke found it not visible yet and deferred"
    assert statuses[-1] == 200, "the trigger saw it delivered"
    # One tunnel for the worker's requests.Session, one for the triggerer's httpx client: both went through the proxy.
    assert len(tunnels(proxy, tls_emulator)) >= 2
    assert proxy.refused == 0
