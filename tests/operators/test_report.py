"""The deliverability report operator against the emulator: its page shows the emulator's own figures."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException, ObjectStoragePath

from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailDeliverabilityReportOperator
from tests.reports import number, png_size, read_page

pytestmark = pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 20), days=14, rows_per_day=400)

DAILY_NOV_2 = {
    "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
    "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
}
FAILED = ("BOUNCE", "BLOCKED", "FAILED", "SUPPRESSED")


def expected_figures(dataset, first: date, last: date) -> dict:
    """Rates, reasons and domains worked out from the emulator's own data, not from the report."""
    totals: Counter = Counter()
    for day in dataset.summary_days(first, last):
        for entry in day["stats"]:
            totals.update(entry["metrics"])
    failed = [
        row
        for status in FAILED
        for row in dataset.expected_logs(first, last, search=[status])
        if row["status"] == status
    ]
    return {
        "rates": {
            name: totals[metric] / totals[of]
            for name, metric, of in (
                ("delivered", "delivered", "accepted"),
                ("opened", "opens", "delivered"),
                ("opened_of_accepted", "opens", "accepted"),
                ("bounced", "bounces", "accepted"),
                ("blocked", "blocks", "accepted"),
            )
        },
        "totals": dict(totals),
        "statuses": Counter(row["status"] for row in failed),
        "reasons": Counter((row["status"], row["description"]) for row in failed),
        "domains": Counter(a.strip().split("@")[1] for row in failed for a in row["to_mail"].split(",")),
    }


def report_operator(tmp_path, **kwargs) -> KaleyraEmailDeliverabilityReportOperator:
    kwargs.setdefault("output_path", f"file://{tmp_path}/reports/deliverability-{{to_date}}.html")
    return KaleyraEmailDeliverabilityReportOperator(task_id="report", **kwargs)


def requested_ranges(emulator) -> set[tuple[str, str, tuple[str, ...]]]:
    return {
        (r.query["start_date"][0], r.query["end_date"][0], tuple(r.query.get("search", ()))) for r in emulator.requests
    }


def test_the_page_shows_the_rates_reasons_and_domains_of_the_last_30_days(
    tmp_path, kaleyra_email_connection, kaleyra_email_emulator
):
    summary = report_operator(tmp_path).execute(DAILY_NOV_2)

    first, last = date(2026, 10, 4), date(2026, 11, 2)
    assert requested_ranges(kaleyra_email_emulator) == {
        ("2026-10-04", "2026-11-02", ()),
        *(("2026-10-04", "2026-11-02", (status,)) for status in FAILED),
    }
    expected = expected_figures(kaleyra_email_emulator.dataset, first, last)
    assert expected["totals"]["accepted"] == 14 * 400
    page = read_page((tmp_path / "reports" / "deliverability-2026-11-02.html").read_text())
    assert page.column("rates") == {name: f"{rate:.1%}" for name, rate in expected["rates"].items()}
    totals = page.column("totals")
    assert {name: number(totals[name]) for name in expected["totals"]} == expected["totals"]
    assert {status: number(totals[f"{status} log rows"]) for status in FAILED} == expected["statuses"]
    assert {(s, r): number(n) for s, r, n in page.tables["reasons"]} == expected["reasons"]
    assert {d: number(n) for d, n in page.tables["domains"]} == expected["domains"]
    counts = [number(n) for *_, n in page.tables["reasons"]]
    assert counts == sorted(counts, reverse=True)
    words = " ".join(page.text)
    assert "2026-10-04 to 2026-11-02 (30 days, time zone UTC)" in words
    assert "No data" not in words

    assert summary["path"] == f"file://{tmp_path}/reports/deliverability-2026-11-02.html"
    assert summary["png_path"] == f"file://{tmp_path}/reports/deliverability-2026-11-02.png"
    assert (summary["from_date"], summary["to_date"], summary["complete"]) == ("2026-10-04", "2026-11-02", True)
    assert summary["rates"] == pytest.approx(expected["rates"])
    assert summary["failures"] == expected["statuses"]
    assert {(r["status"], r["reason"]): r["count"] for r in summary["top_reasons"]} == expected["reasons"]


def test_the_png_beside_the_page_is_the_main_chart_at_a_sensible_size(
    tmp_path, kaleyra_email_connection, kaleyra_email_emulator
):
    report_operator(tmp_path).execute(DAILY_NOV_2)

    png = (tmp_path / "reports" / "deliverability-2026-11-02.png").read_bytes()
    width, height = png_size(png)
    assert (width, height) == (1000, 700)
    assert 10_000 < len(png) < 1_000_000
    page = read_page((tmp_path / "reports" / "deliverability-2026-11-02.html").read_text())
    assert page.images[0] == png
    assert all(png_size(image)[0] >= 600 for image in page.images)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "deliverability-2026-11-02.html",
        "deliverability-2026-11-02.png",
    ]


def test_an_account_time_zone_picks_the_days(tmp_path, kaleyra_email_emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timezone="Asia/Kolkata")
    )
    # A UTC-midnight schedule on a Kolkata account still reports up to the one day it covers.
    summary = report_operator(tmp_path, days=7).execute(DAILY_NOV_2)

    assert (summary["from_date"], summary["to_date"]) == ("2026-10-27", "2026-11-02")
    assert summary["timezone"] == "Asia/Kolkata"
    assert summary["read_at"].endswith("+05:30")
    assert {(start, end) for start, end, _ in requested_ranges(kaleyra_email_emulator)} == {
        ("2026-10-27", "2026-11-02")
    }


def test_explicit_dates_win_over_the_interval_and_name_the_object(
    tmp_path, kaleyra_email_connection, kaleyra_email_emulator
):
    operator = report_operator(
        tmp_path,
        from_date="2026-10-25",
        to_date="2026-10-26",
        output_path=f"file://{tmp_path}/{{from_date}}_{{to_date}}.html",
    )

    summary = operator.execute(DAILY_NOV_2)

    page = read_page((tmp_path / "2026-10-25_2026-10-26.html").read_text())
    expected = expected_figures(kaleyra_email_emulator.dataset, date(2026, 10, 25), date(2026, 10, 26))
    assert page.column("rates") == {name: f"{rate:.1%}" for name, rate in expected["rates"].items()}
    assert summary["totals"]["accepted"] == 800


def test_a_range_without_data_gives_a_report_that_says_so(tmp_path, kaleyra_email_connection, kaleyra_email_emulator):
    summary = report_operator(tmp_path, from_date="2025-01-01", to_date="2025-01-31").execute({})

    page = read_page((tmp_path / "reports" / "deliverability-2025-01-31.html").read_text())
    assert "No data" in " ".join(page.text)
    assert page.column("rates") == dict.fromkeys(
        ("delivered", "opened", "opened_of_accepted", "bounced", "blocked"), "n/a"
    )
    assert summary["rates"] == dict.fromkeys(("delivered", "opened", "opened_of_accepted", "bounced", "blocked"))
    assert (summary["totals"], summary["failures"], summary["top_reasons"]) == ({}, {}, [])
    assert png_size((tmp_path / "reports" / "deliverability-2025-01-31.png").read_bytes()) == (1000, 700)


def test_without_matplotlib_it_fails_before_any_request(
    tmp_path, kaleyra_email_connection, kaleyra_email_emulator, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError

    with pytest.raises(
        AirflowOptionalProviderFeatureException, match=r"pip install 'airflow-provider-kaleyra-email\[report\]'"
    ):
        report_operator(tmp_path).execute(DAILY_NOV_2)

    assert list(kaleyra_email_emulator.requests) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("output_path", "message"),
    [
        ("/tmp/report.html", "is not a URL"),
        ("file:///tmp/kaleyra/report.png", "must name an .html object"),
        ("file:///tmp/kaleyra/", "names a folder"),
        ("nosuchfs://bucket/report.html", "no file system"),
        ("", "must be a URL string"),
    ],
)
def test_a_bad_output_path_fails_before_any_request(
    kaleyra_email_connection, kaleyra_email_emulator, output_path, message
):
    operator = KaleyraEmailDeliverabilityReportOperator(task_id="report", output_path=output_path)

    with pytest.raises(ValueError, match=message):
        operator.execute(DAILY_NOV_2)

    assert list(kaleyra_email_emulator.requests) == []


def test_bad_day_arguments_fail_before_any_request(tmp_path, kaleyra_email_connection, kaleyra_email_emulator):
    with pytest.raises(ValueError, match="from_date"):
        report_operator(tmp_path, from_date="2026-11-05").execute(DAILY_NOV_2)
    with pytest.raises(ValueError, match="days=0"):
        report_operator(tmp_path, days=0)
    assert list(kaleyra_email_emulator.requests) == []


def test_a_failed_write_removes_its_temporary_object_and_leaves_the_old_one_whole(
    tmp_path, kaleyra_email_connection, kaleyra_email_emulator, monkeypatch
):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "deliverability-2026-11-02.png").write_bytes(b"yesterday's chart")
    written = []

    def full_disk(self, target):
        written.append(Path(urlsplit(str(self)).path).read_bytes())
        raise OSError("No space left on device")

    monkeypatch.setattr(ObjectStoragePath, "replace", full_disk)

    with pytest.raises(OSError, match="No space left"):
        report_operator(tmp_path).execute(DAILY_NOV_2)

    png_size(written[0])  # the new chart was complete in its temporary object
    assert [p.name for p in reports.iterdir()] == ["deliverability-2026-11-02.png"]
    assert (reports / "deliverability-2026-11-02.png").read_bytes() == b"yesterday's chart"
