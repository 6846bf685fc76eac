from __future__ import annotations

from datetime import date

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook

DAY = date(2026, 11, 2)


@pytest.fixture
def hook(kaleyra_email_connection: str) -> KaleyraEmailHook:
    """A hook on the emulator with backoffs short enough for tests."""
    return KaleyraEmailHook(kaleyra_email_connection, retry_wait_initial=0.01, retry_wait_max=0.05)
