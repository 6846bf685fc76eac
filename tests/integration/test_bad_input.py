"""
Bad input, table-driven: every case fails with an error that names the parameter and the bad
value (never the key), before any request reaches the API and before anything is written.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailFetchSummaryStatsOperator,
    KaleyraEmailSendOperator,
)
from airflow_provider_kaleyra_email.sensors.kaleyra_email import KaleyraEmailMessageDeliveredSensor

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

DAY = date(2026, 11, 2)
LATER = (datetime.now(timezone.utc) + timedelta(days=3)).date().isoformat()  # after today in every time zone
CONTEXT: dict[str, Any] = {
    "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
    "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
}


def hook_call(method: str, *args: Any, **kwargs: Any) -> Callable[[Path], Any]:
    def call(out: Path) -> Any:
        result = getattr(KaleyraEmailHook(), method)(*args, **kwargs)
        return list(result) if method.startswith("iter_") else result

    return call


def fetch_logs(**kwargs: Any) -> Callable[[Path], Any]:
    def call(out: Path) -> Any:
        kwargs.setdefault("output_path", f"file://{out}/logs.jsonl")
        return KaleyraEmailFetchLogsOperator(task_id="logs", **kwargs).execute(CONTEXT)

    return call


def fetch_stats(**kwargs: Any) -> Callable[[Path], Any]:
    def call(out: Path) -> Any:
        kwargs.setdefault("output_path", f"file://{out}/stats.csv")
        kwargs.setdefault("output_format", "csv")
        return KaleyraEmailFetchSummaryStatsOperator(task_id="stats", **kwargs).execute(CONTEXT)

    return call


def sensor(**kwargs: Any) -> Callable[[Path], Any]:
    def call(out: Path) -> Any:
        kwargs.setdefault("message_id", "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1")
        task = KaleyraEmailMessageDeliveredSensor(task_id="wait", poke_interval=0.1, timeout=5, **kwargs)
        return task.execute(CONTEXT)

    return call


def send(**kwargs: Any) -> Callable[[Path], Any]:
    def call(out: Path) -> Any:
        arguments = {"from_email": "a@shop.example.com", "to": "b@example.com", "subject": "s", "text_body": "t"}
        return KaleyraEmailSendOperator(task_id="send", **{**arguments, **kwargs}).execute(CONTEXT)

    return call


#: (the call, what the message must name). Connection cases change the connection first.
CASES: list[tuple[str, Callable[[Path], Any], str]] = [
    # Dates: malformed, impossible, out of order, ambiguous.
    ("hook: malformed date", hook_call("iter_logs", "2026/11/02"), "from_date='2026/11/02'"),
    ("hook: impossible month", hook_call("iter_logs", "2026-13-01"), "from_date='2026-13-01'"),
    ("hook: impossible day", hook_call("iter_logs", None, "2026-02-30"), "to_date='2026-02-30'"),
    ("hook: words for a date", hook_call("iter_summary_stats", "yesterday"), "from_date='yesterday'"),
    ("hook: from after to", hook_call("iter_logs", "2026-11-03", "2026-11-02"), "from_date='2026-11-03' is after"),
    ("hook: naive datetime", hook_call("iter_logs", datetime(2026, 11, 2)), "from_date='2026-11-02T00:00:00'"),
    ("hook: a number for a date", hook_call("iter_logs", 20261102), "from_date=20261102 (int)"),
    ("logs operator: impossible date", fetch_logs(from_date="2026-04-31"), "from_date='2026-04-31'"),
    ("stats operator: from after to", fetch_stats(from_date=DAY, to_date="2026-11-01"), "from_date='2026-11-02'"),
    ("hook: a day not begun", hook_call("iter_logs", None, LATER), f"to_date='{LATER}' is {LATER}, after the account's today"),
    ("logs operator: a day not begun", fetch_logs(from_date=LATER, to_date=LATER), f"from_date='{LATER}'"),
    ("stats operator: a day not begun", fetch_stats(to_date=LATER), f"to_date='{LATER}'"),
    # Page sizes.
    ("hook: page size 0", hook_call("iter_logs", DAY, DAY, page_size=0), "page_size=0"),
    ("hook: page size 101", hook_call("iter_summary_stats", DAY, DAY, page_size=101), "page_size=101"),
    ("hook: page size 'abc'", hook_call("iter_logs", DAY, DAY, page_size="abc"), "page_size='abc'"),
    # Message ids.
    ("hook: empty message id", hook_call("get_message_stats", ""), "message_id=''"),
    ("hook: blank message id", hook_call("get_message_stats", "  \t"), "message_id='  \\t'"),
    ("hook: message id with /", hook_call("get_message_stats", "abc/def:1"), "message_id='abc/def:1'"),
    ("hook: message id with ?", hook_call("get_message_stats", "abc?page=2"), "message_id='abc?page=2'"),
    ("hook: message id with #", hook_call("get_message_stats", "abc#x"), "message_id='abc#x'"),
    ("hook: message id with ..", hook_call("get_message_stats", "../logs"), "message_id='../logs'"),
    ("hook: message id with %2F", hook_call("get_message_stats", "abc%2Fdef"), "message_id='abc%2Fdef'"),
    ("hook: message id with a newline", hook_call("get_message_stats", "abc\n:1"), "message_id='abc\\n:1'"),
    ("logs operator: message id filter with /", fetch_logs(message_id="a/b"), "message_id='a/b'"),
    ("sensor: empty message id", sensor(message_id=""), "message_id=''"),
    ("sensor: a rendered list for an id", sensor(message_id="['abc:1']"), "message_id=\"['abc:1']\""),
    ("sensor: message id with ..", sensor(message_id="a/../b"), "message_id='a/../b'"),
    # Search terms and recipients.
    ("hook: a non-string search term", hook_call("iter_logs", DAY, DAY, search=["BOUNCE", 7]), "search[1]=7 (int)"),
    ("logs operator: a None search term", fetch_logs(search=["BOUNCE", None]), "search[1]=None"),
    ("hook: a set for search", hook_call("iter_logs", DAY, DAY, search={"BOUNCE"}), "search={'BOUNCE'} (set)"),
    ("hook: to_mail not an address", hook_call("iter_logs", DAY, DAY, to_mail="nobody"), "to_mail='nobody'"),
    ("sensor: a recipient that is no address", sensor(recipients=["not an address"]), "'not an address'"),
    ("send: no recipients", send(to=[]), "to=[]"),
    # Output.
    ("logs operator: output URL without scheme", fetch_logs(output_path="/data/logs.jsonl"), "output_path='/data/logs.jsonl'"),
    ("logs operator: unsupported scheme", fetch_logs(output_path="gopher://host/logs.jsonl"), "scheme 'gopher'"),
    ("stats operator: output URL is a folder", fetch_stats(output_path="file:///tmp/kaleyra/"), "names a folder"),
    ("logs operator: output URL is an existing folder", lambda out: fetch_logs(output_path=f"file://{out}")(out), "names a folder that exists"),
]  # fmt: skip

#: Cases that fail while the DAG is parsed: the operator cannot even be built.
PARSE_CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("unknown output format", lambda: KaleyraEmailFetchLogsOperator(task_id="l", output_format="xlsx"), "output_format='xlsx'"),
    ("negative XCom cap", lambda: KaleyraEmailFetchSummaryStatsOperator(task_id="s", max_xcom_rows=-5), "max_xcom_rows=-5"),
    ("operator page size", lambda: KaleyraEmailFetchLogsOperator(task_id="l", page_size="lots"), "page_size='lots'"),
    ("sensor require", lambda: KaleyraEmailMessageDeliveredSensor(task_id="w", message_id="a:1", require="most"), "require='most'"),
    ("sensor status typo", lambda: KaleyraEmailMessageDeliveredSensor(task_id="w", message_id="a:1", delivered_statuses=["DELIVERD"]), "'DELIVERD'"),
    ("hook concurrency", lambda: KaleyraEmailHook(max_concurrency=0), "max_concurrency=0"),
    ("hook timeout", lambda: KaleyraEmailHook(timeout=-1), "timeout=-1"),
]  # fmt: skip

#: Connection problems: (extra or field overrides, what the message must name).
CONNECTION_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("missing SID", {"login": ""}, "no account SID"),
    ("missing key", {"password": ""}, "no API key"),
    ("unknown region", {"host": "", "extra": {"region": "us"}}, "region='us'"),
    ("unknown time zone", {"extra": {"timezone": "Mars/Olympus"}}, "timezone='Mars/Olympus'"),
    ("plain http off loopback", {"host": "http://api.kaleyra.example.com"}, "plain http"),
    ("page size in extras", {"extra": {"page_size": "0"}}, "page_size='0'"),
]


def assert_nothing_happened(emulator: Any, out: Path) -> None:
    assert list(emulator.requests) == [], "a request was sent"
    assert [p for p in out.rglob("*") if p.is_file()] == [], "something was written"


@pytest.mark.parametrize(("call", "named"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_named_before_anything_happens(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, call, named
):
    with pytest.raises(ValueError, match=re.escape(named)):
        call(tmp_path)
    assert_nothing_happened(kaleyra_email_emulator, tmp_path)


@pytest.mark.parametrize(("build", "named"), [case[1:] for case in PARSE_CASES], ids=[case[0] for case in PARSE_CASES])
def test_bad_arguments_fail_at_parse_time(build, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        build()


@pytest.mark.parametrize(
    ("overrides", "named"), [case[1:] for case in CONNECTION_CASES], ids=[case[0] for case in CONNECTION_CASES]
)
def test_a_bad_connection_is_named_and_its_key_is_not(kaleyra_email_emulator, monkeypatch, tmp_path, overrides, named):
    connection = kaleyra_email_emulator.connection()
    fields = {name: value for name, value in overrides.items() if name != "extra"}
    extra = {**connection["extra"], **overrides.get("extra", {})}
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps({**connection, **fields, "extra": extra}))
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{tmp_path}/logs.jsonl")

    with pytest.raises(ValueError, match=re.escape(named)) as error:
        operator.execute(CONTEXT)

    assert kaleyra_email_emulator.api_key not in str(error.value)
    assert_nothing_happened(kaleyra_email_emulator, tmp_path)
