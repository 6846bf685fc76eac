"""The services themselves: up, and listening on loopback only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from tests.system.services import AirflowStack

pytestmark = pytest.mark.timeout(240, method="signal")


def test_every_service_runs_and_listens_on_loopback_only(airflow_stack: AirflowStack) -> None:
    airflow_stack.check_alive()
    listening: dict[str, set[str]] = {}
    for name, service in airflow_stack.services.items():
        root = psutil.Process(service.pid)
        for process in [root, *root.children(recursive=True)]:
            try:
                sockets = process.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            for sock in sockets:
                if sock.status == psutil.CONN_LISTEN:
                    listening.setdefault(name, set()).add(f"{sock.laddr.ip}:{sock.laddr.port}")

    assert {address.rsplit(":", 1)[0] for addresses in listening.values() for address in addresses} == {"127.0.0.1"}
    # Only the API server and the emulator serve anything: no worker or trigger log server.
    assert sorted(listening) == ["api-server", "emulator"], listening
    assert listening["api-server"] == {airflow_stack.api_url.removeprefix("http://")}
    assert listening["emulator"] == {airflow_stack.emulator.base_url.removeprefix("http://")}
