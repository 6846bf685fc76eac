"""
``s3://`` output against a real S3 API (moto's server on loopback): the fetch operators in real
DAG runs write every format whole, through an ``aws`` connection given as ``output_conn_id``;
a failed or killed task leaves nothing at the final key; a rerun replaces the object; a large
object goes up as a multipart upload.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import time
from datetime import date, datetime, timezone
from pathlib import PurePosixPath
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest

from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator
from airflow_provider_kaleyra_email.testing import Faults, KaleyraEmailEmulator
from tests.dags import run_dag, task_states, xcom_value
from tests.integration.s3_dags import FORMATS, S3_CONN_ID, bundle_file_text, dag, logs_key, stats_key
from tests.integration.s3_server import S3Server

BUCKET = "lake"
DAY = date(2026, 11, 2)
#: A daily run on Nov 3 covers [Nov 2, Nov 3): the day exported is DAY.
LOGICAL_DATE = datetime(2026, 11, 3, tzinfo=timezone.utc)
EMULATOR = {"start_date": date(2026, 10, 30), "days": 6}
DOCUMENTED_LOG_FIELDS = [
    "message_id", "company_id", "status", "description", "from_mail", "to_mail", "template_name",
    "submitted_at", "delivered_at", "sale_price", "source", "source_type", "user_details",
    "email_body", "service_id", "route",
]  # fmt: skip
DOCUMENTED_METRICS = ["accepted", "delivered", "opens", "deferred", "blocks"]
#: S3's smallest part: with s3fs's block size lowered to it, a few MB already make several parts.
MIN_PART = 5 * 2**20
#: The requests that write an object.
WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject"}


@pytest.fixture(scope="module")
def s3():
    """Moto's S3 on a free loopback port, a bucket, and ``AIRFLOW_CONN_KALEYRA_S3`` pointed at it."""
    with S3Server() as server, pytest.MonkeyPatch.context() as monkeypatch:
        server.client().create_bucket(Bucket=BUCKET)
        monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", server.connection_json())
        yield server


@pytest.fixture(scope="module")
def dag_bundle(tmp_path_factory, airflow_db):
    """Airflow 3 runs a DAG under ``dag.test()`` only if a bundle holds it: one more bundle, for ours."""
    folder = tmp_path_factory.mktemp("s3-dag-bundle")
    (folder / "s3_export_dag.py").write_text(bundle_file_text())
    ours = {"name": "tests_s3", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}
    # First: dag.test() walks the bundles in order until one holds the DAG, parsing every file on the way.
    bundles = [
        {**ours, "kwargs": {"path": str(folder)}},
        *json.loads(os.environ.get("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", "[]")),
    ]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
        yield


def run_export(emulator: KaleyraEmailEmulator, out: str, **connection) -> object:
    """One run of the DAG for DAY, writing under ``out``, the Kaleyra connection pointed at ``emulator``."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", emulator.connection_json(**connection))
        return run_dag(dag, LOGICAL_DATE, run_conf={"out": out})


def hidden(key: str) -> bool:
    return PurePosixPath(key).name.startswith(".")


def documented_text(value):
    """A documented field's value, as CSV holds it: text as is, other values as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def undocumented(row, documented):
    return {name: value for name, value in row.items() if name not in documented}


@pytest.fixture(scope="module")
def exported(s3, dag_bundle):
    """One DAG run for DAY against a 2,000-rows-a-day emulator, into ``s3://lake/export``."""
    with KaleyraEmailEmulator(rows_per_day=2_000, **EMULATOR) as emulator:
        s3.clear_requests()
        dag_run = run_export(emulator, f"s3://{BUCKET}/export")
        requests = list(s3.requests)
        logs = list(emulator.dataset.expected_logs(DAY, DAY))
        stats = [{"date": DAY.isoformat(), **emulator.dataset.day_metrics(DAY)}]
    return {"dag_run": dag_run, "requests": requests, "logs": logs, "stats": stats}


def export_key(key: str) -> str:
    return f"export/{key}"


def test_every_task_succeeds_and_leaves_only_its_object(s3, exported):
    assert task_states(exported["dag_run"]) == dict.fromkeys([*(f"logs_{f}" for f in FORMATS), "stats_csv"], "success")
    expected = sorted([*(export_key(logs_key(f, DAY.isoformat())) for f in FORMATS), export_key(stats_key(str(DAY)))])
    assert s3.keys(BUCKET, "export/") == expected
    assert s3.multipart_uploads(BUCKET) == []


@pytest.mark.parametrize("output_format", FORMATS)
def test_the_summary_names_the_s3_object_and_its_size(s3, exported, output_format):
    key = export_key(logs_key(output_format, DAY.isoformat()))
    summary = xcom_value(exported["dag_run"], f"logs_{output_format}")
    head = s3.client().head_object(Bucket=BUCKET, Key=key)
    assert summary["path"] == f"s3://{BUCKET}/{key}", "the URL a reader uses: no connection id in it (XCom, logs)"
    assert summary["rows"] == len(exported["logs"]) == 2_000
    assert summary["bytes"] == head["ContentLength"]


def test_jsonl_round_trips_through_s3(s3, exported):
    body = s3.read(BUCKET, export_key(logs_key("jsonl", DAY.isoformat())))
    assert [json.loads(line) for line in body.decode().splitlines()] == exported["logs"]


def test_csv_round_trips_through_s3(s3, exported):
    body = s3.read(BUCKET, export_key(logs_key("csv", DAY.isoformat())))
    reader = csv.DictReader(io.StringIO(body.decode(), newline=""))
    rows = list(reader)
    assert reader.fieldnames == [*DOCUMENTED_LOG_FIELDS, "extra"]
    assert len(rows) == len(exported["logs"])
    for got, sent in zip(rows, exported["logs"], strict=True):
        assert {name: got[name] for name in DOCUMENTED_LOG_FIELDS} == {
            name: documented_text(sent.get(name)) for name in DOCUMENTED_LOG_FIELDS
        }
        others = undocumented(sent, DOCUMENTED_LOG_FIELDS)
        assert (json.loads(got["extra"]) if got["extra"] else {}) == others


def test_parquet_round_trips_through_s3(s3, exported):
    body = s3.read(BUCKET, export_key(logs_key("parquet", DAY.isoformat())))
    table = pq.read_table(io.BytesIO(body))
    assert table.column_names == [*DOCUMENTED_LOG_FIELDS, "extra"]
    rows = table.to_pylist()
    assert len(rows) == len(exported["logs"])
    for got, sent in zip(rows, exported["logs"], strict=True):
        for name in DOCUMENTED_LOG_FIELDS:
            if name == "sale_price":
                assert got[name] == float(sent[name])
            elif isinstance(sent.get(name), str | None):
                assert got[name] == sent.get(name), name
            else:
                assert json.loads(got[name]) == sent[name], name
        assert (json.loads(got["extra"]) if got["extra"] else {}) == undocumented(sent, DOCUMENTED_LOG_FIELDS)


def test_summary_stats_round_trip_through_s3(s3, exported):
    body = s3.read(BUCKET, export_key(stats_key(str(DAY))))
    (row,) = csv.DictReader(io.StringIO(body.decode()))
    (sent,) = exported["stats"]
    documented = ["date", *DOCUMENTED_METRICS]
    assert {name: row[name] for name in documented} == {name: str(sent[name]) for name in documented}
    assert json.loads(row["extra"]) == undocumented(sent, documented)


@pytest.mark.parametrize("output_format", FORMATS)
def test_each_object_is_written_hidden_then_copied_into_place(exported, output_format):
    """S3 has no rename: the object appears at its key by one CopyObject of a complete hidden object."""
    key = export_key(logs_key(output_format, DAY.isoformat()))
    at_final = [r.operation for r in exported["requests"] if r.key == key and r.method in ("PUT", "POST", "DELETE")]
    assert at_final == ["CopyObject"]
    (copy,) = [r for r in exported["requests"] if r.key == key and r.operation == "CopyObject"]
    source = unquote(copy.copy_source).lstrip("/").removeprefix(f"{BUCKET}/")
    assert PurePosixPath(source).parent == PurePosixPath(key).parent
    assert hidden(source)
    assert source.endswith(".tmp")
    written = [r.operation for r in exported["requests"] if r.key == source and r.method in ("PUT", "POST")]
    assert written == ["PutObject"], "small objects go up in one PUT"
    assert any(r.operation == "DeleteObjects" for r in exported["requests"][exported["requests"].index(copy) :])


@pytest.mark.kaleyra_email_emulator(rows_per_day=2_000, **EMULATOR)
def test_a_failed_task_leaves_nothing_at_the_key_and_no_temporary_object(s3, dag_bundle, kaleyra_email_emulator):
    kaleyra_email_emulator.queue_faults(*["ok"] * 6)  # some pages come through, then the API breaks
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))
    s3.clear_requests()

    dag_run = run_export(kaleyra_email_emulator, f"s3://{BUCKET}/failed", max_retries=0)

    states = task_states(dag_run)
    assert {states[f"logs_{f}"] for f in FORMATS} == {"failed"}
    assert any(r.status == 200 for r in kaleyra_email_emulator.requests_to("/logs")), "some rows came through"
    # The one-request stats task may have had an answer before the API broke: then its object is there.
    written = {f"failed/{stats_key(str(DAY))}"} if states["stats_csv"] == "success" else set()
    assert set(s3.keys(BUCKET, "failed/")) == written
    assert [key for key in s3.keys(BUCKET) if hidden(key)] == []
    assert s3.multipart_uploads(BUCKET) == []
    assert all(hidden(r.key) for r in s3.requests if r.key.startswith("failed/logs/") and r.operation in WRITES)


@pytest.mark.kaleyra_email_emulator(rows_per_day=2_000, **EMULATOR)
def test_a_rerun_replaces_each_object_whole(s3, dag_bundle, kaleyra_email_emulator):
    out = f"s3://{BUCKET}/rerun"
    first = task_states(run_export(kaleyra_email_emulator, out))  # read now: the rerun replaces the run
    before = s3.read(BUCKET, f"rerun/{logs_key('jsonl', DAY.isoformat())}")
    kaleyra_email_emulator.dataset.rows_per_day = 300  # the day now looks different

    second = run_export(kaleyra_email_emulator, out)

    assert set(first.values()) == set(task_states(second).values()) == {"success"}
    expected = list(kaleyra_email_emulator.dataset.expected_logs(DAY, DAY))
    assert len(before.splitlines()) == 2_000
    assert len(expected) == 300
    jsonl = s3.read(BUCKET, f"rerun/{logs_key('jsonl', DAY.isoformat())}").decode()
    assert [json.loads(line) for line in jsonl.splitlines()] == expected
    rows = list(csv.DictReader(io.StringIO(s3.read(BUCKET, f"rerun/{logs_key('csv', DAY.isoformat())}").decode())))
    assert [row["message_id"] for row in rows] == [row["message_id"] for row in expected]
    table = pq.read_table(io.BytesIO(s3.read(BUCKET, f"rerun/{logs_key('parquet', DAY.isoformat())}")))
    assert table.column("message_id").to_pylist() == [row["message_id"] for row in expected]
    assert [key for key in s3.keys(BUCKET, "rerun/") if hidden(key)] == []


def day_of_logs(url: str, conn_id: str, **kwargs: object) -> KaleyraEmailFetchLogsOperator:
    """An operator that writes DAY's logs to ``url`` through the object storage connection ``conn_id``."""
    return KaleyraEmailFetchLogsOperator(
        task_id="logs",
        from_date=DAY.isoformat(),
        to_date=DAY.isoformat(),
        output_path=url,
        output_conn_id=conn_id,
        **kwargs,
    )


@pytest.mark.kaleyra_email_emulator(start_date=DAY, days=1, rows_per_day=25_000)
def test_a_large_object_goes_up_in_parts(s3, kaleyra_email_emulator, monkeypatch):
    """s3fs buffers one block (50 MiB by default) and uploads each full one as a part of a multipart upload."""
    import s3fs

    # A connection of its own: Airflow caches a file system per connection, built at first use.
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_S3_SMALL_PARTS", s3.connection_json())
    monkeypatch.setattr(s3fs.S3FileSystem, "default_block_size", MIN_PART)
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json())
    key = "parts/logs.jsonl"
    operator = day_of_logs(f"s3://{BUCKET}/{key}", "kaleyra_s3_small_parts")
    s3.clear_requests()

    summary = operator.execute({})

    (temporary,) = {r.key for r in s3.requests if r.key.startswith("parts/") and hidden(r.key)}
    writes = [op for op in s3.requests_for(temporary) if op in WRITES]
    parts = writes.count("UploadPart")
    assert summary["bytes"] > 2 * MIN_PART
    # Each part is a full block (and the last what is left): never the whole object at once.
    assert 2 <= parts <= -(-summary["bytes"] // MIN_PART)
    assert writes == ["CreateMultipartUpload", *["UploadPart"] * parts, "CompleteMultipartUpload"]
    assert s3.requests_for(key) == ["CopyObject"]
    body = s3.read(BUCKET, key)
    assert [json.loads(line) for line in body.decode().splitlines()] == list(
        kaleyra_email_emulator.dataset.expected_logs(DAY, DAY)
    )
    assert s3.keys(BUCKET, "parts/") == [key]


def write_until_killed(url: str, conn_id: str) -> None:
    """The task's write, in a forked process: Airflow and s3fs are already imported, it starts at once."""
    import s3fs

    s3fs.S3FileSystem.default_block_size = MIN_PART  # parts go up early
    day_of_logs(url, conn_id).execute({})


@pytest.mark.kaleyra_email_emulator(start_date=DAY, days=1, rows_per_day=40_000)
def test_a_task_killed_mid_upload_leaves_nothing_at_the_key(s3, kaleyra_email_connection, monkeypatch):
    key = "killed/logs.jsonl"
    # A connection of its own: the forked process builds its own file system (s3fs's are not fork-safe).
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_S3_KILLED", s3.connection_json())
    s3.clear_requests()
    process = multiprocessing.get_context("fork").Process(
        target=write_until_killed, args=(f"s3://{BUCKET}/{key}", "kaleyra_s3_killed"), daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.is_alive():
            if any(r.operation == "UploadPart" for r in list(s3.requests)):
                break
            time.sleep(0.01)
        assert process.is_alive(), "the writer should be part-way through its upload"
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=10)
    finally:
        if process.is_alive():
            process.kill()
    assert process.exitcode == -signal.SIGKILL

    uploads = s3.multipart_uploads(BUCKET)
    try:
        assert s3.keys(BUCKET, "killed/") == [], "no object at the final key, nor a visible temporary one"
        # What SIGKILL leaves: the hidden temporary object's multipart upload, never completed (S3 keeps
        # its parts until it is aborted: a lifecycle rule AbortIncompleteMultipartUpload does that).
        (upload,) = uploads
        assert upload["Key"] != key
        assert upload["Key"].startswith("killed/")
        assert hidden(upload["Key"])
    finally:
        for upload in uploads:
            s3.client().abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.mark.kaleyra_email_emulator(start_date=DAY, days=1, rows_per_day=5_000)
def test_on_kill_mid_write_leaves_nothing_in_the_bucket(s3, kaleyra_email_connection, kaleyra_email_emulator):
    """On S3 the temporary object exists only once closed: on_kill stops the write, and the object it closes into is removed."""
    key = "on_kill/logs.jsonl"
    operator = day_of_logs(f"s3://{BUCKET}/{key}", S3_CONN_ID, page_size=50)
    fetch = operator.fetch

    def killed_after_some_pages(from_date, to_date):
        for number, page in enumerate(fetch(from_date, to_date)):
            if number == 10:
                operator.on_kill()  # what the task runner does on SIGTERM
            yield page

    operator.fetch = killed_after_some_pages
    s3.clear_requests()

    with pytest.raises(Exception, match="killed mid-write"):
        operator.execute({})

    assert s3.keys(BUCKET, "on_kill/") == []
    assert s3.multipart_uploads(BUCKET) == []
    assert all(hidden(r.key) for r in s3.requests if r.key.startswith("on_kill/") and r.operation in WRITES)
