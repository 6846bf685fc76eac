"""
pytest fixtures for testing DAGs against the emulator; opt in from your ``conftest.py``.

``pytest_plugins = ["airflow_provider_kaleyra_email.testing.pytest_plugin"]`` loads them; nothing
loads into a pytest session by itself.

``kaleyra_email_emulator`` starts a fresh emulator for one test; configure it with the
``kaleyra_email_emulator`` marker, whose keyword arguments go to ``KaleyraEmailEmulator``::

    @pytest.mark.kaleyra_email_emulator(rows_per_day=500, days=3, timezone="Asia/Kolkata")
    def test_my_dag(kaleyra_email_connection): ...

``kaleyra_email_connection`` also points ``AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT`` at it and
returns the connection id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kaleyra_email.testing._server import KaleyraEmailEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _pytest.fixtures import FixtureRequest

MARKER = "kaleyra_email_emulator"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): options for the Kaleyra Email emulator fixture (KaleyraEmailEmulator)",
    )


@pytest.fixture
def kaleyra_email_emulator(request: FixtureRequest) -> Iterator[KaleyraEmailEmulator]:
    """Yield a running emulator on a free loopback port, stopped after the test."""
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        options.update(marker.kwargs)
    with KaleyraEmailEmulator(**options) as emulator:
        yield emulator


@pytest.fixture
def kaleyra_email_connection(kaleyra_email_emulator: KaleyraEmailEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``kaleyra_email_default`` pointed at the emulator through ``AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT``."""
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json())
    return "kaleyra_email_default"
