"""Streaming, atomic writes to object storage (file:// through ObjectStoragePath)."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_kaleyra_email.output import OutputFormat, write_rows

KNOWN = {"message_id": "string", "status": "string", "sale_price": "float64"}
ROWS = [
    {"message_id": "a:1", "status": "DELIVERED", "sale_price": 1, "user_details": {}},
    {"message_id": "a:2", "status": "BOUNCE", "sale_price": 0, "type": "MKT", "user_details": {"k": [1, 2]}},
    {"message_id": "b:1", "status": "OPEN", "sale_price": 0.5, "zeta": 3},
]


@pytest.fixture
def target(tmp_path):
    return ObjectStoragePath(f"file://{tmp_path}/out/day=2026-11-02/rows.data")


def listing(tmp_path):
    return sorted(p.name for p in (tmp_path / "out" / "day=2026-11-02").iterdir())


def test_jsonl_is_one_object_per_line(target, tmp_path):
    result = write_rows(iter(ROWS), target, OutputFormat.JSONL, KNOWN)

    data = target.read_bytes()
    assert [json.loads(line) for line in data.decode().splitlines()] == ROWS
    assert (result.rows, result.bytes) == (3, len(data))
    assert listing(tmp_path) == ["rows.data"], "no temporary object is left behind"


def test_csv_has_known_columns_first_then_extras_sorted(target):
    result = write_rows(iter(ROWS), target, OutputFormat.CSV, KNOWN)

    text = target.read_bytes().decode()
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    assert header == ["message_id", "status", "sale_price", "type", "user_details", "zeta"]
    assert list(reader) == [
        ["a:1", "DELIVERED", "1", "", "{}", ""],
        ["a:2", "BOUNCE", "0", "MKT", '{"k":[1,2]}', ""],
        ["b:1", "OPEN", "0.5", "", "", "3"],
    ]
    assert result.rows == 3
    assert result.bytes == len(text.encode())


def test_parquet_has_a_stable_typed_schema(target):
    write_rows(iter(ROWS), target, OutputFormat.PARQUET, KNOWN)

    table = pq.read_table(io.BytesIO(target.read_bytes()))
    assert table.column_names == ["message_id", "status", "sale_price", "type", "user_details", "zeta"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "double", "string", "string", "int64"]
    assert table.column("sale_price").to_pylist() == [1.0, 0.0, 0.5]
    assert table.column("user_details").to_pylist() == ["{}", '{"k":[1,2]}', None]


def test_parquet_conforms_columns_arrow_reads_in_another_type(target):
    # Whole numbers in a float column, a known column that is always null, and user_details that
    # is only ever {} or missing: each comes out in the schema's type with its nulls kept.
    rows = [
        {"message_id": "a:1", "status": None, "sale_price": 3, "user_details": {}},
        {"message_id": "a:2", "status": None, "sale_price": None},
        {"message_id": "a:3", "status": None, "sale_price": 2**40, "user_details": {}},
    ]
    write_rows(iter(rows), target, OutputFormat.PARQUET, KNOWN)

    table = pq.read_table(io.BytesIO(target.read_bytes()))
    assert [str(t) for t in table.schema.types] == ["string", "string", "double", "string"]
    assert table.column("status").to_pylist() == [None, None, None]
    assert table.column("sale_price").to_pylist() == [3.0, None, float(2**40)]
    assert table.column("user_details").to_pylist() == ["{}", None, "{}"]


@pytest.mark.parametrize("output_format", list(OutputFormat))
def test_no_rows_still_makes_a_valid_object(target, output_format):
    assert write_rows(iter([]), target, output_format, KNOWN).rows == 0
    if output_format is OutputFormat.CSV:
        assert target.read_bytes() == b"message_id,status,sale_price\n"
    elif output_format is OutputFormat.PARQUET:
        assert pq.read_table(io.BytesIO(target.read_bytes())).column_names == list(KNOWN)
    else:
        assert target.read_bytes() == b""


@pytest.mark.parametrize("output_format", list(OutputFormat))
def test_a_failure_mid_stream_leaves_the_old_object_and_no_temporary(target, tmp_path, output_format):
    write_rows(iter(ROWS[:1]), target, output_format, KNOWN)
    before = target.read_bytes()

    def broken():
        yield from ROWS * 2_000
        raise ConnectionError("the API went away")

    with pytest.raises(ConnectionError, match="went away"):
        write_rows(broken(), target, output_format, KNOWN)

    assert target.read_bytes() == before
    assert listing(tmp_path) == ["rows.data"]


def test_a_rerun_replaces_the_object(target):
    write_rows(iter(ROWS), target, OutputFormat.JSONL, KNOWN)
    write_rows(iter(ROWS[:1]), target, OutputFormat.JSONL, KNOWN)
    assert target.read_bytes().decode().splitlines() == [json.dumps(ROWS[0], separators=(",", ":"))]


def test_a_non_number_in_a_numeric_column_is_an_error_not_a_null(target):
    with pytest.raises(ValueError, match="'free' in a float64 column is not a number"):
        write_rows(iter([{"sale_price": "free"}]), target, OutputFormat.PARQUET, KNOWN)


def test_output_format_names():
    assert OutputFormat.parse(" CSV ") is OutputFormat.CSV
    with pytest.raises(ValueError, match="output_format='xml' is not an output format"):
        OutputFormat.parse("xml")


def test_parquet_extras_that_change_kind_between_row_groups(target, monkeypatch):
    import airflow_provider_kaleyra_email.output as output

    monkeypatch.setattr(output, "PARQUET_ROW_GROUP_ROWS", 2)
    rows = [
        {"message_id": "a:1", "status": "OPEN", "sale_price": "0.25", "mixed": 1, "ratio": 1, "only_late": None},
        {"message_id": "a:2", "status": "OPEN", "sale_price": 1, "mixed": 2, "ratio": 2},
        {"message_id": "b:1", "status": "BOUNCE", "sale_price": None, "mixed": "three", "ratio": 2.5, "only_late": [1]},
    ]

    write_rows(iter(rows), target, OutputFormat.PARQUET, KNOWN)

    table = pq.read_table(io.BytesIO(target.read_bytes()))
    assert table.schema.names == ["message_id", "status", "sale_price", "mixed", "only_late", "ratio"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "double", "string", "string", "double"]
    assert table.to_pylist() == [
        {"message_id": "a:1", "status": "OPEN", "sale_price": 0.25, "mixed": "1", "only_late": None, "ratio": 1.0},
        {"message_id": "a:2", "status": "OPEN", "sale_price": 1.0, "mixed": "2", "only_late": None, "ratio": 2.0},
        {
            "message_id": "b:1",
            "status": "BOUNCE",
            "sale_price": None,
            "mixed": "three",
            "only_late": "[1]",
            "ratio": 2.5,
        },
    ]
    assert pq.ParquetFile(io.BytesIO(target.read_bytes())).num_row_groups == 2


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 10_000_000])
def test_csv_rows_read_back_from_the_spool_whatever_the_chunk_size(tmp_path, monkeypatch, chunk_bytes):
    # The spool is decoded a few MB at a time; with tiny chunks every row straddles a boundary.
    import airflow_provider_kaleyra_email.output as output

    monkeypatch.setattr(output, "SPOOL_CHUNK_BYTES", chunk_bytes)
    rows = [{"message_id": f"m:{i}", "status": "OPEN", "sale_price": i / 4, "note": "é\n" * (i % 3)} for i in range(50)]
    target = ObjectStoragePath(f"file://{tmp_path}/rows.csv")

    write_rows(iter(rows), target, OutputFormat.CSV, KNOWN)

    read = list(csv.DictReader(io.StringIO(target.read_bytes().decode())))
    assert [r["message_id"] for r in read] == [f"m:{i}" for i in range(50)]
    assert [r["note"] for r in read] == ["é\n" * (i % 3) for i in range(50)]
    assert [float(r["sale_price"]) for r in read] == [i / 4 for i in range(50)]
