"""``POST /api/v2/connections/test`` on the real API server: the hook's ``test_connection`` as the UI runs it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.system.services import free_port

if TYPE_CHECKING:
    from tests.system.services import AirflowStack

pytestmark = pytest.mark.timeout(240, method="signal")


def connection_test(stack: AirflowStack, connection_id: str, **fields: Any) -> dict[str, Any]:
    response = stack.api.post("/api/v2/connections/test", json={"connection_id": connection_id, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_right_key_connects(airflow_stack: AirflowStack) -> None:
    emulator = airflow_stack.emulator

    answer = connection_test(airflow_stack, "kaleyra_email_new", **emulator.connection())

    assert answer["status"] is True, answer
    assert emulator.base_url in answer["message"]
    assert emulator.sid in answer["message"]
    assert emulator.api_key not in answer["message"]


def test_a_wrong_key_is_rejected_without_showing_it(airflow_stack: AirflowStack) -> None:
    wrong_key = "wrong-key-" + "7" * 24

    answer = connection_test(
        airflow_stack, "kaleyra_email_new", **airflow_stack.emulator.connection(password=wrong_key)
    )

    assert answer["status"] is False, answer
    assert "rejected the credentials" in answer["message"]
    assert wrong_key not in answer["message"]
    assert wrong_key[10:] not in answer["message"]  # nor its tail


def test_a_dead_host_cannot_be_reached(airflow_stack: AirflowStack) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # closed a moment ago: connection refused

    answer = connection_test(airflow_stack, "kaleyra_email_new", **airflow_stack.emulator.connection(host=dead))

    assert answer["status"] is False, answer
    assert answer["message"].startswith(f"Cannot reach {dead}"), answer
    assert airflow_stack.emulator.api_key not in answer["message"]


def test_the_stored_connection_is_tested_with_its_stored_key(airflow_stack: AirflowStack) -> None:
    """The UI's Test button on a saved connection: the body leaves the password out, the API fills it in."""
    stored = airflow_stack.emulator.connection()
    fields = {name: stored[name] for name in ("conn_type", "host", "login")} | {"extra": json.dumps({})}

    answer = connection_test(airflow_stack, "kaleyra_email_default", **fields)

    assert answer["status"] is True, answer
