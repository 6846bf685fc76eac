"""Argument checks: every refusal names the parameter and the value."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_kaleyra_email import validation

KOLKATA = ZoneInfo("Asia/Kolkata")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-02", date(2026, 11, 2)),
        (" 2026-11-02 ", date(2026, 11, 2)),
        (date(2026, 11, 2), date(2026, 11, 2)),
        (datetime(2026, 11, 1, 20, 0, tzinfo=timezone.utc), date(2026, 11, 2)),
        (datetime(2026, 11, 2, 1, 0, tzinfo=KOLKATA), date(2026, 11, 2)),
        ("2026-11-01T20:00:00+00:00", date(2026, 11, 2)),
        ("2026-11-01T20:00:00Z", date(2026, 11, 2)),
        ("2026-11-01 18:00:00+00:00", date(2026, 11, 1)),
    ],
)
def test_parse_date_reads_the_day_in_the_account_time_zone(value, expected):
    assert validation.parse_date(value, parameter="from_date", tz=KOLKATA) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2026-13-01", "not a real calendar date"),
        ("2026-02-30", "not a real calendar date"),
        ("02/11/2026", "is not a date"),
        ("", "is not a date"),
        ("2026-11-01T20:00:00", "naive datetime"),
        (datetime(2026, 11, 1), "naive datetime"),
        (20261101, "(int) is not a date"),
        (None, "(NoneType) is not a date"),
    ],
)
def test_parse_date_refuses(value, fragment):
    with pytest.raises(ValueError, match="from_date=") as error:
        validation.parse_date(value, parameter="from_date", tz=KOLKATA)
    assert fragment in str(error.value)


def test_date_range_checks_order_and_allows_open_ends():
    assert validation.date_range(None, "2026-11-02", tz=KOLKATA) == (None, date(2026, 11, 2))
    assert validation.date_range("2026-11-02", "2026-11-02", tz=KOLKATA)[0] == date(2026, 11, 2)
    with pytest.raises(ValueError, match="from_date='2026-11-03' is after to_date='2026-11-02'"):
        validation.date_range("2026-11-03", date(2026, 11, 2), tz=KOLKATA)


@pytest.mark.parametrize("zone", ["Pacific/Chatham", "America/Los_Angeles"])  # the first and the last to reach a day
def test_a_day_after_the_accounts_today_is_refused_naming_the_parameter_and_the_value(zone):
    tz = ZoneInfo(zone)
    now = datetime.now(timezone.utc)
    today = now.astimezone(tz).date()
    assert validation.date_range(today - timedelta(days=3), today, tz=tz) == (today - timedelta(days=3), today)

    later = (today + timedelta(days=2)).isoformat()  # 2 days: a midnight passing during the test changes nothing
    with pytest.raises(ValueError, match=re.escape(f"to_date='{later}' is {later}, after the account's today")):
        validation.date_range(None, later, tz=tz)
    with pytest.raises(ValueError, match=re.escape(f"from_date='{later}' is {later}, after the account's today")):
        validation.date_range(later, None, tz=tz)
    # A datetime names the day it falls on in the account's zone.
    moment = now + timedelta(days=2)
    with pytest.raises(
        ValueError, match=re.escape(f"to_date='{moment.isoformat()}' is {moment.astimezone(tz).date()}")
    ):
        validation.date_range(today, moment, tz=tz)


@pytest.mark.parametrize(
    ("terms", "typos"),
    [
        (["BOUNCED"], {"BOUNCED": "BOUNCE"}),
        (["deliverd", "x@example.com"], {"deliverd": "DELIVERED"}),
        (["SUPRESSED", "Welcome series"], {"SUPRESSED": "SUPPRESSED"}),
        (["OPENED"], {"OPENED": "OPEN"}),
        # A status in any case, an address, a template name, a number: not a typo.
        (["bounce", "BLOCKED", "Open"], {}),
        (["newsletter", "orders@shop.example.com", "550", "welcome"], {}),
    ],
)
def test_a_search_term_close_to_a_status_is_named_with_the_status_it_resembles(terms, typos):
    statuses = ["ACCEPTED", "DEFERRED", "DELIVERED", "OPEN", "BOUNCE", "BLOCKED", "FAILED", "SUPPRESSED"]
    assert validation.status_typos(terms, statuses) == typos


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (100, 100), ("50", 50)])
def test_page_size_accepts(value, expected):
    assert validation.page_size(value) == expected


@pytest.mark.parametrize("value", [0, 101, -5, "abc", "", True, 2.5, None])
def test_page_size_refuses(value):
    with pytest.raises(ValueError, match=re.escape(f"page_size={value!r}")):
        validation.page_size(value)


@pytest.mark.parametrize("value", ["4d0cc5e0-8324-4042-b65e-20d03420bf0d:1", "abc", "a.b:2", "x+y=z@w~v_u:3"])
def test_message_id_accepts(value):
    assert validation.message_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "   ", "a/b", "a?b", "a#b", "..", "a..b", "%2F", "a\nb", " a", "['x:1']", "a b", 7, None],
)
def test_message_id_refuses(value):
    with pytest.raises(ValueError, match=re.escape(f"message_id={value!r}")):
        validation.message_id(value)


def test_search_terms():
    assert validation.search_terms(None) == []
    assert validation.search_terms("BOUNCE") == ["BOUNCE"]
    assert validation.search_terms(("BOUNCE", "x@y.z")) == ["BOUNCE", "x@y.z"]
    with pytest.raises(ValueError, match=r"search\[1\]=5 \(int\)"):
        validation.search_terms(["BOUNCE", 5])
    with pytest.raises(ValueError, match=r"search\[0\]=' '"):
        validation.search_terms([" "])
    with pytest.raises(ValueError, match=r"search=\{'BOUNCE'\} \(set\)"):
        validation.search_terms({"BOUNCE"})


def test_numbers_and_flags():
    assert validation.positive_number("2.5", parameter="timeout") == 2.5
    for bad in (0, -1, "x", float("inf"), True):
        with pytest.raises(ValueError, match="timeout="):
            validation.positive_number(bad, parameter="timeout")
    assert validation.boolean("true", parameter="f") is True
    assert validation.boolean("0", parameter="f") is False
    with pytest.raises(ValueError, match="f='maybe'"):
        validation.boolean("maybe", parameter="f")
    with pytest.raises(ValueError, match="max_retries=99"):
        validation.int_in_range(99, parameter="max_retries", low=0, high=20)


def test_timezone():
    assert validation.account_timezone("Asia/Kolkata").utcoffset(datetime(2026, 1, 1)) == timedelta(hours=5, minutes=30)
    with pytest.raises(ValueError, match="timezone='Mars/Olympus'"):
        validation.account_timezone("Mars/Olympus")
