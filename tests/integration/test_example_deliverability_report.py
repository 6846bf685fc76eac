"""The deliverability report example runs end to end under ``dag.test()``: report, asset event, mail."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timezone

import pytest

from tests.dags import asset_event_extras, run_dag, task_states, xcom_value
from tests.integration.test_example_dags import load_examples
from tests.reports import png_size, read_page


@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 20), days=14, rows_per_day=300)
def test_the_daily_report_covers_30_days_and_is_mailed(
    airflow_db, tmp_path, monkeypatch, kaleyra_email_connection, kaleyra_email_emulator
):
    monkeypatch.setenv("AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_URL", f"file://{tmp_path}")
    dag = load_examples().get_dag("example_kaleyra_email_deliverability_report")

    dag_run = run_dag(dag, datetime(2026, 11, 3, tzinfo=timezone.utc))

    assert set(task_states(dag_run).values()) == {"success"}
    summary = xcom_value(dag_run, "deliverability_report")
    assert (summary["from_date"], summary["to_date"]) == ("2026-10-04", "2026-11-02")
    assert summary["path"] == f"file://{tmp_path}/reports/deliverability-2026-11-02.html"
    assert asset_event_extras(dag_run, "kaleyra_email_deliverability_report") == [summary]

    totals: Counter = Counter()
    for day in kaleyra_email_emulator.dataset.summary_days(date(2026, 10, 4), date(2026, 11, 2)):
        totals.update(day["stats"][0]["metrics"])
    delivered = f"{totals['delivered'] / totals['accepted']:.1%}"
    page = read_page((tmp_path / "reports" / "deliverability-2026-11-02.html").read_text())
    assert page.column("rates")["delivered"] == delivered
    assert png_size((tmp_path / "reports" / "deliverability-2026-11-02.png").read_bytes()) == (1000, 700)

    (sent,) = kaleyra_email_emulator.dataset._sent_snapshot()
    assert sent.subject == f"Email deliverability 2026-10-04 to 2026-11-02: {delivered} delivered"
    assert [batch[0][0] for batch in sent.batches] == ["deliverability@shop.example.com"]
