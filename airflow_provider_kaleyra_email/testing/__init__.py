"""
A Kaleyra Email API emulator for tests, demos and benchmarks: a real HTTP server on loopback.

``KaleyraEmailEmulator`` serves a seeded synthetic data set (:class:`SyntheticDataset`), can
misbehave on purpose (:class:`Faults`, one-off ``FAULT_KINDS``) and can lie persistently about
its pages (:class:`Quirks`). It needs only the standard library and ``msgspec``, so it runs
wherever the provider does. DAG authors opt in to the pytest fixtures ``kaleyra_email_emulator``
and ``kaleyra_email_connection`` with one line in their ``conftest.py``:
``pytest_plugins = ["airflow_provider_kaleyra_email.testing.pytest_plugin"]``. From a shell:
``python -m airflow_provider_kaleyra_email.testing --port 8080``.
"""

from __future__ import annotations

from airflow_provider_kaleyra_email.testing._dataset import SyntheticDataset
from airflow_provider_kaleyra_email.testing._server import (
    DEFAULT_API_KEY,
    DEFAULT_SID,
    FAULT_KINDS,
    OMIT,
    Faults,
    KaleyraEmailEmulator,
    Quirks,
    RecordedRequest,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SID",
    "FAULT_KINDS",
    "OMIT",
    "Faults",
    "KaleyraEmailEmulator",
    "Quirks",
    "RecordedRequest",
    "SyntheticDataset",
]
