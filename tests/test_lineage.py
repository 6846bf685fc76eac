"""
OpenLineage: the fetch and report operators name the endpoint they read and the object they wrote
by OpenLineage's naming rules (https://openlineage.io/docs/spec/naming), with the object's schema
and output statistics read back from the object itself; and they work without OpenLineage.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.generated.base import Dataset, OutputDataset
from openlineage.client.generated.output_statistics_output_dataset import OutputStatisticsOutputDatasetFacet
from openlineage.client.generated.schema_dataset import SchemaDatasetFacet, SchemaDatasetFacetFields

from airflow_provider_kaleyra_email.lineage import dataset_name
from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailDeliverabilityReportOperator,
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailFetchSummaryStatsOperator,
)
from airflow_provider_kaleyra_email.testing import Faults

PROJECT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=300)
DAILY_NOV_2 = {
    "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
    "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
}


@pytest.mark.parametrize(
    ("url", "namespace", "name"),
    [
        ("s3://lake/kaleyra/logs/date=2026-11-02/logs.parquet", "s3://lake", "kaleyra/logs/date=2026-11-02/logs.parquet"),
        ("s3://aws_lake@lake/logs.csv", "s3://lake", "logs.csv"),  # Airflow 2.11's connection in the URL
        ("s3a://lake/logs.csv", "s3://lake", "logs.csv"),
        ("gs://lake/kaleyra/logs.jsonl", "gs://lake", "kaleyra/logs.jsonl"),
        ("gcs://lake/kaleyra/logs.jsonl", "gs://lake", "kaleyra/logs.jsonl"),
        ("file:///data/kaleyra/logs.jsonl", "file", "/data/kaleyra/logs.jsonl"),
        ("hdfs://namenode:8020/data/logs.csv", "hdfs://namenode:8020", "/data/logs.csv"),
        ("memory://scratch/logs.csv", "memory://scratch", "/logs.csv"),
    ],
)  # fmt: skip
def test_an_object_is_named_by_openlineage_s_rules(url, namespace, name):
    assert dataset_name(url) == (namespace, name)


@pytest.mark.parametrize(
    ("url", "namespace", "name"),
    [
        ("https://api.kaleyra.io/v1/HX1/email/logs", "https://api.kaleyra.io", "/v1/HX1/email/logs"),
        ("https://API.EU.Kaleyra.io/v1/HX1/email/logs", "https://api.eu.kaleyra.io", "/v1/HX1/email/logs"),
        ("http://127.0.0.1:8080/v1/HX1/email/logs", "http://127.0.0.1:8080", "/v1/HX1/email/logs"),
        ("http://[::1]:9000/v1/HX1/email/logs", "http://[::1]:9000", "/v1/HX1/email/logs"),
        # A gateway with a path and credentials in the URL: the path stays, the credentials never show.
        ("https://user:secret@gateway.example.com:8443/kaleyra/v1/HX1/email/logs", "https://gateway.example.com:8443", "/kaleyra/v1/HX1/email/logs"),
    ],
)  # fmt: skip
def test_an_endpoint_is_named_by_its_host_and_its_path(url, namespace, name):
    assert dataset_name(url) == (namespace, name)


@pytest.mark.parametrize(
    ("host", "namespace", "name"),
    [
        ("https://API.EU.Kaleyra.io/", "https://api.eu.kaleyra.io", "/v1/HX1/email/logs"),
        ("https://gateway.example.com:8443/kaleyra/", "https://gateway.example.com:8443", "/kaleyra/v1/HX1/email/logs"),
    ],
)
def test_the_endpoint_read_is_named_from_the_connection_s_host(monkeypatch, host, namespace, name):
    connection = {"conn_type": "kaleyra_email", "host": host, "login": "HX1", "password": "key"}
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(connection))
    (read,) = KaleyraEmailFetchLogsOperator(task_id="logs").get_openlineage_facets_on_start().inputs
    assert (read.namespace, read.name) == (namespace, name)


def endpoint(emulator, path: str) -> Dataset:
    return Dataset(namespace=f"http://127.0.0.1:{emulator.port}", name=f"/v1/{emulator.sid}/email/{path}")


def written(path: Path, rows: int | None, fields: list[tuple[str, str | None]]) -> OutputDataset:
    """The output dataset of a local object, as OpenLineage names it."""
    schema = [SchemaDatasetFacetFields(name=name, type=kind) for name, kind in fields]
    return OutputDataset(
        namespace="file",
        name=str(path),
        facets={"schema": SchemaDatasetFacet(fields=schema)} if schema else {},
        outputFacets={"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=rows, size=path.stat().st_size)},
    )


def contents(path: Path, output_format: str) -> tuple[int, list[tuple[str, str | None]]]:
    """Rows and columns of an object, read back from it: a JSON Lines file has no fixed columns."""
    if output_format == "jsonl":
        return len(path.read_text().splitlines()), []
    if output_format == "csv":
        header, *rows = list(csv.reader(path.open(newline="")))
        return len(rows), [(name, None) for name in header]
    schema = pq.read_schema(path)
    return pq.read_metadata(path).num_rows, [(column.name, str(column.type)) for column in schema]


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize(
    ("operator_class", "endpoint_path"),
    [(KaleyraEmailFetchLogsOperator, "logs"), (KaleyraEmailFetchSummaryStatsOperator, "stats")],
)
def test_an_export_reports_the_endpoint_and_the_object_with_its_schema_and_statistics(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, operator_class, endpoint_path, output_format
):
    path = tmp_path / "lake" / f"2026-11-02.{output_format}"
    operator = operator_class(task_id="export", output_path=f"file://{path}", output_format=output_format)
    assert operator.get_openlineage_facets_on_start() == OperatorLineage(
        inputs=[endpoint(kaleyra_email_emulator, endpoint_path)]
    )

    operator.execute(DAILY_NOV_2)

    rows, fields = contents(path, output_format)
    assert rows == (300 if endpoint_path == "logs" else 1)
    assert operator.get_openlineage_facets_on_complete(None) == OperatorLineage(
        inputs=[endpoint(kaleyra_email_emulator, endpoint_path)], outputs=[written(path, rows, fields)]
    )


def test_an_xcom_export_reports_only_the_endpoint(kaleyra_email_connection, kaleyra_email_emulator):
    operator = KaleyraEmailFetchLogsOperator(task_id="logs")
    assert len(operator.execute(DAILY_NOV_2)) == 300
    assert operator.get_openlineage_facets_on_complete(None) == OperatorLineage(
        inputs=[endpoint(kaleyra_email_emulator, "logs")]
    )


def test_a_failed_export_reports_what_it_read_and_nothing_written(kaleyra_email_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(max_retries=0))
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{tmp_path}/logs.jsonl")

    with pytest.raises(Exception, match="HTTP 503"):
        operator.execute(DAILY_NOV_2)

    assert operator.get_openlineage_facets_on_complete(None) == OperatorLineage(
        inputs=[endpoint(kaleyra_email_emulator, "logs")]
    )


def test_the_report_reports_both_endpoints_and_both_objects(kaleyra_email_connection, kaleyra_email_emulator, tmp_path):
    operator = KaleyraEmailDeliverabilityReportOperator(task_id="report", output_path=f"file://{tmp_path}/r.html")

    operator.execute(DAILY_NOV_2)

    assert operator.get_openlineage_facets_on_complete(None) == OperatorLineage(
        inputs=[endpoint(kaleyra_email_emulator, "stats"), endpoint(kaleyra_email_emulator, "logs")],
        outputs=[written(tmp_path / "r.html", None, []), written(tmp_path / "r.png", None, [])],
    )


def test_an_export_to_s3_is_named_by_bucket_and_key(kaleyra_email_connection, kaleyra_email_emulator, monkeypatch):
    from tests.integration.s3_server import S3Server

    with S3Server() as server:
        server.client().create_bucket(Bucket="lake")
        monkeypatch.setenv("AIRFLOW_CONN_LINEAGE_S3", server.connection_json())
        operator = KaleyraEmailFetchSummaryStatsOperator(
            task_id="stats",
            output_path="s3://lake/kaleyra/stats/{from_date}.csv",
            output_conn_id="lineage_s3",
            output_format="csv",
        )
        operator.execute(DAILY_NOV_2)
        size = server.client().head_object(Bucket="lake", Key="kaleyra/stats/2026-11-02.csv")["ContentLength"]

    (output,) = operator.get_openlineage_facets_on_complete(None).outputs
    assert (output.namespace, output.name) == ("s3://lake", "kaleyra/stats/2026-11-02.csv")
    assert output.outputFacets["outputStatistics"] == OutputStatisticsOutputDatasetFacet(rowCount=1, size=size)


#: Runs the daily export example with dag.test() in a process of its own, so that the OpenLineage
#: provider reads its configuration (a file transport) and registers its listener as in a worker.
EXAMPLE_RUN = textwrap.dedent(
    """
    from datetime import datetime, timezone
    from tests.dags import run_dag, task_states
    from tests.integration.test_example_dags import load_examples

    dag = load_examples().get_dag("example_kaleyra_email_daily_export")
    print(task_states(run_dag(dag, datetime(2026, 11, 3, tzinfo=timezone.utc))))
    """
)


def without_client_fields(value):
    """An event's JSON without what names the producer and schema versions (``_producer``, ``_schemaURL``)."""
    if isinstance(value, dict):
        return {key: without_client_fields(item) for key, item in value.items() if not key.startswith("_")}
    if isinstance(value, list):
        return [without_client_fields(item) for item in value]
    return value


def test_the_openlineage_provider_emits_what_a_daily_export_read_and_wrote(
    airflow_db, kaleyra_email_connection, kaleyra_email_emulator, tmp_path
):
    events, lake = tmp_path / "openlineage.jsonl", tmp_path / "lake"
    environment = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_URL": f"file://{lake}",
    }
    subprocess.run([sys.executable, "-c", EXAMPLE_RUN], env=environment, cwd=PROJECT, check=True, timeout=300)

    complete = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event.get("eventType") == "COMPLETE" and "." in event["job"]["name"]:
            complete[event["job"]["name"].rsplit(".", 1)[1]] = without_client_fields(event)
    logs, stats = (
        lake / "logs" / "date=2026-11-02" / "logs.jsonl",
        lake / "summary_stats" / "date=2026-11-02" / "stats.csv",
    )
    origin = f"http://127.0.0.1:{kaleyra_email_emulator.port}"
    sid = kaleyra_email_emulator.sid
    assert complete["export_logs"]["inputs"] == [{"namespace": origin, "name": f"/v1/{sid}/email/logs", "facets": {}}]
    assert complete["export_logs"]["outputs"] == [
        {
            "namespace": "file",
            "name": str(logs),
            "facets": {},
            "outputFacets": {"outputStatistics": {"rowCount": 300, "size": logs.stat().st_size}},
        }
    ]
    header = next(csv.reader(stats.open(newline="")))
    assert complete["export_summary_stats"]["inputs"] == [
        {"namespace": origin, "name": f"/v1/{sid}/email/stats", "facets": {}}
    ]
    assert complete["export_summary_stats"]["outputs"] == [
        {
            "namespace": "file",
            "name": str(stats),
            "facets": {"schema": {"fields": [{"name": name, "fields": []} for name in header]}},
            "outputFacets": {"outputStatistics": {"rowCount": 1, "size": stats.stat().st_size}},
        }
    ]


WITHOUT_OPENLINEAGE = textwrap.dedent(
    """
    import sys
    import traceback
    from datetime import datetime, timezone

    # Neither the client nor the provider: only the provider's metadata, which Airflow's discovery reads.
    METADATA = ("airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info")
    refused = []

    class NoOpenLineage:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "openlineage" or (
                name.startswith("airflow.providers.openlineage") and name not in METADATA
            ):
                # Who asked: the innermost frame outside the import machinery (and this finder).
                frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
                refused.append((name, "airflow_provider_kaleyra_email" in frames[-1].filename))
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, NoOpenLineage())
    from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator

    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=sys.argv[1])
    summary = operator.execute({
        "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
        "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
    })
    print("RESULT", summary["rows"], [name for name, ours in refused if ours])
    """
)


def test_the_operators_import_and_run_without_openlineage(kaleyra_email_connection, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENLINEAGE, f"file://{tmp_path}/logs.jsonl"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT 300 []" in result.stdout
    assert len((tmp_path / "logs.jsonl").read_text().splitlines()) == 300
