"""The fetch operators called directly: dates, the XCom cap, bad input, atomic and repeatable writes."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from unittest import mock

import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowOptionalProviderFeatureException,
    AirflowSkipException,
)

from airflow_provider_kaleyra_email.hooks._api import day_keys
from airflow_provider_kaleyra_email.hooks._paging import Listing, Pages
from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailFetchSummaryStatsOperator,
)
from airflow_provider_kaleyra_email.testing import Faults

pytestmark = pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=2_000)


def interval(start: datetime, end: datetime) -> dict:
    return {"data_interval_start": start, "data_interval_end": end}


DAILY_NOV_2 = interval(datetime(2026, 11, 2, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc))


def requested_days(emulator) -> set[tuple[str, str]]:
    return {(r.query["start_date"][0], r.query["end_date"][0]) for r in emulator.requests}


@pytest.mark.parametrize(
    ("account_timezone", "start", "end", "day"),
    [
        ("UTC", datetime(2026, 11, 2, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc), "2026-11-02"),
        (
            "Asia/Kolkata",
            datetime(2026, 11, 1, 18, 30, tzinfo=timezone.utc),  # midnight Nov 2 in Kolkata
            datetime(2026, 11, 2, 18, 30, tzinfo=timezone.utc),
            "2026-11-02",
        ),
        # A UTC schedule, a Kolkata account: one day all the same, never two.
        (
            "Asia/Kolkata",
            datetime(2026, 11, 2, tzinfo=timezone.utc),
            datetime(2026, 11, 3, tzinfo=timezone.utc),
            "2026-11-02",
        ),
        # New York leaves DST on Nov 1: a 25-hour local day.
        (
            "America/New_York",
            datetime(2026, 11, 1, 4, tzinfo=timezone.utc),
            datetime(2026, 11, 2, 5, tzinfo=timezone.utc),
            "2026-11-01",
        ),
        # A UTC schedule, a Los Angeles account: the Los Angeles day that ended inside it (at 08:00 UTC).
        (
            "America/Los_Angeles",
            datetime(2026, 11, 3, tzinfo=timezone.utc),
            datetime(2026, 11, 4, tzinfo=timezone.utc),
            "2026-11-02",
        ),
        # The hourly run in which New York's Nov 2 ends (05:00 UTC) exports it.
        (
            "America/New_York",
            datetime(2026, 11, 3, 4, tzinfo=timezone.utc),
            datetime(2026, 11, 3, 5, tzinfo=timezone.utc),
            "2026-11-02",
        ),
    ],
)
def test_the_data_interval_becomes_one_account_day(
    kaleyra_email_emulator, monkeypatch, account_timezone, start, end, day
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timezone=account_timezone)
    )
    operator = KaleyraEmailFetchSummaryStatsOperator(task_id="stats")

    rows = operator.execute(interval(start, end))

    assert requested_days(kaleyra_email_emulator) == {(day, day)}
    assert [row["date"] for row in rows] == [day]


def test_an_hourly_run_in_which_no_day_ended_is_skipped_before_any_request(kaleyra_email_emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timezone="America/New_York")
    )
    hour = interval(datetime(2026, 11, 3, 5, tzinfo=timezone.utc), datetime(2026, 11, 3, 6, tzinfo=timezone.utc))
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path="file:///nonexistent/{from_date}.jsonl")

    with pytest.raises(AirflowSkipException, match=r"America/New_York\) ended within this run's data interval"):
        operator.execute(hour)

    assert list(kaleyra_email_emulator.requests) == []


def test_explicit_dates_win_over_the_interval(kaleyra_email_connection, kaleyra_email_emulator):
    operator = KaleyraEmailFetchSummaryStatsOperator(task_id="stats", from_date="2026-10-30", to_date="2026-11-01")
    rows = operator.execute(DAILY_NOV_2)
    assert [row["date"] for row in rows] == ["2026-10-30", "2026-10-31", "2026-11-01"]


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        # Airflow 3's manual run without a logical date: no interval, triggered (run_after) on Nov 2, 10:00 UTC.
        ({"dag_run": SimpleNamespace(run_after=datetime(2026, 11, 2, 10, tzinfo=timezone.utc))}, "2026-11-01"),
        # A trigger timetable's zero-length interval at 20:00 UTC on Nov 1, on a Kolkata account (01:30 on Nov 2).
        (
            {
                "data_interval_start": datetime(2026, 11, 1, 20, tzinfo=timezone.utc),
                "data_interval_end": datetime(2026, 11, 1, 20, tzinfo=timezone.utc),
                "logical_date": datetime(2026, 11, 1, 20, tzinfo=timezone.utc),
            },
            "2026-11-01",
        ),
    ],
)
def test_a_run_without_an_interval_exports_the_day_before_it_was_triggered(
    monkeypatch, kaleyra_email_emulator, context, expected
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timezone="Asia/Kolkata")
    )
    rows = KaleyraEmailFetchSummaryStatsOperator(task_id="stats").execute(context)
    assert [row["date"] for row in rows] == [expected]


def test_days_back_moves_the_run_s_days_or_the_given_ones(kaleyra_email_connection, kaleyra_email_emulator):
    rows = KaleyraEmailFetchSummaryStatsOperator(task_id="stats", days_back=1).execute(DAILY_NOV_2)
    assert [row["date"] for row in rows] == ["2026-11-01"]
    operator = KaleyraEmailFetchSummaryStatsOperator(
        task_id="stats", days_back=2, from_date="2026-11-02", to_date="2026-11-03"
    )
    assert [row["date"] for row in operator.execute(DAILY_NOV_2)] == ["2026-10-31", "2026-11-01"]
    with pytest.raises(ValueError, match="days_back"):
        KaleyraEmailFetchSummaryStatsOperator(task_id="stats", days_back=-1)
    assert len(kaleyra_email_emulator.requests) == 2


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_date_template_that_renders_blank_means_the_run_s_days(kaleyra_email_connection, blank):
    """``from_date="{{ params.day or '' }}"``: a chosen day when given, else the run's."""
    operator = KaleyraEmailFetchSummaryStatsOperator(task_id="stats", from_date=blank, to_date=blank)
    assert [row["date"] for row in operator.execute(DAILY_NOV_2)] == ["2026-11-02"]


def logged(monkeypatch, operator_class) -> mock.Mock:
    """The operator's logger, recording its calls (Airflow 3's task logger does not reach caplog)."""
    log = mock.Mock()
    monkeypatch.setattr(operator_class, "log", property(lambda self: log))
    return log


def messages(calls) -> list[str]:
    return [call.args[0] % call.args[1:] for call in calls]


@pytest.mark.kaleyra_email_emulator(start_date=None, days=3, rows_per_day=200, timezone="Pacific/Chatham")
def test_a_range_reaching_into_today_is_exported_warned_and_marked_incomplete(
    kaleyra_email_emulator, monkeypatch, tmp_path
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timezone="Pacific/Chatham")
    )
    first, today = kaleyra_email_emulator.dataset.dates()[0], kaleyra_email_emulator.dataset.end_date
    log = logged(monkeypatch, KaleyraEmailFetchSummaryStatsOperator)

    def export(to_date):
        return KaleyraEmailFetchSummaryStatsOperator(
            task_id="stats", from_date=first, to_date=to_date, output_path=f"file://{tmp_path}/{{to_date}}.jsonl"
        ).execute({})

    assert export(today - timedelta(days=1))["complete"] is True
    assert not any("not over yet" in message for message in messages(log.warning.call_args_list))

    summary = export(today)

    assert summary["complete"] is False
    assert summary["to_date"] == today.isoformat()
    (warning,) = [message for message in messages(log.warning.call_args_list) if "not over yet" in message]
    assert warning.startswith(f"to_date={today} reaches into {today}, which is not over yet in the account's")
    assert "Pacific/Chatham" in warning


def test_a_search_term_that_looks_like_a_status_is_warned_about_and_still_searched(
    kaleyra_email_connection, kaleyra_email_emulator, monkeypatch
):
    log = logged(monkeypatch, KaleyraEmailFetchLogsOperator)
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", search=["BOUNCED", "example.com"])

    assert operator.execute(DAILY_NOV_2) == []

    (warning,) = [message for message in messages(log.warning.call_args_list) if "BOUNCED" in message]
    assert "'BOUNCED' looks like a status but is none (did you mean 'BOUNCE'?)" in warning
    assert "ACCEPTED, DEFERRED, DELIVERED, OPEN, BOUNCE, BLOCKED, FAILED, SUPPRESSED" in warning
    assert [r.query["search"] for r in kaleyra_email_emulator.requests] == [["BOUNCED", "example.com"]]


def test_the_log_line_counts_in_words(kaleyra_email_connection, monkeypatch, tmp_path):
    log = logged(monkeypatch, KaleyraEmailFetchSummaryStatsOperator)
    KaleyraEmailFetchSummaryStatsOperator(task_id="stats", output_path=f"file://{tmp_path}/s.csv").execute(DAILY_NOV_2)
    (wrote,) = [message for message in messages(log.info.call_args_list) if message.startswith("Wrote")]
    assert wrote.startswith("Wrote 1 day in ")


def test_more_rows_than_the_xcom_cap_fails_after_one_request(kaleyra_email_connection, kaleyra_email_emulator):
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", max_xcom_rows=500)

    with pytest.raises(AirflowFailException, match="more than max_xcom_rows=500 log rows") as error:
        operator.execute(DAILY_NOV_2)

    assert "the API reports 2,000" in str(error.value)
    assert "set output_path (e.g. 's3://<bucket>/kaleyra/{from_date}.jsonl')" in str(error.value)
    assert "ds }}" not in str(error.value), "{{ ds }} is the logical date in UTC, not the day exported"
    assert len(kaleyra_email_emulator.requests) == 1


def test_the_cap_also_holds_without_a_total(kaleyra_email_connection, kaleyra_email_emulator):
    operator = KaleyraEmailFetchSummaryStatsOperator(
        task_id="stats", from_date="2026-10-30", to_date="2026-11-04", max_xcom_rows=3
    )
    with pytest.raises(AirflowFailException, match="more than max_xcom_rows=3 days"):
        operator.execute({})


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"output_path": "/tmp/logs.jsonl"}, "output_path='/tmp/logs.jsonl' is not a URL"),
        ({"output_path": "bogus://bucket/logs.jsonl"}, "uses the scheme 'bogus'"),
        ({"output_path": "file:///tmp/kaleyra/"}, "names a folder; name the object, e.g. '.../{from_date}.jsonl'"),
        ({"output_path": 42}, "output_path=42 (int) must be a URL string"),
        ({"from_date": "2026-11-31"}, "from_date='2026-11-31' is not a real calendar date"),
        ({"from_date": "2026-11-03", "to_date": "2026-11-02"}, "is after to_date"),
        ({"search": ["BOUNCE", None]}, "search[1]=None"),
        ({"message_id": "a/../b"}, "message_id='a/../b'"),
        ({"to_date": "2026-11-02", "output_path": "file:///tmp/x/{from_date}.jsonl"}, "uses {from_date}"),
    ],
)
def test_bad_input_fails_before_any_request_or_write(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, arguments, named
):
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", **arguments)
    with pytest.raises(ValueError, match=re.escape(named)):
        operator.execute(DAILY_NOV_2)
    assert list(kaleyra_email_emulator.requests) == []


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"output_format": "xml"}, "output_format='xml'"),
        ({"max_xcom_rows": -1}, "max_xcom_rows=-1"),
        ({"page_size": 500}, "page_size=500"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(arguments, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        KaleyraEmailFetchLogsOperator(task_id="logs", **arguments)


def test_parquet_without_pyarrow_fails_before_any_request(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an environment without the extra looks like
    operator = KaleyraEmailFetchLogsOperator(
        task_id="logs", output_path=f"file://{tmp_path}/l.parquet", output_format="parquet"
    )
    with pytest.raises(
        AirflowOptionalProviderFeatureException, match=re.escape("airflow-provider-kaleyra-email[parquet]")
    ):
        operator.execute(DAILY_NOV_2)
    assert list(kaleyra_email_emulator.requests) == []
    assert list(tmp_path.iterdir()) == []


def test_a_rerun_replaces_the_object(kaleyra_email_connection, kaleyra_email_emulator, tmp_path):
    path = tmp_path / "logs.jsonl"
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{path}")
    operator.execute(DAILY_NOV_2)
    first = path.read_text()
    kaleyra_email_emulator.dataset.rows_per_day = 300  # the day now looks different

    summary = operator.execute(DAILY_NOV_2)

    lines = path.read_text().splitlines()
    assert len(first.splitlines()) == 2_000
    assert len(lines) == summary["rows"] == 300
    assert [json.loads(line) for line in lines] == list(
        kaleyra_email_emulator.dataset.expected_logs(date(2026, 11, 2), date(2026, 11, 2))
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.jsonl"]


def test_retries_run_out_and_nothing_is_left_at_the_output_path(kaleyra_email_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(max_retries=1))
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{tmp_path}/out/logs.jsonl")

    with pytest.raises(Exception, match=r"gave up after 2 attempt\(s\)"):
        operator.execute(DAILY_NOV_2)

    assert list((tmp_path / "out").iterdir()) == []


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=sys.argv[1], max_xcom_rows=0)
    operator.execute({
        "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
        "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
    })
    """
)


@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 11, 2), days=1, rows_per_day=20_000)
def test_a_task_killed_mid_write_leaves_no_object_at_the_final_path(kaleyra_email_emulator, tmp_path):
    kaleyra_email_emulator.set_faults(Faults(latency=0.05))
    folder = tmp_path / "lake"
    final = folder / "logs.jsonl"
    environment = {**os.environ, "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT": kaleyra_email_emulator.connection_json()}
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, f"file://{final}"], env=environment)
    try:
        deadline = time.monotonic() + 120
        temporary = []
        while time.monotonic() < deadline and process.poll() is None:
            temporary = [p for p in folder.glob(".logs.jsonl.*.tmp") if p.stat().st_size > 0] if folder.exists() else []
            if temporary:
                break
            time.sleep(0.02)
        assert temporary, "the writer should be part-way through"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()

    assert not final.exists()
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in folder.iterdir())


@pytest.mark.parametrize("operator_class", [KaleyraEmailFetchLogsOperator, KaleyraEmailFetchSummaryStatsOperator])
def test_an_output_path_naming_an_existing_folder_is_refused_before_any_request(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, operator_class
):
    folder = tmp_path / "lake"
    folder.mkdir()
    operator = operator_class(task_id="export", output_path=f"file://{folder}")  # no trailing slash

    with pytest.raises(
        ValueError, match=re.escape(f"output_path='file://{folder}' names a folder that exists")
    ) as error:
        operator.execute(DAILY_NOV_2)

    assert "{from_date}" in str(error.value)
    assert list(kaleyra_email_emulator.requests) == []
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "parquet"])
def test_on_kill_mid_write_removes_the_temporary_object_and_stops_the_write(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, monkeypatch, output_format
):
    folder = tmp_path / "lake"
    operator = KaleyraEmailFetchLogsOperator(
        task_id="logs",
        from_date="2026-11-02",
        to_date="2026-11-02",
        output_path=f"file://{folder}/logs.{output_format}",
        output_format=output_format,
    )
    seen = {"rows_after_kill": 0}

    def rows():
        for i in range(5_000):
            if i == 3_000:
                seen["while_writing"] = [p.name for p in folder.iterdir()]
                operator.on_kill()  # what the task runner does on SIGTERM; Airflow 3 then lets execute go on
                seen["right_after_on_kill"] = [p.name for p in folder.iterdir()]
            if "right_after_on_kill" in seen:
                seen["rows_after_kill"] += 1
            yield {"message_id": f"m:{i}", "status": "OPEN", "sale_price": 1}  # the rows never fail

    monkeypatch.setattr(operator, "fetch", lambda from_date, to_date: ([row] for row in rows()))  # batches of one

    with pytest.raises(AirflowException, match="killed mid-write"):
        operator.execute({})

    (temporary,) = seen["while_writing"]
    assert re.fullmatch(rf"\.logs\.{output_format}\.[0-9a-f]+\.tmp", temporary)
    assert seen["right_after_on_kill"] == [], "on_kill removes the hidden temporary object at once"
    assert seen["rows_after_kill"] <= 1, "the write stops at the next row"
    assert list(folder.iterdir()) == []


def test_on_kill_outside_a_write_does_nothing(kaleyra_email_connection, kaleyra_email_emulator, tmp_path):
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{tmp_path}/logs.jsonl")
    operator.on_kill()
    assert list(tmp_path.iterdir()) == []
    assert "hook" not in vars(operator), "on_kill builds no hook"


def test_values_that_do_not_fit_parquet_are_one_warning_with_a_count_per_column(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, monkeypatch
):
    path = tmp_path / "stats.parquet"
    operator = KaleyraEmailFetchSummaryStatsOperator(
        task_id="stats",
        from_date="2026-11-01",
        to_date="2026-11-03",
        output_path=f"file://{path}",
        output_format="parquet",
    )
    rows = [
        {"date": "2026-11-01", "accepted": 3.5, "delivered": True, "opens": 1},
        {"date": "2026-11-02", "accepted": 2**70, "delivered": 7, "opens": 2},
        {"date": "2026-11-03", "accepted": "many", "delivered": 8, "opens": 3},
    ]
    listing = Listing(label="stats", endpoint="GET /stats", page_size=100, key_of=day_keys, log=logging.getLogger())
    monkeypatch.setattr(operator, "fetch", lambda from_date, to_date: Pages(iter([rows]), listing))  # one batch
    log = logged(monkeypatch, KaleyraEmailFetchSummaryStatsOperator)

    summary = operator.execute({})

    (warning,) = [
        message for message in messages(log.warning.call_args_list) if "did not fit" in message
    ]  # Airflow 3 warns of its own
    assert warning.startswith(
        "3 values of accepted did not fit int64, 1 value of delivered did not fit int64 "
        "and are kept in the extra column"
    )
    table = pq.read_table(path)
    assert table.column("accepted").to_pylist() == [None, None, None]
    assert table.column("delivered").to_pylist() == [None, 7, 8]
    assert [json.loads(text) for text in table.column("extra").to_pylist()] == [
        {"accepted": 3.5, "delivered": True},
        {"accepted": 2**70},
        {"accepted": "many"},
    ]
    assert summary["rows"] == 3


def test_the_connection_ids_are_templated_and_the_hook_is_built_at_run_time(kaleyra_email_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_NIGHTLY", kaleyra_email_emulator.connection_json())
    operator = KaleyraEmailFetchSummaryStatsOperator(
        task_id="stats", kaleyra_email_conn_id="kaleyra_email_{{ params.which }}", output_conn_id="{{ params.store }}"
    )
    assert {"kaleyra_email_conn_id", "output_conn_id"} <= set(operator.template_fields)
    assert "hook" not in vars(operator)

    operator.render_template_fields({"params": {"which": "nightly", "store": "lake_store"}})

    assert (operator.kaleyra_email_conn_id, operator.output_conn_id) == ("kaleyra_email_nightly", "lake_store")
    assert "hook" not in vars(operator)
    # kaleyra_email_default does not exist here: the rows come through the rendered connection.
    assert [row["date"] for row in operator.execute(DAILY_NOV_2)] == ["2026-11-02"]
    assert kaleyra_email_emulator.requests


@pytest.mark.usefixtures("kaleyra_email_connection")
def test_a_lying_total_fails_the_export_and_leaves_nothing_unless_a_mismatch_is_allowed(
    kaleyra_email_emulator, tmp_path
):
    from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
    from airflow_provider_kaleyra_email.testing import Quirks

    kaleyra_email_emulator.set_quirks(Quirks(total=lambda true_total, page: 10**9))
    path = tmp_path / "logs.jsonl"

    def export(**options):
        return KaleyraEmailFetchLogsOperator(
            task_id="logs", output_path=f"file://{path}", max_xcom_rows=10, **options
        ).execute(DAILY_NOV_2)

    with pytest.raises(KaleyraEmailAPIError, match=r"2,000 rows were listed, but page 1 said total=1,000,000,000"):
        export()
    assert list(tmp_path.iterdir()) == [], "no object, and no temporary object, at the output path"

    summary = export(allow_count_mismatch=True)
    assert summary["rows"] == 2_000
    assert len(path.read_text().splitlines()) == 2_000
