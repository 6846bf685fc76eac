"""
Writing rows to object storage: JSON Lines, CSV or Parquet, streamed (no spool) and atomic.

Rows go to a hidden temporary object beside the destination, moved into place when complete (a
rename on a local file system, a copy on object stores): no reader sees a partial object, a rerun
replaces it whole. A killed writer's temporary stays; on a local file system the next write removes it.

JSON Lines holds the rows as sent. CSV and Parquet have a fixed schema: the documented fields, then
``extra``, the JSON of the row's other fields. A value its Parquet column cannot hold exactly (``true``
or ``"abc"`` for a number, 3.5 for an integer) leaves the column null, is kept in ``extra``, and counted.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from types import NoneType
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException, ObjectStoragePath
from airflow.providers.common.compat.sdk import io as airflow_io  # type: ignore[attr-defined]

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from datetime import date

_encoder = msgspec.json.Encoder()

#: Rows per write to the output stream, and per conversion to Arrow.
BATCH_ROWS = 2_000
#: Rows per Parquet row group, held in memory as Arrow columns until written.
PARQUET_ROW_GROUP_ROWS = 20_000
EXTRA_COLUMN = "extra"

#: The log row fields the API page documents, in its order, with their Parquet types.
LOG_FIELDS: Mapping[str, str] = {
    **dict.fromkeys(("message_id", "company_id", "status", "description", "from_mail", "to_mail"), "string"),
    **dict.fromkeys(("template_name", "submitted_at", "delivered_at"), "string"),
    "sale_price": "float64",
    **dict.fromkeys(("source", "source_type", "user_details", "email_body", "service_id", "route"), "string"),
}
#: The summary stats row: the day, then the metrics the page documents.
SUMMARY_FIELDS: Mapping[str, str] = {
    "date": "string",
    **dict.fromkeys(("accepted", "delivered", "opens", "deferred", "blocks"), "int64"),
}


class OutputFormat(str, Enum):
    """The formats an export can take."""

    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"

    @classmethod
    def parse(cls, value: Any) -> OutputFormat:
        try:
            return cls(value.strip().lower()) if isinstance(value, str) else cls(value)
        except ValueError:
            known = ", ".join(repr(member.value) for member in cls)
            raise ValueError(f"output_format={value!r} is not an output format; use one of {known}.") from None


@dataclass
class Written:
    """An object written: its URL and size; rows, columns (name: type, or None untyped) and values kept in ``extra``."""

    url: str
    bytes: int = 0
    rows: int | None = None
    columns: dict[str, str | None] = field(default_factory=dict)
    misfits: dict[str, int] = field(default_factory=dict)


def require_parquet_support() -> None:
    """Fail early, before any request, when Parquet is asked for and pyarrow is missing."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise AirflowOptionalProviderFeatureException(
            "output_format='parquet' needs pyarrow, which is not installed: "
            "pip install 'airflow-provider-kaleyra-email[parquet]'."
        ) from None


def url_of(path: ObjectStoragePath) -> str:
    """Return the URL of ``path`` for summaries and logs: ``s3://bucket/key``, without a connection id in it."""
    parts = urlsplit(str(path))
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def object_path(
    output_path: Any, *, conn_id: str | None, from_date: date | None, to_date: date | None, example: str
) -> ObjectStoragePath:
    """
    Return ``output_path``, a URL naming an object (not a folder), as an ``ObjectStoragePath``.

    :param output_path: the URL; ``{from_date}`` and ``{to_date}`` in it become the days exported.
    :param example: an object name for messages, e.g. ``"{from_date}.jsonl"``.
    """
    if isinstance(output_path, ObjectStoragePath):
        return output_path
    if not isinstance(output_path, str) or not output_path.strip():
        kind = type(output_path).__name__
        raise ValueError(f"output_path={output_path!r} ({kind}) must be a URL string, e.g. 's3://bucket/{example}'.")
    url = output_path.strip()
    for placeholder, day in (("{from_date}", from_date), ("{to_date}", to_date)):
        if placeholder in url:
            if day is None:
                raise ValueError(f"output_path={output_path!r} uses {placeholder}, but that end of the range is open.")
            url = url.replace(placeholder, day.isoformat())
    scheme = urlsplit(url).scheme
    if not scheme or len(scheme) == 1:  # a bare path, or a Windows drive letter
        raise ValueError(f"output_path={output_path!r} is not a URL; use e.g. 'file:///data/kaleyra/{example}'.")
    if not airflow_io.has_fs(scheme):
        raise ValueError(
            f"output_path={output_path!r} uses the scheme {scheme!r}, for which Airflow has no file system; "
            "install the provider that brings it (e.g. apache-airflow-providers-amazon[s3fs] for s3://)."
        )
    if url.endswith("/"):
        raise ValueError(f"output_path={output_path!r} names a folder; name the object, e.g. '.../{example}'.")
    # conn_id=None would drop a connection named in the URL (s3://conn@bucket/...) on Airflow 2.11.
    path = ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)
    if path.is_dir():
        raise ValueError(
            f"output_path={output_path!r} names a folder that exists ({path}); name an object in it, "
            f"e.g. '.../{example}'."
        )
    return path


def temporary_for(destination: ObjectStoragePath) -> ObjectStoragePath:
    """Return a new hidden temporary object beside ``destination``, to write before moving it into place."""
    return destination.parent / f".{destination.name}.{uuid.uuid4().hex}.tmp"


def remove_quietly(path: ObjectStoragePath) -> None:
    """Remove a temporary object, if it is there: the error that got us here matters more."""
    with contextlib.suppress(Exception):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def open_atomic(destination: ObjectStoragePath, temporary: ObjectStoragePath | None = None) -> Iterator[_Counting]:
    """Write to ``temporary``, moved to ``destination`` when the block ends; removed if it fails."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary or temporary_for(destination)
    started = time.time()
    try:
        with temporary.open("wb") as stream:  # type: ignore[no-untyped-call]
            yield _Counting(stream)
        temporary.replace(destination)
    except BaseException:
        remove_quietly(temporary)
        raise
    if destination.protocol in ("file", "local"):
        # A killed writer's temporary: one nobody wrote to since we started (a live one is another writer's).
        own = re.compile(rf"\.{re.escape(destination.name)}\.[0-9a-f]{{32}}\.tmp")
        for sibling in destination.parent.iterdir():
            with contextlib.suppress(OSError):
                if own.fullmatch(sibling.name) and sibling.stat().st_mtime < started:
                    sibling.unlink()


def write_bytes(destination: ObjectStoragePath, data: bytes) -> Written:
    """Write ``data`` to ``destination`` atomically."""
    with open_atomic(destination) as stream:
        stream.write(data)
    return Written(url_of(destination), len(data))


def write_rows(
    rows: Iterable[Mapping[str, Any]],
    destination: ObjectStoragePath,
    output_format: OutputFormat,
    known_fields: Mapping[str, str],
    *,
    temporary: ObjectStoragePath | None = None,
) -> Written:
    """
    Stream ``rows`` into ``destination`` in ``output_format``, all or nothing.

    :param rows: the rows, as the API sent them.
    :param destination: the object to write.
    :param output_format: the format to write.
    :param known_fields: the documented fields and their Parquet types: the columns before ``extra``.
    :param temporary: the hidden temporary object to write first (default: ``temporary_for(destination)``).
    """
    written = Written(url_of(destination))
    with open_atomic(destination, temporary) as stream:
        _WRITERS[output_format](_batches(iter(rows), written), stream, known_fields, written)
    written.bytes = stream.bytes
    return written


class _Counting(io.RawIOBase):
    """The output stream, counting the bytes written; a file object for pyarrow."""

    def __init__(self, stream: IO[bytes]):
        super().__init__()
        self._stream = stream
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)  # pyarrow hands over its own buffers
        self._stream.write(data)
        self.bytes += len(data)
        return len(data)


def _batches(rows: Iterator[Mapping[str, Any]], written: Written) -> Iterator[list[Any]]:
    """Yield ``rows`` in lists of ``BATCH_ROWS``, counted in ``written``."""
    written.rows = 0
    while batch := list(itertools.islice(rows, BATCH_ROWS)):
        yield batch
        written.rows += len(batch)


def _write_jsonl(batches: Iterable[list[Any]], stream: _Counting, known: Mapping[str, str], written: Written) -> None:
    for batch in batches:
        stream.write(_encoder.encode_lines(batch))


def _write_csv(batches: Iterable[list[Any]], stream: _Counting, known: Mapping[str, str], written: Written) -> None:
    written.columns = dict.fromkeys([*known, EXTRA_COLUMN])
    names, documented = list(known), frozenset(known)
    with io.TextIOWrapper(stream, encoding="utf-8", newline="") as text:  # type: ignore[type-var]
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(written.columns)
        for batch in batches:
            writer.writerows([*(_text(row.get(name)) for name in names), _extra(row, documented)] for row in batch)


def _write_parquet(batches: Iterable[list[Any]], stream: _Counting, known: Mapping[str, str], written: Written) -> None:
    """Write rows as Arrow columns a batch at a time, a row group at a time, in the fixed schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([*((name, getattr(pa, kind)()) for name, kind in known.items()), (EXTRA_COLUMN, pa.string())])
    written.columns = {column.name: str(column.type) for column in schema}
    pending = schema.empty_table()  # the row group being built
    with pq.ParquetWriter(stream, schema, compression="zstd") as writer:
        for batch in batches:
            table = pa.Table.from_batches([_record_batch(batch, schema, known, written.misfits)])
            pending = pa.concat_tables([pending, table])
            while pending.num_rows >= PARQUET_ROW_GROUP_ROWS:
                writer.write_table(pending.slice(0, PARQUET_ROW_GROUP_ROWS))
                pending = pending.slice(PARQUET_ROW_GROUP_ROWS)
        if pending.num_rows:
            writer.write_table(pending)


_WRITERS = {OutputFormat.JSONL: _write_jsonl, OutputFormat.CSV: _write_csv, OutputFormat.PARQUET: _write_parquet}


def _text(value: Any) -> str | None:
    """Return a value as text that reads back exactly: strings as they are, anything else as JSON."""
    return value if value is None or isinstance(value, str) else _encoder.encode(value).decode()


def _extra(row: Mapping[str, Any], documented: frozenset[str], kept: Iterable[str] = ()) -> str | None:
    """Return the JSON of the row's fields without a column, and of ``kept`` (values that did not fit theirs)."""
    names = row.keys() - documented  # a set difference in C: usually empty
    names.update(kept)
    if not names:
        return None
    return _encoder.encode({name: value for name, value in row.items() if name in names}).decode()


#: What Arrow converts exactly into each column (but ints beyond 2**53 for float64, or out of int64's range).
_AS_IS: dict[str, set[type]] = {"string": {str, NoneType}, "float64": {float, int, NoneType}, "int64": {int, NoneType}}


def _record_batch(
    batch: list[Mapping[str, Any]], schema: Any, known: Mapping[str, str], misfits: dict[str, int]
) -> Any:
    """Return one batch in the schema, a column at a time, converted by Arrow in C++ when it can."""
    import pyarrow as pa

    kept: dict[int, list[str]] = {}  # row index: the fields whose value goes to extra instead
    arrays = []
    for name, kind in known.items():
        arrow_type = schema.field(name).type
        values = [row.get(name) for row in batch]
        if set(map(type, values)) <= _AS_IS[kind]:
            try:
                arrays.append(pa.array(values, arrow_type))
                continue
            except (pa.ArrowInvalid, OverflowError):
                pass  # a number out of range: value by value
        fitted = [_text(value) if kind == "string" else _number(value, kind) for value in values]
        for index, (value, fit) in enumerate(zip(values, fitted, strict=True)):
            if fit is None and value is not None:
                kept.setdefault(index, []).append(name)
                misfits[name] = misfits.get(name, 0) + 1
        arrays.append(pa.array(fitted, arrow_type))
    documented = frozenset(known)
    arrays.append(pa.array([_extra(row, documented, kept.get(i, ())) for i, row in enumerate(batch)], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _number(value: Any, kind: str) -> int | float | None:
    """
    Return ``value`` exactly as an ``int64`` or a ``float64``; None for a bool, a fraction for an integer, out of range.

    float64 holds every integer only up to 2**53. A string that spells a JSON number (the API sent some) is that number.
    """
    if isinstance(value, str):
        with contextlib.suppress(msgspec.DecodeError):
            value = msgspec.json.decode(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind == "float64":
        return float(value) if isinstance(value, float) or abs(value) <= 2**53 else None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if -(2**63) <= value < 2**63 else None  # 3.0 is the integer 3
