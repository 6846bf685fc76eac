"""How we read the API: paths, envelopes, errors."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

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
    path = api.message_stats_path("SID", message_id)
    parts = urlsplit(f"https://api.kaleyra.io{path}")

    assert parts.query == ""
    assert parts.fragment == ""
    segments = parts.path.split("/")
    assert segments[:5] == ["", "v1", "SID", "email", "stats"]
    assert len(segments) == 6
    assert segments[5] not in {".", ".."}
    assert unquote(segments[5]) == message_id


def test_ordinary_ids_are_left_readable():
    assert api.message_stats_path("SID", "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1").endswith(
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
    detail = api.error_detail(body)
    assert (detail.error_code, detail.message) == expected if expected else detail is None


def test_error_detail_for_status_falls_back_to_the_reason():
    assert api.error_detail_for_status(None, "Bad Gateway").message == "Bad Gateway"
    assert api.error_detail_for_status({"message": "Slow down"}, "x").message == "Slow down"


@pytest.mark.parametrize(
    ("total", "expected"), [(16, 16), ("16", 16), (None, None), ("", None), (True, None), (-1, None)]
)
def test_envelope_total(total, expected):
    assert api.envelope_total({"total": total}) == expected


def test_envelope_data_refuses_other_shapes():
    assert api.envelope_data({"data": None}) == []
    with pytest.raises(ValueError, match="'data' to be a list"):
        api.envelope_data({"data": {"x": 1}})
    with pytest.raises(ValueError, match="JSON object"):
        api.envelope_data("html")


def test_flatten_day_keeps_every_metric_and_adds_up_several_entries():
    day = {
        "date": "2022-01-11",
        "stats": [
            {"metrics": {"accepted": 9, "delivered": 2, "spam_reports": 1}},
            {"metrics": {"accepted": 1, "opens": 4}},
            {"no_metrics": True},
        ],
    }
    assert api.flatten_day(day) == {
        "date": "2022-01-11",
        "accepted": 10,
        "delivered": 2,
        "spam_reports": 1,
        "opens": 4,
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
