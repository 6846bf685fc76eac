"""
A deliverability report: summary stats and failed log rows in, figures, HTML and PNG out.

- A rate is one metric's total over the range divided by another's (``RATES``): delivered, bounced
  and blocked are shares of ``accepted``; opened, the open rate as email marketers mean it, is
  ``opens`` over ``delivered``, and opened_of_accepted is ``opens`` over ``accepted``. A metric the
  API never sent, or nothing to divide by, gives no rate (``None``, shown as "n/a"), never 0.
- A failure is a log row with a failed status (BOUNCE, BLOCKED, FAILED, SUPPRESSED), counted per
  (status, reason: its ``description``); every address in its ``to_mail`` (comma-separated) counts
  one failure for the address's domain.

No HTTP; matplotlib (the Agg canvas, no pyplot) is imported only to draw. The charts are embedded
in the HTML as ``data:`` URIs, so the page opens offline anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_kaleyra_email.delivery import DEFAULT_FAILED_STATUSES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

FAILURE_STATUSES = tuple(status.value for status in DEFAULT_FAILED_STATUSES)
#: Rate name -> (the summary stats metric it counts, the metric it is a share of).
RATES = {
    "delivered": ("delivered", "accepted"),
    "opened": ("opens", "delivered"),
    "opened_of_accepted": ("opens", "accepted"),
    "bounced": ("bounces", "accepted"),
    "blocked": ("blocks", "accepted"),
}
#: How each rate is drawn: the chart's business, not the figures'.
_COLORS = {
    "delivered": "#2e7d32",
    "opened": "#1565c0",
    "opened_of_accepted": "#90caf9",
    "bounced": "#ef6c00",
    "blocked": "#c62828",
}
NO_REASON = "(no reason given)"


@dataclass
class FailureTally:
    """Failed rows counted as they stream past: by status, by (status, reason), by domain."""

    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)

    def add(self, row: Mapping[str, Any]) -> None:
        status = str(row.get("status") or "").strip().upper()
        if status not in FAILURE_STATUSES:
            return
        self.statuses[status] += 1
        self.reasons[status, " ".join(str(row.get("description") or "").split()) or NO_REASON] += 1
        for address in str(row.get("to_mail") or "").split(","):
            if address := address.strip().lower():
                self.domains[address.rpartition("@")[2] or address] += 1


@dataclass(frozen=True)
class Report:
    """The figures of one report: the range, the totals and rates, and the failures."""

    from_date: date
    to_date: date
    timezone: str
    read_at: datetime
    days: list[tuple[date, dict[str, float]]]  # every day of the range, in order
    totals: dict[str, float]
    rates: dict[str, float | None]
    failures: dict[str, int]
    top_reasons: list[tuple[str, str, int]]
    top_domains: list[tuple[str, int]]

    @property
    def has_data(self) -> bool:
        return bool(self.totals.get("accepted")) or bool(self.failures)

    def summary(self) -> dict[str, Any]:
        """Return a small, JSON-safe digest for XCom and Asset events."""
        return {
            "from_date": self.from_date.isoformat(),
            "to_date": self.to_date.isoformat(),
            "timezone": self.timezone,
            "read_at": self.read_at.isoformat(),
            "totals": self.totals,
            "rates": self.rates,
            "failures": self.failures,
            "top_reasons": [{"status": s, "reason": r, "count": n} for s, r, n in self.top_reasons],
            "top_domains": [{"domain": d, "count": n} for d, n in self.top_domains],
        }


def build_report(
    summary_rows: Iterable[Mapping[str, Any]],
    tally: FailureTally,
    *,
    from_date: date,
    to_date: date,
    read_at: datetime,
    top: int = 10,
) -> Report:
    """Return the figures of ``from_date..to_date`` (inclusive, days of ``read_at``'s time zone); no stats count 0."""
    days: dict[date, dict[str, float]] = {from_date + timedelta(n): {} for n in range((to_date - from_date).days + 1)}
    totals: dict[str, float] = {}
    for row in summary_rows:
        if (day := _day(row.get("date"))) not in days:  # nor is None, a row without a date
            continue
        for name, value in row.items():
            if name != "date" and isinstance(value, int | float) and not isinstance(value, bool):
                days[day][name] = days[day].get(name, 0) + value
                totals[name] = totals.get(name, 0) + value
    ranked = sorted(tally.reasons.items(), key=lambda item: (-item[1], item[0]))
    return Report(
        from_date=from_date,
        to_date=to_date,
        timezone=str(read_at.tzinfo),
        read_at=read_at,
        days=list(days.items()),
        totals=dict(sorted(totals.items())),
        rates={name: _rate(totals, name) for name in RATES},
        failures={status: tally.statuses[status] for status in FAILURE_STATUSES if tally.statuses[status]},
        top_reasons=[(status, reason, count) for (status, reason), count in ranked[:top]],
        top_domains=sorted(tally.domains.items(), key=lambda item: (-item[1], item[0]))[:top],
    )


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _rate(metrics: Mapping[str, float], name: str) -> float | None:
    metric, of = RATES[name]
    whole = metrics.get(of) or 0
    return metrics[metric] / whole if metric in metrics and whole > 0 else None


def percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def formula(name: str) -> str:
    """Return what a rate divides, e.g. ``opens ÷ delivered``."""
    return " ÷ ".join(RATES[name])


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def main_chart(report: Report) -> bytes:
    """Return the main chart as a 1000 x 700 PNG."""
    return _png(main_figure(report))


def main_figure(report: Report) -> Any:
    """Draw daily volume, then the delivered/opened and the bounced/blocked rates per day, on one day axis."""
    from matplotlib.dates import date2num

    figure = _figure(10, 7)
    title = f"Email deliverability {report.from_date} to {report.to_date} ({report.timezone})"
    if not report.has_data:
        figure.text(0.5, 0.5, f"No email data\n{title}", ha="center", va="center", fontsize=16, color="#555")
        return figure
    volume, high, low = figure.subplots(3, 1, sharex=True, height_ratios=[1.2, 1, 1])
    days = [day for day, _ in report.days]
    bars = volume.bar(days, [metrics.get("accepted", 0) for _, metrics in report.days], color="#90a4ae")
    if len(days) <= 31:
        volume.bar_label(bars, labels=[_compact(bar.get_height()) for bar in bars], fontsize=7, padding=1)
    volume.margins(y=0.12)
    volume.set_ylabel("emails accepted per day")
    volume.set_title(title, loc="left")
    _plot_rates(high, report, ("delivered", "opened", "opened_of_accepted"))
    _plot_rates(low, report, ("bounced", "blocked"))
    low.set_xlim(date2num(report.from_date) - 0.6, date2num(report.to_date) + 0.6)  # type: ignore[no-untyped-call]
    ticks = day_ticks(days)
    low.set_xticks(ticks, labels=_day_labels(ticks))
    return figure


def _plot_rates(axes: Any, report: Report, names: Sequence[str]) -> None:
    from matplotlib.ticker import PercentFormatter

    days = [day for day, _ in report.days]
    for name in names:
        if report.rates[name] is not None:
            values = [math.nan if (rate := _rate(metrics, name)) is None else rate for _, metrics in report.days]
            label = f"{name.replace('_', ' ')}: {formula(name)}\n{percent(report.rates[name])} overall"
            style = "--" if name == "opened_of_accepted" else "-"
            axes.plot(days, values, style, marker="o", markersize=3, color=_COLORS[name], label=label)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize="small", frameon=False, labelspacing=0.8)


def day_ticks(days: Sequence[date], most: int = 10) -> list[date]:
    """Return at most ``most`` evenly spaced days of ``days``, always its last (the newest)."""
    step = math.ceil(len(days) / most)
    return list(days[::-1][::step][::-1])


def _day_labels(days: Sequence[date]) -> list[str]:
    """Label days ``5 Nov``; the first, and the first of each new year, with the year below."""
    years = [None, *(day.year for day in days)]
    return [f"{day.day} {day:%b}" + (f"\n{day.year}" if day.year != years[n] else "") for n, day in enumerate(days)]


def _compact(count: float) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:.0f}"


def bar_figure(labels: list[str], counts: list[int], unit: str) -> Any:
    """Draw horizontal bars of ``unit``, the largest on top, each with its count; long labels shortened."""
    figure = _figure(10, 1.4 + 0.4 * len(labels))
    axes = figure.subplots()
    shortened = [textwrap.shorten(label, 60, placeholder=" …") for label in labels]
    bars = axes.barh(shortened[::-1], counts[::-1], color="#c62828")
    axes.bar_label(bars, labels=[f"{count:,}" for count in counts[::-1]], fontsize="small", padding=3)
    axes.margins(x=0.08)
    axes.set_xlabel(unit)
    axes.tick_params(axis="y", labelsize="small")
    axes.grid(axis="x", alpha=0.3)
    return figure


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1040px;color:#222}img{max-width:100%}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
td.n,#rates td:nth-child(2){text-align:right;font-variant-numeric:tabular-nums}.meta,.empty{color:#555}
"""


def render_html(report: Report, main_png: bytes) -> str:
    """Return one self-contained page: no script, no link, charts as ``data:`` URIs."""
    title = f"Email deliverability {report.from_date} to {report.to_date}"
    span = (report.to_date - report.from_date).days + 1
    read_at = report.read_at.strftime("%Y-%m-%d %H:%M:%S %Z")
    parts = [
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Email deliverability</h1><p class='meta'>{report.from_date} to {report.to_date} ({span} days, "
        f"time zone {html.escape(report.timezone)}). Data read {html.escape(read_at)}.</p>",
    ]
    if not report.has_data:
        parts.append(
            "<p class='empty' id='no-data'>No data: no email was accepted and no failed delivery was logged.</p>"
        )
    rates = [(name, percent(report.rates[name]), formula(name)) for name in RATES]
    parts += ["<h2>Rates</h2>", _table("rates", ("rate", "value", "what it divides"), rates)]
    parts += [_img(main_png, "Daily volume and rates"), "<h2>Totals</h2>"]
    failures = [(f"{status} log rows", count) for status, count in report.failures.items()]
    parts.append(_table("totals", ("metric", "total"), [*report.totals.items(), *failures]))
    sections = (
        ("reasons", "Top failure reasons", ("status", "reason", "log rows"), report.top_reasons),
        ("domains", "Recipient domains with the most failures", ("domain", "failed recipients"), report.top_domains),
    )
    for key, heading, header, rows in sections:
        parts.append(f"<h2>{heading}</h2>")
        if rows:
            labels, counts = [": ".join(map(str, row[:-1])) for row in rows], [row[-1] for row in rows]
            chart = _png(bar_figure(labels, counts, header[-1]))
            parts += [_img(chart, heading), _table(key, header, rows)]
        else:
            parts.append(f"<p class='empty' id='no-{key}'>None in this range.</p>")
    return "\n".join([*parts, "</body></html>\n"])


def _table(key: str, header: Iterable[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = [f"<table id='{key}'><tr>{''.join(f'<th>{name}</th>' for name in header)}</tr>"]
    for row in rows:
        cells = (
            f"<td class='n'>{c:,}</td>" if isinstance(c, int | float) else f"<td>{html.escape(str(c))}</td>"
            for c in row
        )
        lines.append(f"<tr>{''.join(cells)}</tr>")
    return "\n".join([*lines, "</table>"])


def _img(png: bytes, alt: str) -> str:
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"
