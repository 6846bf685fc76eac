"""Operators for the Kaleyra Email API: export logs and summary stats, report on deliverability, send an email."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowOptionalProviderFeatureException,
    AirflowSkipException,
    Asset,
    BaseOperator,
)

from airflow_provider_kaleyra_email import api_facts, intervals, lineage, output, validation
from airflow_provider_kaleyra_email.delivery import MessageStatus
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.report import FAILURE_STATUSES, FailureTally, build_report, main_chart, render_html

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from datetime import date, tzinfo

    from airflow.providers.common.compat.sdk import ObjectStoragePath
    from airflow.sdk import Context

    from airflow_provider_kaleyra_email.hooks.kaleyra_email import Pages

#: The send operator's arguments, templated, and passed on to ``KaleyraEmailHook.send_email``.
_MAIL_FIELDS = ("from_email", "to", "subject", "html_body", "text_body", "message_type")
_SUFFIXES = {"jsonl": (".jsonl", ".ndjson", ".json"), "csv": (".csv",), "parquet": (".parquet", ".pq")}


class _KaleyraEmailOperator(BaseOperator):
    """An operator on one Kaleyra Email connection, through a hook built on first use."""

    ui_color = "#e8f1fb"
    page_size: int | None = None

    def __init__(self, *, kaleyra_email_conn_id: str = KaleyraEmailHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kaleyra_email_conn_id = kaleyra_email_conn_id

    @cached_property
    def hook(self) -> KaleyraEmailHook:
        return KaleyraEmailHook(self.kaleyra_email_conn_id, page_size=self.page_size)


class _KaleyraEmailExportOperator(_KaleyraEmailOperator):
    """An operator that reads days of the account and writes what it read: which days, where, and the lineage."""

    template_fields: Sequence[str] = ("from_date", "to_date", "output_path", "output_conn_id", "kaleyra_email_conn_id")
    #: The API endpoints the operator reads, by account SID, for lineage.
    endpoints_read: ClassVar[tuple[Callable[[str], str], ...]]

    def __init__(
        self,
        *,
        from_date: str | date | None = None,
        to_date: str | date | None = None,
        output_path: str | ObjectStoragePath | None = None,
        output_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.from_date = from_date
        self.to_date = to_date
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self._written: list[output.Written] = []  # for lineage, once written
        self._temporary: ObjectStoragePath | None = None  # the hidden object being written
        self._killed = False

    def on_kill(self) -> None:
        """Remove the hidden temporary object being written; Airflow 3 lets the task run on, so stop reading too."""
        self._killed = True
        if self._temporary is not None:
            output.remove_quietly(self._temporary)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Return what was read and written, for OpenLineage (which asks this of a failed run too)."""
        try:
            config = self.hook.config
        except (ValueError, AirflowException):  # a connection the task could not use either
            read = []
        else:
            read = [config.base_url + path(config.sid) for path in self.endpoints_read]
        return lineage.operator_lineage(read, self._written)

    def get_openlineage_facets_on_start(self) -> Any:
        """Return the endpoints about to be read, for OpenLineage's start event."""
        return self.get_openlineage_facets_on_complete(None)

    def _days(self, context: Context, tz: tzinfo, first: date | None, last: date | None) -> tuple[Any, Any]:
        """Return the days to read: ``first``..``last`` where given, this operator's defaults where not."""
        raise NotImplementedError

    def _start(self, context: Context) -> tuple[Any, Any, bool]:  # the report's days are never open
        """Return the days to read and whether every one is over in the account's time zone; warn when one is not."""
        self._written = []
        tz = self.hook.timezone
        first, last = self._days(
            context, tz, *validation.date_range(_given(self.from_date), _given(self.to_date), tz=tz)
        )
        today = intervals.today(tz)
        complete = last is not None and last < today
        if not complete:
            self.log.warning(
                "to_date=%s reaches into %s, which is not over yet in the account's time zone (%s): the data holds "
                "it as far as it has gone, and the summary says complete: false. Export it again once the day is over.",
                last or "(open)",
                today,
                tz,
            )
        self.log.info("This run reads %s..%s in the account's time zone (%s).", first or "…", last or "…", tz)
        return first, last, complete

    def _object(self, first: date | None, last: date | None, example: str) -> ObjectStoragePath:
        return output.object_path(
            self.output_path, conn_id=self.output_conn_id, from_date=first, to_date=last, example=example
        )

    def _rows(self, pages: Pages) -> Iterator[dict[str, Any]]:
        with contextlib.closing(pages):
            for page in pages:
                if self._killed:
                    raise AirflowException(f"{type(self).__name__} was killed mid-write; output_path is unchanged.")
                yield from page

    def _finish(self, context: Context, written: list[output.Written], summary: dict[str, Any]) -> dict[str, Any]:
        """Keep what was written for lineage; return the summary, put on each ``Asset`` outlet's event too."""
        self._written = written
        outlet_events = context.get("outlet_events")
        for outlet in self.outlets:
            if isinstance(outlet, Asset) and outlet_events is not None:
                outlet_events[outlet].extra.update(summary)
        return summary


class _KaleyraEmailFetchOperator(_KaleyraEmailExportOperator):
    """What the two fetch operators share: which days, and where the rows go."""

    #: The CSV and Parquet columns before ``extra``, with their Parquet types.
    known_fields: ClassVar[Mapping[str, str]]
    row_noun: ClassVar[str]  # singular

    def __init__(
        self,
        *,
        output_format: str = "jsonl",
        max_xcom_rows: int = 1_000,  # 1,000 log rows are about 500 KB of JSON
        page_size: int | None = None,
        allow_count_mismatch: bool = False,
        days_back: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.days_back = validation.int_in_range(days_back, parameter="days_back", low=0, high=366)
        self.output_format = output.OutputFormat.parse(output_format)
        self.max_xcom_rows = validation.int_in_range(max_xcom_rows, parameter="max_xcom_rows", low=0, high=10**6)
        self.page_size = None if page_size is None else validation.page_size(page_size)
        self.allow_count_mismatch = validation.boolean(allow_count_mismatch, parameter="allow_count_mismatch")

    def execute(self, context: Context) -> Any:
        # Everything is checked before the first request: dates, destination, format support.
        first, last, complete = self._start(context)
        destination = self._destination(first, last)
        if destination is not None and self.output_format is output.OutputFormat.PARQUET:
            output.require_parquet_support()
        started = time.monotonic()
        pages = self.fetch(first, last)
        try:
            if destination is None:
                return self._rows_for_xcom(pages, first, last)
            self._temporary = output.temporary_for(destination)
            rows = self._rows(pages)
            written = output.write_rows(
                rows, destination, self.output_format, self.known_fields, temporary=self._temporary
            )
        finally:
            pages.close()
            self._temporary = None
            self.hook.close()
        summary = {
            "path": written.url,
            "format": self.output_format.value,
            "rows": written.rows,
            "bytes": written.bytes,
            "from_date": first.isoformat() if first else None,
            "to_date": last.isoformat() if last else None,
            "pages": pages.listing.pages,
            "complete": complete,
        }
        self.log.info(
            "Wrote %s in %.1f s: %s", _count(written.rows, self.row_noun), time.monotonic() - started, summary
        )
        if written.misfits:
            counts = ", ".join(
                f"{_count(count, 'value')} of {name} did not fit {self.known_fields[name]}"
                for name, count in written.misfits.items()
            )
            verb = "is" if sum(written.misfits.values()) == 1 else "are"
            self.log.warning("%s and %s kept in the extra column (the typed column is null there).", counts, verb)
        return self._finish(context, [written], summary)

    def fetch(self, from_date: date | None, to_date: date | None) -> Pages:
        """Return the rows to export, in batches; arguments are checked now, requests happen on iteration."""
        raise NotImplementedError

    def _days(self, context: Context, tz: tzinfo, first: date | None, last: date | None) -> tuple[Any, Any]:
        if first is None and last is None:
            first, last = intervals.days_for_run(context, tz)
            if first > last:
                raise AirflowSkipException(
                    f"No day of the account's time zone ({tz}) ended within this run's data interval; "
                    f"{last + intervals.ONE_DAY} is exported by the run whose interval holds its end."
                )
        back = self.days_back * intervals.ONE_DAY
        return first and first - back, last and last - back

    def _destination(self, first: date | None, last: date | None) -> ObjectStoragePath | None:
        """Return ``output_path`` as an object path, or ``None`` to return rows through XCom."""
        if _given(self.output_path) is None:
            return None
        suffixes = _SUFFIXES[self.output_format.value]
        path = self._object(first, last, f"{{from_date}}{suffixes[0]}")
        if not path.name.lower().endswith(suffixes):
            self.log.warning("output_path %s does not end like a %s file.", path, self.output_format.value)
        return path

    def _rows_for_xcom(self, pages: Pages, first: date | None, last: date | None) -> list[dict[str, Any]]:
        kept: list[dict[str, Any]] = []
        for page in pages:
            total = pages.listing.total
            if len(kept) + len(page) > self.max_xcom_rows or (total or 0) > self.max_xcom_rows:
                reported = f" (the API reports {total:,})" if total is not None else ""
                raise AirflowFailException(
                    f"{type(self).__name__}: more than max_xcom_rows={self.max_xcom_rows:,} {self.row_noun}s for "
                    f"{first or '…'}..{last or '…'}{reported}. XCom lives in the metadata database and is "
                    "for small results: set output_path (e.g. 's3://<bucket>/kaleyra/{from_date}.jsonl') to stream "
                    "the rows to object storage, or raise max_xcom_rows."
                )
            kept.extend(page)
        return kept


class KaleyraEmailFetchLogsOperator(_KaleyraEmailFetchOperator):
    """
    Export the email logs of a date range: every row once, to XCom or, streamed and atomic, to one object.

    :param from_date: first day (inclusive, account time zone); default: the run's days.
    :param to_date: last day (inclusive); default: the run's days.
    :param days_back: export the days (the run's, or ``from_date``..``to_date``) moved this many days earlier.
    :param to_mail: only mail to this recipient.
    :param message_id: only this message.
    :param search: a term, or a list of terms that must all match (status, from, to, template name).
    :param output_path: URL of the object to write, ``{from_date}``/``{to_date}`` filled in; without it, XCom.
    :param output_conn_id: connection for the object store.
    :param output_format: ``jsonl`` (default), ``csv`` or ``parquet`` (needs the ``parquet`` extra).
    :param max_xcom_rows: most rows returned through XCom.
    :param page_size: rows per request, 1 to 100 (default: the connection's).
    :param allow_count_mismatch: warn instead of failing when the rows listed do not add up to the API's ``total``.
    :param kaleyra_email_conn_id: the Kaleyra Email connection.

    See ``docs/operators.md`` and, for the counts, ``docs/reliability.md``.
    """

    template_fields: Sequence[str] = (*_KaleyraEmailFetchOperator.template_fields, "to_mail", "message_id", "search")
    known_fields = output.LOG_FIELDS
    row_noun = "log row"
    endpoints_read = (api_facts.logs_path,)

    def __init__(
        self,
        *,
        to_mail: str | None = None,
        message_id: str | None = None,
        search: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.to_mail = to_mail
        self.message_id = message_id
        self.search = search

    def fetch(self, from_date: date | None, to_date: date | None) -> Pages:
        terms = validation.search_terms(self.search)
        for term, status in validation.status_typos(terms, MessageStatus.__members__).items():
            self.log.warning(
                "search term %r looks like a status but is none (did you mean %r?); the statuses are %s. A term "
                "also matches from, to and template name, so it is searched for as it is, and may match no row.",
                term,
                status,
                ", ".join(MessageStatus.__members__),
            )
        return self.hook.iter_log_pages(
            from_date,
            to_date,
            to_mail=self.to_mail or None,
            message_id=self.message_id or None,
            search=self.search,
            allow_count_mismatch=self.allow_count_mismatch,
        )


class KaleyraEmailFetchSummaryStatsOperator(_KaleyraEmailFetchOperator):
    """
    Export the daily summary stats of a date range: one flat row per day with every metric.

    :param from_date: first day (inclusive, account time zone); default: the run's days.
    :param to_date: last day (inclusive); default: the run's days.
    :param days_back: export the days (the run's, or ``from_date``..``to_date``) moved this many days earlier.
    :param output_path: URL of the object to write, ``{from_date}``/``{to_date}`` filled in; without it, XCom.
    :param output_conn_id: connection for the object store.
    :param output_format: ``jsonl`` (default), ``csv`` or ``parquet`` (needs the ``parquet`` extra).
    :param max_xcom_rows: most days returned through XCom.
    :param page_size: days per request, 1 to 100 (default: the connection's).
    :param allow_count_mismatch: warn instead of failing when a page repeats an earlier one.
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    """

    known_fields = output.SUMMARY_FIELDS
    row_noun = "day"
    endpoints_read = (api_facts.summary_stats_path,)

    def fetch(self, from_date: date | None, to_date: date | None) -> Pages:
        return self.hook.iter_summary_stats_pages(from_date, to_date, allow_count_mismatch=self.allow_count_mismatch)


class KaleyraEmailDeliverabilityReportOperator(_KaleyraEmailExportOperator):
    """
    Write a deliverability report of a date range: one self-contained HTML page, and its main chart as a PNG beside it.

    Needs matplotlib: ``pip install 'airflow-provider-kaleyra-email[report]'``. See ``docs/operators.md``.

    :param output_path: URL of the HTML object; ``{from_date}``/``{to_date}`` become the range's first and last day.
    :param output_conn_id: connection for the object store.
    :param from_date: first day (inclusive, account time zone); default: ``days - 1`` days before ``to_date``.
    :param to_date: last day (inclusive); default: the run's last day.
    :param days: length of the default range, 1 to 366.
    :param top: how many reasons and domains to list, 1 to 100.
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    """

    endpoints_read = (api_facts.summary_stats_path, api_facts.logs_path)

    def __init__(self, *, output_path: str | ObjectStoragePath, days: int = 30, top: int = 10, **kwargs: Any) -> None:
        super().__init__(output_path=output_path, **kwargs)
        self.days = validation.int_in_range(days, parameter="days", low=1, high=366)
        self.top = validation.int_in_range(top, parameter="top", low=1, high=100)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            import matplotlib  # noqa: F401  (before the dates, the destination and any request)
        except ImportError:
            raise AirflowOptionalProviderFeatureException(
                "KaleyraEmailDeliverabilityReportOperator draws its charts with matplotlib, which is not "
                "installed: pip install 'airflow-provider-kaleyra-email[report]'."
            ) from None
        first, last, complete = self._start(context)
        html_path = self._object(first, last, "report.html")
        if not html_path.name.lower().endswith((".html", ".htm")):
            raise ValueError(
                f"output_path={self.output_path!r} must name an .html object; the PNG is written beside it."
            )
        try:
            read_at = datetime.now(self.hook.timezone)
            stats = list(self._rows(self.hook.iter_summary_stats_pages(first, last)))
            tally = FailureTally()
            for status in FAILURE_STATUSES:
                # A term also matches from, to and template name; statuses move while a recent range is read.
                for row in self._rows(self.hook.iter_log_pages(first, last, search=status, allow_count_mismatch=True)):
                    if str(row.get("status") or "").upper() == status:
                        tally.add(row)
        finally:
            self.hook.close()
        report = build_report(stats, tally, from_date=first, to_date=last, read_at=read_at, top=self.top)
        png = main_chart(report)
        png_written = output.write_bytes(html_path.parent / f"{html_path.name.rsplit('.', 1)[0]}.png", png)
        html_written = output.write_bytes(html_path, render_html(report, png).encode())
        summary = {"path": html_written.url, "png_path": png_written.url, **report.summary(), "complete": complete}
        self.log.info("Wrote the deliverability report %s..%s to %s: %s", first, last, html_written.url, report.rates)
        return self._finish(context, [html_written, png_written], summary)

    def _days(self, context: Context, tz: tzinfo, first: date | None, last: date | None) -> tuple[Any, Any]:
        last = last or intervals.days_for_run(context, tz)[1]
        first = first or last - (self.days - 1) * intervals.ONE_DAY
        if first > last:
            raise ValueError(f"from_date={first.isoformat()!r} is after the report's last day, {last}.")
        return first, last


class KaleyraEmailSendOperator(_KaleyraEmailOperator):
    """
    Send an email through Kaleyra and return its message ids (XCom), one per recipient batch.

    A send is not idempotent: Airflow's task ``retries`` would send again, so think before giving this task retries.
    ``KaleyraEmailMessageDeliveredSensor`` waits on the ids (``docs/sensor.md``).

    :param from_email: the sender; its domain must be registered with Kaleyra.
    :param to: one recipient or a list of them.
    :param subject: the subject line.
    :param html_body: the HTML body; give it, ``text_body``, or both.
    :param text_body: the plain-text body.
    :param message_type: Kaleyra's ``type`` of the message, sent only when given.
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    """

    template_fields: Sequence[str] = (*_MAIL_FIELDS, "kaleyra_email_conn_id")
    template_fields_renderers = {"html_body": "html", "to": "json"}

    def __init__(
        self,
        *,
        from_email: str,
        to: str | list[str],
        subject: str,
        html_body: str | None = None,
        text_body: str | None = None,
        message_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.from_email = from_email
        self.to = to
        self.subject = subject
        self.html_body = html_body
        self.text_body = text_body
        self.message_type = message_type

    def execute(self, context: Context) -> list[str]:
        return self.hook.send_email(**{name: getattr(self, name) for name in _MAIL_FIELDS})


def _given(value: Any) -> Any:
    """Return ``value``, or ``None`` for a template that rendered blank (``{{ params.day or '' }}``)."""
    return None if isinstance(value, str) and not value.strip() else value


def _count(number: int | None, noun: str) -> str:
    """Return ``'1 day'``, ``'2,000 log rows'``."""
    return f"{number or 0:,} {noun}{'' if number == 1 else 's'}"
