"""KaleyraEmailSendOperator in a real DAG run against the emulator."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailSendOperator
from tests.dag_files.send import dag
from tests.dags import run_dag, task_states, xcom_value


@pytest.mark.usefixtures("airflow_db")
def test_the_send_task_returns_one_message_id_per_recipient(kaleyra_email_connection, kaleyra_email_emulator):
    dag_run = run_dag(
        dag,
        datetime(2026, 11, 2, tzinfo=timezone.utc),
        run_conf={"to": ["ops@example.com", "cfo@example.com"]},
    )

    assert task_states(dag_run) == {"send": "success"}
    ids = xcom_value(dag_run, "send")
    assert len(ids) == 2
    (post,) = [r for r in kaleyra_email_emulator.requests if r.method == "POST"]
    assert post.status == 202
    (sent,) = kaleyra_email_emulator.dataset._sent_snapshot()
    assert sent.message_ids() == ids
    assert [batch[0][0] for batch in sent.batches] == ["ops@example.com", "cfo@example.com"]
    assert sent.subject == "Report for 2026-11-02"


def test_the_connection_id_is_templated_and_the_hook_is_built_at_run_time(kaleyra_email_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_EU", kaleyra_email_emulator.connection_json())
    send = KaleyraEmailSendOperator(
        task_id="send",
        from_email="reports@shop.example.com",
        to="ops@example.com",
        subject="Report",
        text_body="Done",
        kaleyra_email_conn_id="kaleyra_email_{{ params.region }}",
    )
    assert "kaleyra_email_conn_id" in send.template_fields
    assert "hook" not in vars(send)

    send.render_template_fields({"params": {"region": "eu"}})

    assert send.kaleyra_email_conn_id == "kaleyra_email_eu"
    assert "hook" not in vars(send)
    # kaleyra_email_default does not exist here: the mail goes through the rendered connection.
    assert len(send.execute({})) == 1
    assert [r.status for r in kaleyra_email_emulator.requests if r.method == "POST"] == [202]
