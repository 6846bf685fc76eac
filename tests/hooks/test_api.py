"""How we read the API: paths, envelopes, errors."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from airflow_provider_kaleyra_email import api_facts
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks import _api as api


@pytest.mark.parametrize(
    "message_id",
    [
        "a/b",
        "../../logs",
        "..",
        ".",
        "x?page=2",
        "x#frag",
        "%2F",
        "a b",
        "line\nbreak",
        "ünï:1",
        "/",
        "a%2Fb:1",
    ],
)
def test_any_message_id_is_exactly_one_path_segment(message_id):
    path = api_facts.message_stats_path("SID", message_id)
    parts = urlsplit(f"https://api.kaleyra.io{path}")

    assert parts.query == ""
    assert parts.fragment == ""
    segments = parts.path.split("/")
    assert segments[:5] == ["", "v1", "SID", "email", "stats"]
    assert len(segments) == 6
    assert segments[5] not in {".", ".."}
    assert unquote(segments[5]) == message_id


def test_ordinary_ids_are_left_readable():
    assert api_facts.message_stats_path("SID", "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1").endswith(
        "/stats/4d0cc5e0-8324-4042-b65e-20d03420bf0d:1"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"data": [], "error": {}}, None),
        ({"data": []}, None),
        ({"error": {"code": "E401", "message": "Invalid key"}}, ("E401", "Invalid key")),
        ({"code": "RBC201", "message": "Bad SID", "error": {"sid": "invalid"}}, ("RBC201", "Bad SID")),
        ({"error": {"api-key": "Invalid API key"}}, (None, "api-key: Invalid API key")),
        ({"error": "Something broke"}, (None, "Something broke")),
        ([1, 2], None),
    ],
)
def test_error_detail_reads_every_shape(body, expected):
    assert api.error_detail(body) == expected


def test_the_error_of_a_failed_status_falls_back_to_the_reason():
    assert api.error_detail(None, "Bad Gateway") == (None, "Bad Gateway")
    assert api.error_detail({"message": "Slow down"}, "x") == (None, "Slow down")


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (16, 16),
        ("16", 16),
        (16.0, 16),  # JSON does not tell 16 from 16.0
        (10**15, 10**15),
        (None, None),
        ("", None),
        (True, None),
        (-1, None),
        (16.5, None),
        (10**15 + 1, None),  # no listing's size: reported as sent, not planned from
        (10**400, None),
        ("9" * 5000, None),  # int() refuses it: never a crash
        ("\u00b2", None),  # "²".isdigit() is True
        (1e400, None),
    ],
)
def test_a_pages_total_is_a_count_or_none(total, expected):
    assert api.page_of({"data": [], "total": total}, number=1, endpoint="GET /x").total == expected


def test_a_total_that_is_not_a_count_is_kept_as_sent_for_messages():
    assert api.page_of({"data": [], "total": "many"}, number=1, endpoint="GET /x").odd_total == "'many'"
    assert api.page_of({"data": []}, number=1, endpoint="GET /x").odd_total is None


def test_data_of_refuses_other_shapes():
    assert api.data_of({"data": None}, endpoint="GET /x") == []
    with pytest.raises(KaleyraEmailAPIError, match="'data' to be a list"):
        api.data_of({"data": {"x": 1}}, endpoint="GET /x")
    with pytest.raises(KaleyraEmailAPIError, match="JSON object"):
        api.data_of("html", endpoint="GET /x")


def test_flatten_day_keeps_every_metric_and_adds_up_several_entries():
    day = {
        "date": "2022-01-11",
        "stats": [
            {"metrics": {"accepted": 9, "delivered": 2, "spam_reports": 1}},
            {"metrics": {"accepted": 1, "opens": 4}},
            {"no_metrics": True},
        ],
    }
    assert api.flatten_day(day, endpoint="GET /stats") == {
        "date": "2022-01-11",
        "accepted": 10,
        "delivered": 2,
        "spam_reports": 1,
        "opens": 4,
    }


@pytest.mark.parametrize("stats", [5, True, {"metrics": {"accepted": 1}}, "x"])
def test_a_day_whose_stats_are_not_a_list_is_an_error_not_dropped(stats):
    with pytest.raises(KaleyraEmailAPIError, match=r"day '2022-01-11': 'stats' is \w+, not a list"):
        api.flatten_day({"date": "2022-01-11", "stats": stats}, endpoint="GET /stats")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"message_id": "zzz:9", "recipients": []}, "the answer is about 'zzz:9'"),
        ({"message_id": "abc:1", "recipients": {"to": "a@example.com"}}, "'recipients' is dict, not a list"),
    ],
)
def test_a_message_answer_about_another_message_or_without_a_recipients_list_is_an_error(message, problem):
    with pytest.raises(KaleyraEmailAPIError, match=problem):
        api.message_from_body({"data": [message]}, message_id="abc:1", endpoint="GET /x")
    assert api.message_from_body({"data": [{"recipients": None}]}, message_id="abc:1", endpoint="GET /x") == {
        "recipients": []
    }


@pytest.mark.parametrize(
    "rows",
    [
        [{"message_id": "a:1", "to_mail": "x@example.com"}, {"message_id": "a:2", "to_mail": "y@example.com"}],
        [{"message_id": "a:1", "to_mail": "x@example.com"}, {"message_id": "a:2"}, {"to_mail": "z@example.com"}],
    ],
    ids=["every row complete", "rows missing a field"],
)
def test_a_page_of_keys_is_each_rows_key_or_none_for_a_row_missing_a_part(rows):
    expected = [
        (row["message_id"], row["to_mail"]) if {"message_id", "to_mail"} <= row.keys() else None for row in rows
    ]
    assert api.log_row_keys(rows) == expected
    assert api.log_row_keys(rows)[0] == ("a:1", "x@example.com")


@pytest.mark.parametrize(
    ("status", "content", "raised", "text"),
    [
        (200, b"<html>sk-123 went wrong</html>", api.TransientError, "not JSON: '<html>*** went wrong</html>'"),
        (502, b"<html>", api.TransientError, "HTTP 502 (Bad Gateway)"),
        (403, b"<html>", KaleyraEmailAPIError, "(HTTP 403): Bad Gateway"),
        (200, b'{"error": {"code": "E1", "message": "bad key sk-123"}}', KaleyraEmailAPIError, "E1): bad key ***"),
        (302, b"", KaleyraEmailAPIError, "redirect to '' not followed"),
        (400, b'{"error": {"code": "sk-123", "message": "x"}}', KaleyraEmailAPIError, "(HTTP 400, Kaleyra error ***)"),
        (200, b'{"data": ["sk-123"], "total": 1}', KaleyraEmailAPIError, "data[0] is '***' (str)"),
        (200, b"[" * 100_000 + b"]" * 100_000, api.TransientError, "not JSON"),  # msgspec: RecursionError
        (400, b"[" * 100_000 + b"]" * 100_000, KaleyraEmailAPIError, "(HTTP 400): Bad Gateway"),
        (429, b"", api.TransientError, "HTTP 429 (rate limited)"),  # an HTTP date no platform can hold
    ],
)
def test_a_failed_or_unreadable_answer_raises_what_it_means_without_the_key(status, content, raised, text):
    headers = {"Retry-After": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}
    with pytest.raises(raised) as error:
        api.interpret_response(
            status=status, reason="Bad Gateway", headers=headers, content=content, endpoint="GET /x",
            api_key="sk-123", page=1 if status == 200 and content.startswith(b"{") else None,
        )  # fmt: skip
    assert text in str(error.value)
    assert "sk-123" not in str(error.value)
    assert "sk-123" not in repr(getattr(error.value, "error_code", None))


def test_an_odd_total_is_quoted_without_the_key():
    content = b'{"data": [], "total": "sk-123"}'
    page = api.interpret_response(
        status=200, reason="OK", headers={}, content=content, endpoint="GET /x", api_key="sk-123", page=1
    )
    assert page.odd_total == "'***'"


@pytest.mark.parametrize(
    "echo",
    [
        "sk_live_SECRET_0123",
        "sk%5Flive%5FSECRET%5F0123",  # quote() never encodes "_"; a server may
        "".join(f"%{byte:02X}" for byte in b"sk_live_SECRET_0123"),
        "".join(f"%{byte:02x}" for byte in b"sk_live_SECRET_0123"),
        "SK_LIVE_secret_0123",
        "c2tfbGl2ZV9TRUNSRVRfMDEyMw",  # base64
    ],
)
def test_every_echo_of_the_key_is_scrubbed(echo):
    scrubbed = api.scrub(f"Location: /l?k={echo}&x=1", "sk_live_SECRET_0123")
    assert scrubbed.startswith("Location: /l?k=***")
    assert scrubbed.endswith("&x=1")
    assert len(scrubbed) <= len("Location: /l?k=***&x=1") + 2, (
        "base64 keeps at most the 2 characters a neighbour shares"
    )


@pytest.mark.parametrize(
    "content",
    [b'{"data": [{"to_mail": "\xff"}], "total": 1}', b'{"error": {"message": "\xff"}}'],
    ids=["in a row", "in an error"],
)
def test_a_body_that_is_not_utf8_is_unreadable_not_a_crash(content):
    with pytest.raises(api.TransientError, match="not JSON"):
        api.interpret_response(status=200, reason="OK", headers={}, content=content, endpoint="GET /x")
