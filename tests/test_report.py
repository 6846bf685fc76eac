"""The report's figures and page from hand-made rows: rates, reasons, domains, HTML and PNG."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from airflow_provider_kaleyra_email.report import FailureTally, build_report, main_chart, render_html
from tests.reports import number, png_size, read_page

FIRST, LAST = date(2026, 11, 1), date(2026, 11, 3)
READ_AT = datetime(2026, 11, 4, 9, 30, tzinfo=timezone.utc)


def report_of(rows, failed=(), *, first=FIRST, last=LAST, top=10):
    tally = FailureTally()
    for row in failed:
        tally.add(row)
    return build_report(rows, tally, from_date=first, to_date=last, timezone="UTC", read_at=READ_AT, top=top)


def page_of(report):
    return read_page(render_html(report, main_chart(report)))


TWO_DAYS = [
    {"date": "2026-11-01", "accepted": 100, "delivered": 90, "opens": 40, "bounces": 6, "blocks": 2, "deferred": 1},
    {"date": "2026-11-03", "accepted": 300, "delivered": 240, "opens": 60, "bounces": 30, "blocks": 12, "spam": 3},
]


def test_rates_are_the_ranges_totals_over_everything_accepted():
    report = report_of(TWO_DAYS)

    # 330/400 delivered, 100/400 opened, 36/400 bounced, 14/400 blocked.
    assert report.rates == pytest.approx({"delivered": 0.825, "opened": 0.25, "bounced": 0.09, "blocked": 0.035})
    assert report.totals == {
        "accepted": 400,
        "blocks": 14,
        "bounces": 36,
        "deferred": 1,
        "delivered": 330,
        "opens": 100,
        "spam": 3,
    }
    page = page_of(report)
    assert page.column("rates") == {"delivered": "82.5%", "opened": "25.0%", "bounced": "9.0%", "blocked": "3.5%"}
    assert {name: number(value) for name, value in page.column("totals").items()} == report.totals


def test_every_day_of_the_range_is_charted_and_a_day_without_stats_counts_zero():
    report = report_of(TWO_DAYS)

    assert [day for day, _ in report.days] == [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    assert report.days[1][1] == {}


def test_rows_outside_the_range_without_a_date_or_with_non_numbers_are_left_out():
    rows = [
        {"date": "2026-10-31", "accepted": 1_000, "delivered": 1_000},
        {"date": None, "accepted": 1_000},
        {"date": "not a day", "accepted": 1_000},
        {"date": "2026-11-02", "accepted": 10, "delivered": 5, "label": "x", "flag": True},
    ]

    assert report_of(rows).totals == {"accepted": 10, "delivered": 5}


def test_a_metric_the_api_did_not_send_has_no_rate_but_a_zero_one_has_zero():
    report = report_of([{"date": "2026-11-02", "accepted": 50, "delivered": 50, "blocks": 0}])

    assert report.rates == {"delivered": 1.0, "opened": None, "bounced": None, "blocked": 0.0}
    assert page_of(report).column("rates") == {
        "delivered": "100.0%",
        "opened": "n/a",
        "bounced": "n/a",
        "blocked": "0.0%",
    }


def test_a_range_without_data_gives_a_page_that_says_so():
    report = report_of([])

    assert not report.has_data
    assert report.rates == dict.fromkeys(("delivered", "opened", "bounced", "blocked"))
    page = page_of(report)
    words = " ".join(page.text)
    assert "No data" in words
    assert "2026-11-01 to 2026-11-03" in words
    assert "reasons" not in page.tables
    assert png_size(page.images[0]) == (1000, 700)


def test_failures_count_each_reason_per_status_and_each_recipients_domain():
    failed = [
        {"status": "BOUNCE", "description": "550 no such user", "to_mail": "a@Example.com, b@example.net"},
        {"status": "bounce", "description": "  550   no such user ", "to_mail": "c@example.com"},
        {"status": "BLOCKED", "description": "invalid sender domain", "to_mail": "d@example.net"},
        {"status": "SUPPRESSED", "description": "", "to_mail": "not-an-address"},
        {"status": "DELIVERED", "description": "Message is delivered.", "to_mail": "e@example.com"},
        {"status": "FAILED", "to_mail": ""},
    ]

    report = report_of([], failed)

    assert report.failures == {"BOUNCE": 2, "BLOCKED": 1, "FAILED": 1, "SUPPRESSED": 1}
    assert report.top_reasons == [
        ("BOUNCE", "550 no such user", 2),
        ("BLOCKED", "invalid sender domain", 1),
        ("FAILED", "(no reason given)", 1),
        ("SUPPRESSED", "(no reason given)", 1),
    ]
    assert report.top_domains == [("example.com", 2), ("example.net", 2), ("not-an-address", 1)]
    page = page_of(report)
    assert page.tables["reasons"] == [[s, r, str(n)] for s, r, n in report.top_reasons]
    assert page.tables["domains"] == [["example.com", "2"], ["example.net", "2"], ["not-an-address", "1"]]
    assert "No data" not in " ".join(page.text)


def test_top_keeps_the_most_frequent_first():
    failed = [{"status": "BOUNCE", "description": f"reason {n}", "to_mail": f"x@d{n}.example"} for n in range(5)]
    failed += [{"status": "BOUNCE", "description": "reason 3", "to_mail": "x@d3.example"}] * 4

    report = report_of([], failed, top=2)

    assert report.top_reasons == [("BOUNCE", "reason 3", 5), ("BOUNCE", "reason 0", 1)]
    assert report.top_domains == [("d3.example", 5), ("d0.example", 1)]


def test_the_page_is_self_contained_and_escapes_kaleyras_text():
    failed = [{"status": "BLOCKED", "description": "<script>alert(1)</script> & co", "to_mail": "<b>@x.example"}]
    report = report_of(TWO_DAYS, failed)

    html = render_html(report, main_chart(report))

    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "http://" not in html
    assert "https://" not in html
    page = read_page(html)
    assert page.tags.isdisjoint({"script", "link", "iframe"})
    assert len(page.images) == 3  # the main chart, reasons, domains
    for image in page.images:
        width, height = png_size(image)
        assert 600 <= width <= 2000
        assert 150 <= height <= 2000


def test_the_main_chart_is_a_png_of_sensible_size():
    assert png_size(main_chart(report_of(TWO_DAYS))) == (1000, 700)


def test_the_summary_is_small_and_json_safe():
    report = report_of(TWO_DAYS, [{"status": "BOUNCE", "description": "550", "to_mail": "a@x.example"}])

    summary = json.loads(json.dumps(report.summary()))

    assert summary["from_date"] == "2026-11-01"
    assert summary["to_date"] == "2026-11-03"
    assert summary["read_at"] == "2026-11-04T09:30:00+00:00"
    assert summary["rates"]["delivered"] == pytest.approx(0.825)
    assert summary["top_reasons"] == [{"status": "BOUNCE", "reason": "550", "count": 1}]
    assert summary["top_domains"] == [{"domain": "x.example", "count": 1}]
    assert len(json.dumps(summary)) < 2_000
