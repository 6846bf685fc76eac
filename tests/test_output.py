"""Streaming, atomic writes to object storage (file:// through ObjectStoragePath)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_kaleyra_email.output import OutputFormat, write_rows

KNOWN = {"message_id": "string", "status": "string", "sale_price": "float64"}
METRICS = {"date": "string", "accepted": "int64", "blocks": "int64"}
ROWS = [
    {"message_id": "a:1", "status": "DELIVERED", "sale_price": 1, "user_details": {}},
    {"message_id": "a:2", "status": "BOUNCE", "sale_price": 0, "type": "MKT", "user_details": {"k": [1, 2]}},
    {"message_id": "b:1", "status": "OPEN", "sale_price": 0.5, "zeta": 3},
]
#: ``extra`` of ROWS, written out by hand: every field that is not in KNOWN, in the row's order.
ROWS_EXTRA = ['{"user_details":{}}', '{"type":"MKT","user_details":{"k":[1,2]}}', '{"zeta":3}']


@pytest.fixture
def target(tmp_path):
    return ObjectStoragePath(f"file://{tmp_path}/out/day=2026-11-02/rows.data")


def listing(tmp_path):
    return sorted(p.name for p in (tmp_path / "out" / "day=2026-11-02").iterdir())


def read_csv(target):
    return list(csv.reader(io.StringIO(target.read_bytes().decode())))


def read_parquet(target):
    return pq.read_table(io.BytesIO(target.read_bytes()))


def test_jsonl_is_one_object_per_line(target, tmp_path):
    result = write_rows(iter(ROWS), target, OutputFormat.JSONL, KNOWN)

    data = target.read_bytes()
    assert [json.loads(line) for line in data.decode().splitlines()] == ROWS
    assert (result.rows, result.bytes, result.misfits) == (3, len(data), {})
    assert listing(tmp_path) == ["rows.data"], "no temporary object is left behind"


def test_csv_has_the_documented_columns_then_extra(target):
    result = write_rows(iter(ROWS), target, OutputFormat.CSV, KNOWN)

    assert read_csv(target) == [
        ["message_id", "status", "sale_price", "extra"],
        ["a:1", "DELIVERED", "1", ROWS_EXTRA[0]],
        ["a:2", "BOUNCE", "0", ROWS_EXTRA[1]],
        ["b:1", "OPEN", "0.5", ROWS_EXTRA[2]],
    ]
    assert (result.rows, result.bytes, result.misfits) == (3, len(target.read_bytes()), {})


def test_parquet_has_a_fixed_typed_schema(target):
    write_rows(iter(ROWS), target, OutputFormat.PARQUET, KNOWN)

    table = read_parquet(target)
    assert table.column_names == ["message_id", "status", "sale_price", "extra"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "double", "string"]
    assert table.column("sale_price").to_pylist() == [1.0, 0.0, 0.5]
    assert table.column("extra").to_pylist() == ROWS_EXTRA


def test_the_schema_is_the_same_whatever_the_rows(tmp_path):
    # Another day: no extra field at all, a column always missing or null, numbers as strings.
    other_day = [
        {"message_id": "c:1", "sale_price": None},
        {"message_id": "c:2", "status": None, "sale_price": "2.5"},
    ]
    paths = {}
    for name, rows in (("one", ROWS), ("other", other_day)):
        for output_format in (OutputFormat.CSV, OutputFormat.PARQUET):
            paths[name, output_format] = ObjectStoragePath(f"file://{tmp_path}/{name}.{output_format.value}")
            write_rows(iter(rows), paths[name, output_format], output_format, KNOWN)

    one, other = (read_parquet(paths[name, OutputFormat.PARQUET]) for name in ("one", "other"))
    assert one.schema == other.schema
    assert other.to_pylist() == [
        {"message_id": "c:1", "status": None, "sale_price": None, "extra": None},
        {"message_id": "c:2", "status": None, "sale_price": 2.5, "extra": None},
    ]
    assert read_csv(paths["one", OutputFormat.CSV])[0] == read_csv(paths["other", OutputFormat.CSV])[0]
    assert read_csv(paths["other", OutputFormat.CSV])[1:] == [["c:1", "", "", ""], ["c:2", "", "2.5", ""]]


@pytest.mark.parametrize("output_format", [OutputFormat.CSV, OutputFormat.PARQUET])
def test_a_field_the_api_adds_on_the_last_page_does_not_change_the_columns(target, monkeypatch, output_format):
    import airflow_provider_kaleyra_email.output as output

    monkeypatch.setattr(output, "BATCH_ROWS", 2)
    monkeypatch.setattr(output, "PARQUET_ROW_GROUP_ROWS", 2)
    rows = [{"message_id": f"m:{i}", "status": "OPEN", "sale_price": 1} for i in range(5)]
    rows[-1]["campaign"] = "black-friday"

    write_rows(iter(rows), target, output_format, KNOWN)

    if output_format is OutputFormat.CSV:
        header, *lines = read_csv(target)
        extras = [line[-1] for line in lines]
    else:
        table = read_parquet(target)
        header, extras = table.column_names, table.column("extra").to_pylist()
    assert header == ["message_id", "status", "sale_price", "extra"]
    assert extras[:4] in ([""] * 4, [None] * 4)
    assert extras[4] == '{"campaign":"black-friday"}'


#: Values of a float64 column that it cannot hold exactly, and what CSV must write for each.
FLOAT_MISFITS = [
    (True, "true"),
    (2**70, "1180591620717411303424"),
    (2**60, "1152921504606846976"),  # beyond 2**53 float64 skips integers
    (-(2**53) - 1, "-9007199254740993"),
    ("abc", "abc"),
    ({"amount": 1}, '{"amount":1}'),
    ([1, 2], "[1,2]"),
    ("1.5.1", "1.5.1"),
]
#: Values it holds: (value, in Parquet, in CSV).
FLOAT_FITS = [
    (3.5, 3.5, "3.5"),
    (7, 7.0, "7"),
    (2**53, 9007199254740992.0, "9007199254740992"),
    ("12", 12.0, "12"),
    ("1.5", 1.5, "1.5"),
    (None, None, ""),
]


def test_values_that_do_not_fit_a_parquet_column_are_kept_in_extra_and_counted(target):
    values = [value for value, _ in FLOAT_MISFITS] + [value for value, _, _ in FLOAT_FITS]
    rows = [{"message_id": f"m:{i}", "status": "OPEN", "sale_price": value} for i, value in enumerate(values)]

    result = write_rows(iter(rows), target, OutputFormat.PARQUET, KNOWN)

    table = read_parquet(target)
    assert table.column("sale_price").to_pylist() == [None] * len(FLOAT_MISFITS) + [p for _, p, _ in FLOAT_FITS]
    extras = [None if text is None else json.loads(text) for text in table.column("extra").to_pylist()]
    assert extras == [{"sale_price": value} for value, _ in FLOAT_MISFITS] + [None] * len(FLOAT_FITS)
    assert result.misfits == {"sale_price": len(FLOAT_MISFITS)}


def test_csv_writes_the_same_values_exactly(target):
    values = [value for value, _ in FLOAT_MISFITS] + [value for value, _, _ in FLOAT_FITS]
    rows = [{"message_id": f"m:{i}", "sale_price": value} for i, value in enumerate(values)]

    result = write_rows(iter(rows), target, OutputFormat.CSV, KNOWN)

    cells = [line[2] for line in read_csv(target)[1:]]
    assert cells == [text for _, text in FLOAT_MISFITS] + [text for _, _, text in FLOAT_FITS]
    assert [line[3] for line in read_csv(target)[1:]] == [""] * len(values)
    assert result.misfits == {}


def test_integer_columns_take_only_integers_in_range(target):
    rows = [
        {"date": "d1", "accepted": 3.5, "blocks": 2**63 - 1},
        {"date": "d2", "accepted": 2**63, "blocks": -(2**63)},
        {"date": "d3", "accepted": False, "blocks": "12"},
        {"date": "d4", "accepted": 4.0, "blocks": "1.5", "bounces": 9},
    ]

    result = write_rows(iter(rows), target, OutputFormat.PARQUET, METRICS)

    assert read_parquet(target).to_pylist() == [
        {"date": "d1", "accepted": None, "blocks": 2**63 - 1, "extra": '{"accepted":3.5}'},
        {"date": "d2", "accepted": None, "blocks": -(2**63), "extra": '{"accepted":9223372036854775808}'},
        {"date": "d3", "accepted": None, "blocks": 12, "extra": '{"accepted":false}'},
        {"date": "d4", "accepted": 4, "blocks": None, "extra": '{"blocks":"1.5","bounces":9}'},
    ]
    assert result.misfits == {"accepted": 3, "blocks": 1}


def test_string_columns_hold_other_values_as_json_text(target):
    rows = [{"message_id": 12, "status": True, "sale_price": 1}, {"message_id": {"id": [1]}, "status": None}]

    result = write_rows(iter(rows), target, OutputFormat.PARQUET, KNOWN)

    assert read_parquet(target).to_pylist() == [
        {"message_id": "12", "status": "true", "sale_price": 1.0, "extra": None},
        {"message_id": '{"id":[1]}', "status": None, "sale_price": None, "extra": None},
    ]
    assert result.misfits == {}


@pytest.mark.parametrize("output_format", list(OutputFormat))
def test_no_rows_still_makes_a_valid_object(target, output_format):
    assert write_rows(iter([]), target, output_format, KNOWN).rows == 0
    if output_format is OutputFormat.CSV:
        assert target.read_bytes() == b"message_id,status,sale_price,extra\n"
    elif output_format is OutputFormat.PARQUET:
        table = read_parquet(target)
        assert table.num_rows == 0
        assert table.column_names == ["message_id", "status", "sale_price", "extra"]
        assert [str(t) for t in table.schema.types] == ["string", "string", "double", "string"]
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


#: A writer that streams a first batch of rows to ``sys.argv[1]``, says so, and waits to be killed.
KILLED_WRITER = """
import sys, time
from airflow.providers.common.compat.sdk import ObjectStoragePath
from airflow_provider_kaleyra_email.output import BATCH_ROWS, OutputFormat, write_rows

def rows():
    yield from ({"message_id": f"k:{n}", "status": "OPEN"} for n in range(BATCH_ROWS))
    print("first batch written", flush=True)
    time.sleep(600)

write_rows(rows(), ObjectStoragePath(sys.argv[1]), OutputFormat.JSONL, {"message_id": "string"})
"""


def test_the_next_write_removes_a_killed_writer_s_temporary_and_keeps_a_live_one(target, tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "first batch written\n"  # type: ignore[union-attr]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    (stale,) = listing(tmp_path)
    assert re.fullmatch(r"\.rows\.data\.[0-9a-f]{32}\.tmp", stale)
    folder = tmp_path / "out" / "day=2026-11-02"
    assert (folder / stale).stat().st_size > 0
    another_object_s = folder / f".other.data.{'0' * 32}.tmp"
    another_object_s.write_bytes(b"x")
    os.utime(another_object_s, (0, 0))
    live = folder / f".rows.data.{'1' * 32}.tmp"
    live.write_bytes(b"")

    def rows_while_another_writer_writes():
        time.sleep(0.05)  # past the file system clock's granularity
        for row in ROWS:
            with live.open("ab") as other:  # another attempt, still running, writes its own temporary
                other.write(b"{}\n")
            yield row

    write_rows(rows_while_another_writer_writes(), target, OutputFormat.JSONL, KNOWN)

    assert listing(tmp_path) == sorted([another_object_s.name, live.name, "rows.data"])
    assert [json.loads(line) for line in target.read_bytes().decode().splitlines()] == ROWS


def test_a_failed_write_leaves_a_killed_writer_s_temporary_for_the_next_successful_one(target, tmp_path):
    folder = tmp_path / "out" / "day=2026-11-02"
    folder.mkdir(parents=True)
    stale = folder / f".rows.data.{'2' * 32}.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))

    def broken():
        yield ROWS[0]
        raise ConnectionError("the API went away")

    with pytest.raises(ConnectionError):
        write_rows(broken(), target, OutputFormat.JSONL, KNOWN)
    assert listing(tmp_path) == [stale.name]

    write_rows(iter(ROWS), target, OutputFormat.JSONL, KNOWN)
    assert listing(tmp_path) == ["rows.data"]


def test_a_rerun_replaces_the_object(target):
    write_rows(iter(ROWS), target, OutputFormat.JSONL, KNOWN)
    write_rows(iter(ROWS[:1]), target, OutputFormat.JSONL, KNOWN)
    assert target.read_bytes().decode().splitlines() == [json.dumps(ROWS[0], separators=(",", ":"))]


def test_output_format_names():
    assert OutputFormat.parse(" CSV ") is OutputFormat.CSV
    with pytest.raises(ValueError, match="output_format='xml' is not an output format"):
        OutputFormat.parse("xml")


def test_one_parquet_row_group_per_batch_whatever_the_extra_fields_hold(target, monkeypatch):
    import airflow_provider_kaleyra_email.output as output

    monkeypatch.setattr(output, "PARQUET_ROW_GROUP_ROWS", 2)
    rows = [
        {"message_id": "a:1", "status": "OPEN", "sale_price": "0.25", "mixed": 1, "only_late": None},
        {"message_id": "a:2", "status": "OPEN", "sale_price": 1, "mixed": 2},
        {"message_id": "b:1", "status": "BOUNCE", "sale_price": None, "mixed": "three", "only_late": [1]},
    ]

    write_rows(iter(rows), target, OutputFormat.PARQUET, KNOWN)

    assert read_parquet(target).to_pylist() == [
        {"message_id": "a:1", "status": "OPEN", "sale_price": 0.25, "extra": '{"mixed":1,"only_late":null}'},
        {"message_id": "a:2", "status": "OPEN", "sale_price": 1.0, "extra": '{"mixed":2}'},
        {"message_id": "b:1", "status": "BOUNCE", "sale_price": None, "extra": '{"mixed":"three","only_late":[1]}'},
    ]
    assert pq.ParquetFile(io.BytesIO(target.read_bytes())).num_row_groups == 2


@pytest.mark.parametrize("batch_rows", [1, 7, 64, 10_000_000])
def test_csv_rows_read_back_exactly_whatever_the_batch_size(tmp_path, monkeypatch, batch_rows):
    import airflow_provider_kaleyra_email.output as output

    monkeypatch.setattr(output, "BATCH_ROWS", batch_rows)
    rows = [{"message_id": f"m:{i}", "status": "é\n" * (i % 3), "sale_price": i / 4} for i in range(50)]
    target = ObjectStoragePath(f"file://{tmp_path}/rows.csv")

    write_rows(iter(rows), target, OutputFormat.CSV, KNOWN)

    read = list(csv.DictReader(io.StringIO(target.read_bytes().decode(), newline="")))
    assert [r["message_id"] for r in read] == [f"m:{i}" for i in range(50)]
    assert [r["status"] for r in read] == ["é\n" * (i % 3) for i in range(50)]
    assert [float(r["sale_price"]) for r in read] == [i / 4 for i in range(50)]


def open_files_under(folder) -> list[str]:
    """Files this process has open under ``folder``, named or not (an O_TMPFILE is listed nowhere)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(os.path.join("/proc/self/fd", fd)))
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
    return [name for name in names if name.startswith(str(folder))]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list open files")
@pytest.mark.parametrize("output_format", [OutputFormat.CSV, OutputFormat.PARQUET])
def test_csv_and_parquet_stream_to_the_temporary_object_with_no_spool(tmp_path, monkeypatch, output_format):
    import airflow_provider_kaleyra_email.output as output

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    monkeypatch.setattr(output, "BATCH_ROWS", 10)
    monkeypatch.setattr(output, "PARQUET_ROW_GROUP_ROWS", 10)
    folder = tmp_path / "lake"
    seen = {}

    def rows():
        for i in range(100):
            note = random.Random(i).randbytes(5_000).hex()  # 10,000 characters that do not compress much
            yield {"message_id": f"m:{i}", "status": "OPEN", "sale_price": 1, "note": note}
            if i == 60:  # six batches in
                seen["spooled"] = [p.name for p in system_tmp.iterdir()] + open_files_under(system_tmp)
                seen["written"] = sum(p.stat().st_size for p in folder.glob(".rows.*.tmp"))

    write_rows(rows(), ObjectStoragePath(f"file://{folder}/rows.{output_format.value}"), output_format, KNOWN)

    assert seen["spooled"] == []
    assert seen["written"] > 6 * 10 * 5_000, "six batches are in the hidden temporary object already"
