"""
Writing rows to object storage: JSON Lines, CSV or Parquet, streamed and atomic.

Rows arrive from the hook's iterator and are never all in memory. The object appears at its
final path only when it is complete: we write a hidden temporary object beside it and then
move it into place (an atomic rename on a local or POSIX file system; a copy, itself atomic,
on object stores). A task that dies mid-write leaves at most the hidden temporary object,
never a partial one at the path readers look at, and a rerun replaces the object whole.

CSV and Parquet need their columns before the first row: known fields first, then any field
the API added, sorted. Since an extra field may first appear on the last page, those formats
spool the rows to a local temporary file (JSON Lines) while counting columns, then convert.
"""

from __future__ import annotations

import contextlib
import csv
import io
import tempfile
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, TYPE_CHECKING, Any

import msgspec
from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from airflow.providers.common.compat.sdk import ObjectStoragePath

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

#: Rows per write to the output stream.
BATCH_ROWS = 2_000
#: Rows per Parquet row group: the rows of one group are in memory together (about 1 KB each as
#: Python dicts), so this bounds the writer's memory whatever the size of the day.
PARQUET_ROW_GROUP_ROWS = 20_000

#: The log row fields the API page documents, in its order; ``sale_price`` is the one number.
LOG_FIELDS: Mapping[str, str] = {
    "message_id": "string",
    "company_id": "string",
    "status": "string",
    "description": "string",
    "from_mail": "string",
    "to_mail": "string",
    "template_name": "string",
    "submitted_at": "string",
    "delivered_at": "string",
    "sale_price": "float64",
    "source": "string",
    "source_type": "string",
    "user_details": "string",
    "email_body": "string",
    "service_id": "string",
    "route": "string",
}

#: The summary stats row: the day, then the metrics the page documents.
SUMMARY_FIELDS: Mapping[str, str] = {
    "date": "string",
    "accepted": "int64",
    "delivered": "int64",
    "opens": "int64",
    "deferred": "int64",
    "blocks": "int64",
}


class OutputFormat(str, Enum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"

    @classmethod
    def parse(cls, value: Any, *, parameter: str = "output_format") -> OutputFormat:
        try:
            return cls(str(value).strip().lower()) if isinstance(value, str | OutputFormat) else cls(value)
        except ValueError:
            known = ", ".join(repr(member.value) for member in cls)
            raise ValueError(f"{parameter}={value!r} is not an output format; use one of {known}.") from None


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


@dataclass
class WriteResult:
    rows: int = 0
    bytes: int = 0


def write_rows(
    rows: Iterable[Mapping[str, Any]],
    destination: ObjectStoragePath,
    output_format: OutputFormat,
    known_fields: Mapping[str, str],
) -> WriteResult:
    """
    Stream ``rows`` into ``destination`` in ``output_format``, all or nothing.

    :param known_fields: the columns that always come first (CSV, Parquet), with their Parquet types.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.parent / f".{destination.name}.{uuid.uuid4().hex}.tmp"
    try:
        with temporary.open("wb") as stream:  # type: ignore[no-untyped-call]
            counter = _CountingStream(stream)
            if output_format is OutputFormat.JSONL:
                result = _write_jsonl(rows, counter)
            elif output_format is OutputFormat.CSV:
                result = _write_csv(rows, counter, _Columns(known_fields))
            else:
                result = _write_parquet(rows, counter, _Columns(known_fields))
        temporary.replace(destination)
    except BaseException:
        _remove_quietly(temporary)
        raise
    return result


def _remove_quietly(path: ObjectStoragePath) -> None:
    # The error that got us here matters more than a leftover hidden temporary object.
    with contextlib.suppress(Exception):
        path.unlink(missing_ok=True)


class _CountingStream:
    """Counts the bytes written to the output, for the summary."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self._stream.write(data)
        self.bytes += len(data)
        return len(data)


def _batches(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    batch: list[Mapping[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------------------------
# JSON Lines: straight through
# --------------------------------------------------------------------------------------------


def _write_jsonl(rows: Iterable[Mapping[str, Any]], stream: _CountingStream) -> WriteResult:
    result = WriteResult()
    for batch in _batches(rows, BATCH_ROWS):
        stream.write(_jsonl_bytes(batch))
        result.rows += len(batch)
    result.bytes = stream.bytes
    return result


def _jsonl_bytes(batch: list[Mapping[str, Any]]) -> bytes:
    return _encoder.encode_lines(batch)


# --------------------------------------------------------------------------------------------
# CSV and Parquet: spool, then convert with a stable column order
# --------------------------------------------------------------------------------------------


@dataclass
class _Columns:
    """The columns seen while spooling, and what kind of values each extra one held."""

    known: Mapping[str, str]
    kinds: dict[str, set[str]] = field(default_factory=dict)

    def observe(self, row: Mapping[str, Any]) -> None:
        for name in row.keys() - self.known.keys():  # a set difference in C: usually empty
            self.kinds.setdefault(name, set()).add(_kind(row[name]))

    def names(self) -> list[str]:
        return [*self.known, *sorted(self.kinds)]

    def parquet_type(self, name: str) -> str:
        if name in self.known:
            return self.known[name]
        kinds = self.kinds.get(name, set()) - {"null"}
        if kinds == {"int"}:
            return "int64"
        if kinds and kinds <= {"int", "float"}:
            return "float64"
        if kinds == {"bool"}:
            return "bool"
        return "string"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "other"


def _write_csv(rows: Iterable[Mapping[str, Any]], stream: _CountingStream, columns: _Columns) -> WriteResult:
    """CSV through a JSON Lines spool: the header needs every column, known only at the end."""
    with tempfile.TemporaryFile(prefix="kaleyra-email-spool-") as spool:
        count = 0
        for batch in _batches(rows, BATCH_ROWS):
            for row in batch:
                columns.observe(row)
            spool.write(_jsonl_bytes(batch))
            count += len(batch)
        spool.seek(0)
        _write_csv_rows(_read_spool(spool), stream, columns)
    return WriteResult(rows=count, bytes=stream.bytes)


#: Bytes of spooled JSON Lines decoded at a time.
SPOOL_CHUNK_BYTES = 4 * 1024 * 1024


def _read_spool(spool: IO[bytes]) -> Iterator[dict[str, Any]]:
    """The spooled rows again, decoded a few MB at a time."""
    tail = b""
    while chunk := spool.read(SPOOL_CHUNK_BYTES):
        complete, _, partial = (tail + chunk).rpartition(b"\n")
        tail = partial
        if complete:
            yield from _decoder.decode_lines(complete)
    if tail.strip():
        yield from _decoder.decode_lines(tail)


def _cell(value: Any) -> str:
    """A CSV cell: strings as they are, nested values as JSON, nothing for null."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _encoder.encode(value).decode()


def _csv_value(value: Any) -> Any:
    """What the csv module writes as we want it as is (text, numbers, nothing), else ``_cell``."""
    return value if value is None or type(value) in _CSV_AS_IS else _cell(value)


_CSV_AS_IS = frozenset({str, int, float})


def _write_csv_rows(rows: Iterable[Mapping[str, Any]], stream: _CountingStream, columns: _Columns) -> None:
    names = columns.names()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    for batch in _batches(rows, BATCH_ROWS):
        writer.writerows([_csv_value(row.get(name)) for name in names] for row in batch)
        stream.write(text.getvalue().encode())
        text.seek(0)
        text.truncate()
    if text.tell():
        stream.write(text.getvalue().encode())


def _write_parquet(rows: Iterable[Mapping[str, Any]], stream: _CountingStream, columns: _Columns) -> WriteResult:
    """
    Parquet through an Arrow spool: each row group is read into Arrow once (in C++), kept in a
    local Arrow file, and conformed to the final schema when every column is known.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    known = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns.known.items()])
    with tempfile.TemporaryDirectory(prefix="kaleyra-email-spool-") as folder:
        spooled: list[str] = []
        count = 0
        for batch in _batches(rows, PARQUET_ROW_GROUP_ROWS):
            for row in batch:
                columns.observe(row)
            path = f"{folder}/{len(spooled)}.arrow"
            table = _arrow_table(batch, known, sorted(columns.kinds))
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            spooled.append(path)
            count += len(batch)
        names = columns.names()
        schema = pa.schema([(name, getattr(pa, columns.parquet_type(name))()) for name in names])
        with pq.ParquetWriter(_StreamAdapter(stream), schema, compression="zstd") as writer:
            if not spooled:
                writer.write_table(schema.empty_table())
            for path in spooled:
                with pa.memory_map(path) as source:
                    writer.write_table(_conform(pa.ipc.open_file(source).read_all(), schema))
    return WriteResult(rows=count, bytes=stream.bytes)


def _arrow_table(batch: list[Mapping[str, Any]], known: Any, extras: list[str]) -> Any:
    """
    One batch in Arrow: the known columns in their types, extra ones as Arrow reads them, and
    nested values (like the API's ``user_details``) as JSON text. Arrow reads the rows in C++;
    only a column that did not come out right is redone value by value.
    """
    import pyarrow as pa

    try:
        inferred = pa.Table.from_pylist(list(batch))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # one column holds several kinds of value
        inferred = None
    arrays = []
    for name in [*known.names, *extras]:
        target = known.field(name).type if name in known.names else None
        if inferred is None:
            arrays.append(_by_value(batch, name, target))
        elif name not in inferred.column_names:
            arrays.append(pa.nulls(len(batch), target or pa.string()))
        else:
            arrays.append(_arrow_column(batch, name, inferred.column(name), target))
    return pa.Table.from_arrays(arrays, names=[*known.names, *extras])


def _arrow_column(batch: list[Mapping[str, Any]], name: str, column: Any, target: Any) -> Any:
    # No pyarrow.compute here or in _conform unless a column really needs a cast: importing it
    # costs a task about 0.3 s.
    import pyarrow as pa

    if pa.types.is_nested(column.type):
        if pa.types.is_struct(column.type) and column.type.num_fields == 0:
            # Every value is {} (like the API's user_details) or missing: no need to encode each.
            return pa.array([None if row.get(name) is None else "{}" for row in batch], pa.string())
        return _by_value(batch, name, pa.string())
    if target is None or column.type == target:
        return column
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), target)
    if pa.types.is_integer(column.type) and pa.types.is_floating(target):
        return pa.array(column.to_pylist(), target)  # not column.cast: see above
    return _by_value(batch, name, target)  # e.g. a number the API sent as a string


def _by_value(batch: list[Mapping[str, Any]], name: str, target: Any) -> Any:
    """A column built from the rows themselves, nested values as JSON text (Arrow's reading of
    nested values is lossy: ``{}`` beside ``{"k": [...]}`` comes back as ``{"k": None}``)."""
    import pyarrow as pa

    arrow_type = target or pa.string()
    kind = _KIND[str(arrow_type)]
    return pa.array([_parquet_value(row.get(name), kind) for row in batch], arrow_type)


#: Arrow type names to the kinds ``_parquet_value`` knows.
_KIND = {"string": "string", "int64": "int64", "double": "float64", "bool": "bool"}


def _conform(table: Any, schema: Any) -> Any:
    """A spooled batch in the final schema: missing columns null, the rest cast."""
    import pyarrow as pa

    arrays = []
    for spec in schema:
        if spec.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, spec.type))
        else:
            column = table.column(spec.name)
            arrays.append(column if column.type == spec.type else column.cast(spec.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _parquet_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "string":
        return value if isinstance(value, str) else _cell(value)
    if kind in {"int64", "float64"} and isinstance(value, str):
        # The API has sent numbers as strings before (``limit``); keep the column numeric.
        try:
            return int(value) if kind == "int64" else float(value)
        except ValueError:
            raise ValueError(f"{value!r} in a {kind} column is not a number; use output_format='jsonl'") from None
    return value


class _StreamAdapter(io.RawIOBase):
    """A write-only file object over our counting stream, for pyarrow."""

    def __init__(self, stream: _CountingStream):
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._stream.write(bytes(data))
