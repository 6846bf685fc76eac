"""The deliverability report operator; re-exported by :mod:`airflow_provider_kaleyra_email.operators.kaleyra_email`."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowOptionalProviderFeatureException,
    BaseOperator,
    ObjectStoragePath,
)

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.intervals import days_for_run
from airflow_provider_kaleyra_email.output import attach_to_outlets, object_path, write_bytes
from airflow_provider_kaleyra_email.report import FAILURE_STATUSES, FailureTally, build_report, main_chart, render_html

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import date

    from airflow.sdk import Context

_HTML_SUFFIXES = (".html", ".htm")


class KaleyraEmailDeliverabilityReportOperator(BaseOperator):
    """
    Write a deliverability report of a date range: one self-contained HTML page, and a PNG chart beside it.

    It reads the range's summary stats and its failed log rows (one listing per failure status:
    BOUNCE, BLOCKED, FAILED, SUPPRESSED) and writes, each atomically, the HTML page (rates, totals,
    top failure reasons, recipient domains with the most failures; charts embedded, so it opens
    offline) and ``<name>.png``, the main chart, for mail and chat. It returns a small summary
    (paths, range, totals, rates, top reasons and domains), also put on each ``Asset`` outlet's
    event. Needs matplotlib: ``pip install 'airflow-provider-kaleyra-email[report]'``.

    :param output_path: URL of the HTML object (templated), e.g. ``s3://bucket/reports/{to_date}.html``;
        ``{from_date}``/``{to_date}`` become the range's first and last day.
    :param output_conn_id: connection for the object store (e.g. an ``aws`` connection).
    :param from_date: first day (inclusive, account time zone); default: ``days - 1`` days before ``to_date``.
    :param to_date: last day (inclusive); default: the run's last day (see ``intervals``).
    :param days: length of the default range, 1 to 366 (default 30).
    :param top: how many reasons and domains to list, 1 to 100 (default 10).
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    """

    template_fields: Sequence[str] = ("output_path", "output_conn_id", "from_date", "to_date", "kaleyra_email_conn_id")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        output_path: str | ObjectStoragePath,
        output_conn_id: str | None = None,
        from_date: str | date | None = None,
        to_date: str | date | None = None,
        days: int = 30,
        top: int = 10,
        kaleyra_email_conn_id: str = KaleyraEmailHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.from_date = from_date
        self.to_date = to_date
        self.days = validation.int_in_range(days, parameter="days", low=1, high=366)
        self.top = validation.int_in_range(top, parameter="top", low=1, high=100)
        self.kaleyra_email_conn_id = kaleyra_email_conn_id

    @cached_property
    def hook(self) -> KaleyraEmailHook:
        return KaleyraEmailHook(self.kaleyra_email_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        _require_matplotlib()  # before the dates, the destination and any request
        try:
            from_date, to_date = self._date_range(context)
            html_path, png_path = self._destinations(from_date, to_date)
            tz = self.hook.timezone
            read_at = datetime.now(tz)
            stats = list(self.hook.iter_summary_stats(from_date, to_date))
            tally = FailureTally()
            for status in FAILURE_STATUSES:
                # A term also matches from, to and template name: keep the rows of this status only.
                # Statuses move while a recent range is read, so the listing may drift: a report tolerates it.
                for row in self.hook.iter_logs(from_date, to_date, search=status, allow_count_mismatch=True):
                    if str(row.get("status") or "").upper() == status:
                        tally.add(row)
        finally:
            self.hook.close()
        report = build_report(
            stats, tally, from_date=from_date, to_date=to_date, timezone=str(tz), read_at=read_at, top=self.top
        )
        png = main_chart(report)
        write_bytes(png_path, png)
        write_bytes(html_path, render_html(report, png).encode())
        summary = {"path": str(html_path), "png_path": str(png_path), **report.summary()}
        self.log.info("Wrote the deliverability report %s..%s to %s: %s", from_date, to_date, html_path, report.rates)
        attach_to_outlets(self.outlets, context, summary)
        return summary

    def _date_range(self, context: Context) -> tuple[date, date]:
        tz = self.hook.timezone
        start, end = validation.date_range(self.from_date, self.to_date, tz=tz)
        if end is None:
            _, end = days_for_run(context, tz)
        start = start or end - timedelta(days=self.days - 1)
        if start > end:
            raise ValueError(f"from_date={start.isoformat()!r} is after the report's last day, {end.isoformat()}.")
        return start, end

    def _destinations(self, from_date: date, to_date: date) -> tuple[ObjectStoragePath, ObjectStoragePath]:
        """``output_path`` and the PNG beside it, built at run time, never at parse time."""
        html_path = object_path(
            self.output_path, conn_id=self.output_conn_id, from_date=from_date, to_date=to_date, example="report.html"
        )
        name = html_path.name
        if not name.lower().endswith(_HTML_SUFFIXES):
            raise ValueError(
                f"output_path={self.output_path!r} must name an .html object; the PNG is written beside it."
            )
        return html_path, html_path.parent / f"{name.rsplit('.', 1)[0]}.png"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise AirflowOptionalProviderFeatureException(
            "KaleyraEmailDeliverabilityReportOperator draws its charts with matplotlib, which is not "
            "installed: pip install 'airflow-provider-kaleyra-email[report]'."
        ) from None
