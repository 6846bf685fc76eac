"""The report's figures and page from hand-made rows: rates, reasons, domains, HTML and PNG."""

from __future__ import annotations

import calendar
import itertools
import json
from datetime import date, datetime, timezone

import pytest

from airflow_provider_kaleyra_email.report import (
    FailureTally,
    bar_figure,
    build_report,
    main_chart,
    main_figure,
    render_html,
)
from tests.reports import number, png_size, read_page

FIRST, LAST = date(2026, 11, 1), date(2026, 11, 3)
READ_AT = datetime(2026, 11, 4, 9, 30, tzinfo=timezone.utc)


def report_of(rows, failed=(), *, first=FIRST, last=LAST, top=10):
    tally = FailureTally()
    for row in failed:
        tally.add(row)
    return build_report(rows, tally, from_date=first, to_date=last, read_at=READ_AT, top=top)


def page_of(report):
    return read_page(render_html(report, main_chart(report)))


TWO_DAYS = [
    {"date": "2026-11-01", "accepted": 100, "delivered": 90, "opens": 40, "bounces": 6, "blocks": 2, "deferred": 1},
    {"date": "2026-11-03", "accepted": 300, "delivered": 240, "opens": 60, "bounces": 30, "blocks": 12, "spam": 3},
]


def test_rates_are_the_ranges_totals_and_the_open_rate_is_over_delivered():
    report = report_of(TWO_DAYS)

    # 330/400 delivered, 100/330 opened (the open rate), 100/400 opened of accepted, 36/400 bounced, 14/400 blocked.
    assert report.rates == pytest.approx(
        {"delivered": 0.825, "opened": 100 / 330, "opened_of_accepted": 0.25, "bounced": 0.09, "blocked": 0.035}
    )
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
    assert page.column("rates") == {
        "delivered": "82.5%",
        "opened": "30.3%",
        "opened_of_accepted": "25.0%",
        "bounced": "9.0%",
        "blocked": "3.5%",
    }
    assert page.column("rates", 0, 2) == {
        "delivered": "delivered ÷ accepted",
        "opened": "opens ÷ delivered",
        "opened_of_accepted": "opens ÷ accepted",
        "bounced": "bounces ÷ accepted",
        "blocked": "blocks ÷ accepted",
    }
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

    assert report.rates == {
        "delivered": 1.0,
        "opened": None,
        "opened_of_accepted": None,
        "bounced": None,
        "blocked": 0.0,
    }
    assert page_of(report).column("rates") == {
        "delivered": "100.0%",
        "opened": "n/a",
        "opened_of_accepted": "n/a",
        "bounced": "n/a",
        "blocked": "0.0%",
    }


def test_without_delivered_there_is_no_open_rate_but_opens_of_accepted_remain():
    report = report_of([{"date": "2026-11-02", "accepted": 50, "opens": 10}])

    assert report.rates["opened"] is None
    assert report.rates["opened_of_accepted"] == 0.2


def test_a_range_without_data_gives_a_page_that_says_so():
    report = report_of([])

    assert not report.has_data
    assert report.rates == dict.fromkeys(("delivered", "opened", "opened_of_accepted", "bounced", "blocked"))
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


def month_day_range(first, last):
    return [date.fromordinal(n) for n in range(first.toordinal(), last.toordinal() + 1)]


def day_axis(report):
    """The day axis as drawn: its limits (as dates), tick days and tick labels."""
    from matplotlib.dates import num2date

    axes = main_figure(report).axes[-1]
    low, high = (num2date(limit).date() for limit in axes.get_xlim())
    ticks = [num2date(tick).date() for tick in axes.get_xticks()]
    return low, high, ticks, [label.get_text() for label in axes.get_xticklabels()]


def test_the_day_axis_names_the_month_of_every_tick_and_stays_within_the_range():
    first, last = date(2026, 10, 28), date(2026, 11, 26)  # 30 days over two months
    rows = [{"date": day.isoformat(), "accepted": 10, "delivered": 9} for day in month_day_range(first, last)]

    low, high, ticks, labels = day_axis(report_of(rows, first=first, last=last))

    assert (low, high) == (date(2026, 10, 27), date(2026, 11, 26))  # half a day either side: the bars' edges
    assert ticks[-1] == last
    assert all(first <= tick <= last for tick in ticks)
    assert labels == [
        "30 Oct\n2026",
        "2 Nov",
        "5 Nov",
        "8 Nov",
        "11 Nov",
        "14 Nov",
        "17 Nov",
        "20 Nov",
        "23 Nov",
        "26 Nov",
    ]


def test_the_day_axis_shows_the_year_again_when_the_range_crosses_into_a_new_one():
    first, last = date(2026, 12, 28), date(2027, 1, 3)
    rows = [{"date": day.isoformat(), "accepted": 10} for day in month_day_range(first, last)]

    *_, ticks, labels = day_axis(report_of(rows, first=first, last=last))

    assert ticks == month_day_range(first, last)
    assert labels == ["28 Dec\n2026", "29 Dec", "30 Dec", "31 Dec", "1 Jan\n2027", "2 Jan", "3 Jan"]


def test_a_long_range_gets_at_most_ten_ticks_ending_on_its_last_day():
    first, last = date(2026, 1, 1), date(2026, 12, 31)
    rows = [{"date": day.isoformat(), "accepted": 10} for day in month_day_range(first, last)]

    *_, ticks, labels = day_axis(report_of(rows, first=first, last=last))

    assert len(ticks) <= 10
    assert ticks[-1] == last
    assert first <= ticks[0]
    assert len({b - a for a, b in itertools.pairwise(ticks)}) == 1  # evenly spaced
    assert all(label.split()[1] in calendar.month_abbr for label in labels)


def test_the_volume_bars_say_what_they_count_and_carry_their_values():
    volume = main_figure(report_of(TWO_DAYS)).axes[0]

    assert volume.get_ylabel() == "emails accepted per day"
    assert [text.get_text() for text in volume.texts] == ["100", "0", "300"]


def test_the_rates_legend_names_what_each_rate_divides():
    figure = main_figure(report_of(TWO_DAYS))

    legends = [[text.get_text() for text in axes.get_legend().get_texts()] for axes in figure.axes[1:]]

    assert legends == [
        [
            "delivered: delivered ÷ accepted\n82.5% overall",
            "opened: opens ÷ delivered\n30.3% overall",
            "opened of accepted: opens ÷ accepted\n25.0% overall",
        ],
        ["bounced: bounces ÷ accepted\n9.0% overall", "blocked: blocks ÷ accepted\n3.5% overall"],
    ]


def test_the_failure_bars_name_their_unit_and_carry_their_counts():
    axes = bar_figure(["BOUNCE: 550 no such user", "BLOCKED: spam"], [1_234, 5], "log rows").axes[0]

    assert axes.get_xlabel() == "log rows"
    assert [text.get_text() for text in axes.texts] == ["5", "1,234"]  # drawn bottom up: the largest on top
    assert [label.get_text() for label in axes.get_yticklabels()] == ["BLOCKED: spam", "BOUNCE: 550 no such user"]
