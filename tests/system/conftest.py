"""
System tests: the example DAGs on real Airflow 3 services (API server, scheduler, DAG processor, triggerer).

They start processes and take minutes, so they run only when asked for::

    KALEYRA_SYSTEM_TESTS=1 .venv/bin/python -m pytest tests/system

Anywhere else (the normal ``pytest`` run, Airflow 2) every test here is skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.system.services import AirflowStack, start_stack

if TYPE_CHECKING:
    from collections.abc import Iterator

HERE = Path(__file__).resolve().parent
ENABLE = "KALEYRA_SYSTEM_TESTS"


def _skip_reason() -> str | None:
    if os.environ.get(ENABLE) != "1":
        return f"system tests start real Airflow services: set {ENABLE}=1 to run them"
    try:
        airflow_version = version("apache-airflow")
    except PackageNotFoundError:
        return "Airflow is not installed"
    if int(airflow_version.split(".")[0]) < 3:
        return f"system tests need Airflow 3 (REST API v2, DAG processor, run without logical date); this is {airflow_version}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason is None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


def _leftovers(stack: AirflowStack) -> dict[str, int]:
    """Services whose process group still has a member a few seconds after the stop, with its id."""
    deadline = time.monotonic() + 5
    while True:
        left = {}
        for name, service in stack.services.items():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.pid, 0)
                left[name] = service.pid
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """The running services, stopped (and checked to be gone) at the end of the session."""
    stack = start_stack(tmp_path_factory.mktemp("system"))
    try:
        yield stack
    finally:
        stack.stop()
        left = _leftovers(stack)
        for group in left.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        assert not left, f"process groups left running after the stop (service: group id): {left}"
