"""
Real Airflow 3 services on loopback, for the system tests: API server, scheduler, DAG processor, triggerer and the emulator.

Everything lives under one temporary directory: ``AIRFLOW_HOME`` (SQLite, logs), the lake that
the example DAGs write to (``file://``), and one stdout/stderr file per process. Every process
starts in a session (process group) of its own and is stopped by its own pid: SIGTERM, then
SIGKILL to its process group after a grace period, so nothing is left running when a test
fails; on Linux each also gets SIGTERM if the test process dies without its teardown.

Nothing here imports Airflow: the services run in ``sys.executable``'s environment as
subprocesses, and the tests talk to them through the REST API only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

import httpx

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = PROJECT / "example_dags"

#: The emulator's traffic: every day from ``today - DATASET_DAYS + 1`` to today has this many rows.
DATASET_DAYS = 41
ROWS_PER_DAY = 300
#: How often the send-and-wait example's sensor (and its trigger) asks for the status.
POKE_INTERVAL = 1.0
#: How long a sent message stays ACCEPTED (``--delivery-seconds``): long enough that the sensor's
#: first check, a few seconds after the send, finds it undelivered and defers.
DELIVERY_SECONDS = 15.0
#: The pool the backfill example's tasks take a slot of (the scheduler leaves them unscheduled without it).
POOLS = {"kaleyra_email_api": 4}

#: Settings that make a small local stack react in about a second instead of tens.
SPEED_SETTINGS = {
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    # Parse the examples once when the DAG processor starts; nothing changes them afterwards.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: SIGTERM the service when the test process dies without its teardown (SIGKILL, a crash)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


#: Passed to Popen as preexec_fn on Linux only.
DIE_WITH_PARENT = _die_with_parent if sys.platform.startswith("linux") else None


def spawn(name: str, argv: list[str], *, cwd: Path, logs: Path, env: dict[str, str] | None = None) -> Service:
    """Start ``argv`` in its own process group (stopped by its pid), its output in ``logs/<name>.log``."""
    log_path = logs / f"{name}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=DIE_WITH_PARENT,
    )
    return Service(name, process, log_path, log_file)


def free_port() -> int:
    """A loopback port that nothing listened on a moment ago (and nothing listens on now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One running process, its output file, and how to stop it."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def terminate(self) -> None:
        """Ask the process to stop: SIGTERM to its pid."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def reap(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the process, then SIGKILL its process group, leftovers included."""
        try:
            self.process.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # The process led its own group (start_new_session): children that outlived it (task
        # runners, parsing processes) are still in that group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.log_file.close()

    def stop(self, grace: float = 20.0) -> None:
        self.terminate()
        self.reap(grace)


@dataclass
class Emulator:
    """The emulator process's own description of itself (what ``--port 0`` picked, its dataset)."""

    base_url: str
    sid: str
    api_key: str
    first_day: date
    last_day: date
    rows_per_day: int

    def connection(self, **overrides: Any) -> dict[str, Any]:
        return {"conn_type": "kaleyra_email", "host": self.base_url, "login": self.sid, "password": self.api_key} | (
            overrides
        )


@dataclass
class AirflowStack:
    """The running services and what the tests need to talk to them."""

    root: Path
    home: Path
    lake: Path
    logs: Path
    api_url: str
    env: dict[str, str]
    emulator: Emulator
    services: dict[str, Service] = field(default_factory=dict)
    client: httpx.Client | None = None

    @property
    def api(self) -> httpx.Client:
        assert self.client is not None, "the API server is not up"
        return self.client

    def start_service(self, name: str, *args: str, env: dict[str, str] | None = None) -> Service:
        service = spawn(name, [sys.executable, *args], cwd=self.root, logs=self.logs, env=env or self.env)
        self.services[name] = service
        return service

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every process at once, SIGKILL what is left after ``grace`` seconds; survives dead ones."""
        if self.client is not None:
            self.client.close()
            self.client = None
        services = list(reversed(self.services.values()))
        for service in services:
            service.terminate()
        deadline = time.monotonic() + grace
        for service in services:
            try:
                service.reap(deadline - time.monotonic())
            except Exception as exc:  # stop the others whatever happened to this one
                print(f"stopping {service.name} (pid {service.pid}) failed: {exc!r}", file=sys.stderr)

    def check_alive(self) -> None:
        """Fail with the log of any service that exited."""
        for service in self.services.values():
            if not service.running():
                raise RuntimeError(
                    f"{service.name} (pid {service.pid}) exited with {service.process.returncode}:\n{service.tail()}"
                )

    def diagnostics(self, lines: int = 40) -> str:
        """The end of every service's output, for a failure message."""
        return "\n".join(f"--- {name} ({s.log_path}) ---\n{s.tail(lines)}" for name, s in self.services.items())


def base_env(home: Path) -> dict[str, str]:
    """The environment without any Airflow setting the caller had (the test suite's own, a user's)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "KALEYRA_EMAIL_"))
        and key not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
    } | {"AIRFLOW_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def start_emulator(stack_root: Path, logs: Path, env: dict[str, str], today: date) -> tuple[Service, Emulator]:
    """Start ``python -m airflow_provider_kaleyra_email.testing`` on a free port; read what it printed."""
    first_day = today - timedelta(days=DATASET_DAYS - 1)
    api_key = "system-test-" + secrets.token_hex(12)
    service = spawn(
        "emulator",
        [
            sys.executable,
            "-m",
            "airflow_provider_kaleyra_email.testing",
            "--port",
            "0",
            "--api-key",
            api_key,
            "--start-date",
            first_day.isoformat(),
            "--days",
            str(DATASET_DAYS),
            "--rows-per-day",
            str(ROWS_PER_DAY),
            "--delivery-seconds",
            str(DELIVERY_SECONDS),
        ],
        cwd=stack_root,
        logs=logs,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in service.log().splitlines():
            if line.startswith("{"):
                info = json.loads(line)
                return service, Emulator(
                    base_url=info["base_url"],
                    sid=info["sid"],
                    api_key=api_key,
                    first_day=date.fromisoformat(info["first_day"]),
                    last_day=date.fromisoformat(info["last_day"]),
                    rows_per_day=int(info["rows_per_day"]),
                )
        if not service.running():
            break
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"the emulator did not start:\n{service.log()}")


def airflow_env(base: dict[str, str], home: Path, lake: Path, api_port: int, emulator: Emulator) -> dict[str, str]:
    api_url = f"http://127.0.0.1:{api_port}"
    bundles = [
        {
            "name": "kaleyra_examples",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(EXAMPLE_DAGS)},
        }
    ]
    return (
        base
        | {
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"airflow_provider_kaleyra_email\..*",
            "AIRFLOW__CORE__FERNET_KEY": urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # Nothing listens on all interfaces: no health-check server, no log servers (the
            # scheduler and triggerer also get --skip-serve-logs), and their ports on loopback.
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Only the runs the tests trigger: no scheduled run when a DAG is unpaused.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # Active from their first parse: an asset watcher is registered only for an unpaused DAG,
            # when its file is parsed (and the files are parsed once here).
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT": json.dumps(emulator.connection()),
            "AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_URL": lake.as_uri(),
            "AIRFLOW_VAR_KALEYRA_EMAIL_SUPPRESSION_LIST": (lake / "suppressed.txt").as_uri(),
            "KALEYRA_EMAIL_EXAMPLE_POKE_INTERVAL": str(POKE_INTERVAL),
        }
        | SPEED_SETTINGS
    )


def start_stack(root: Path, startup_timeout: float = 150.0) -> AirflowStack:
    """Start everything, wait until the API answers and every example DAG is parsed; stop everything on failure."""
    home, lake, logs = root / "airflow-home", root / "lake", root / "logs"
    for path in (home, lake, logs):
        path.mkdir(parents=True, exist_ok=True)
    base = base_env(home)
    emulator_service, emulator = start_emulator(root, logs, base, datetime.now(timezone.utc).date())
    api_port = free_port()
    env = airflow_env(base, home, lake, api_port, emulator)
    stack = AirflowStack(
        root=root,
        home=home,
        lake=lake,
        logs=logs,
        api_url=f"http://127.0.0.1:{api_port}",
        env=env,
        emulator=emulator,
        services={"emulator": emulator_service},
    )
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        (logs / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
        stack.start_service("api-server", "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(api_port))
        stack.start_service("dag-processor", "-m", "airflow", "dag-processor")
        stack.start_service("scheduler", "-m", "airflow", "scheduler", "--skip-serve-logs")
        stack.start_service("triggerer", "-m", "airflow", "triggerer", "--skip-serve-logs")
        stack.client = connect(stack, startup_timeout)
        wait_for_dags(stack, startup_timeout)
        return stack
    except BaseException:
        stack.stop()
        raise


def connect(stack: AirflowStack, timeout: float) -> httpx.Client:
    """Wait for the API server; return a client that sends a JWT from ``GET /auth/token`` (all admins)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.api_url, timeout=10) as anonymous:
        while True:
            stack.check_alive()
            try:
                response = anonymous.get("/auth/token")
                if response.status_code == 201:
                    token = response.json()["access_token"]
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not answer in {timeout:g} s:\n{stack.diagnostics()}")
            time.sleep(0.5)
    return httpx.Client(base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {token}"})


EXAMPLE_DAG_IDS = sorted(path.stem for path in EXAMPLE_DAGS.glob("example_*.py"))


def wait_for_dags(
    stack: Any, timeout: float, *, pools: dict[str, int] = POOLS, active: Iterable[str] = EXAMPLE_DAG_IDS
) -> None:
    """Wait until the DAG processor has serialized every example (and failed on none); create ``pools``, unpause ``active``."""
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        errors = stack.api.get("/api/v2/importErrors").raise_for_status().json()
        if errors["total_entries"]:
            raise RuntimeError(f"import errors in the examples: {json.dumps(errors['import_errors'], indent=2)}")
        dags = stack.api.get("/api/v2/dags", params={"limit": 100}).raise_for_status().json()["dags"]
        if sorted(d["dag_id"] for d in dags) == EXAMPLE_DAG_IDS:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the examples were not all parsed in {timeout:g} s:\n{stack.diagnostics()}")
        time.sleep(0.5)
    for pool, slots in pools.items():
        stack.api.post("/api/v2/pools", json={"name": pool, "slots": slots}).raise_for_status()
    for dag_id in active:
        stack.api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
