"""KaleyraEmailAsyncHook against the emulator: the same answers, and the same reading of failures, as the sync hook."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import (
    KaleyraEmailAPIError,
    KaleyraEmailAsyncHook,
    KaleyraEmailHook,
    KaleyraEmailRetriesExhaustedError,
)
from airflow_provider_kaleyra_email.testing import DEFAULT_API_KEY

pytestmark = pytest.mark.usefixtures("kaleyra_email_connection")


def sent(emulator, *to: str) -> str:
    """The first message id of a send (one per recipient batch)."""
    return emulator.dataset.send(from_mail="r@shop.example.com", to=list(to), subject="s").message_ids()[0]


def synthetic_id(emulator) -> str:
    day = emulator.dataset.dates()[0]
    return emulator.dataset.message_id(day, 0)


@pytest.mark.asyncio
async def test_get_message_stats_matches_the_sync_hook(kaleyra_email_emulator):
    message_id = synthetic_id(kaleyra_email_emulator)
    hook = KaleyraEmailAsyncHook()
    try:
        got = await hook.get_message_stats(message_id)
    finally:
        await hook.aclose()

    assert got == KaleyraEmailHook().get_message_stats(message_id)
    assert got["message_id"] == message_id
    (request, _) = kaleyra_email_emulator.requests
    assert request.api_key_ok


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("503", KaleyraEmailRetriesExhaustedError, 503),
        ("500", KaleyraEmailRetriesExhaustedError, 500),
        ("429", KaleyraEmailRetriesExhaustedError, 429),
        ("drop", KaleyraEmailRetriesExhaustedError, None),
        ("drop_mid_body", KaleyraEmailRetriesExhaustedError, None),
        ("truncated", KaleyraEmailRetriesExhaustedError, None),
        ("html", KaleyraEmailRetriesExhaustedError, None),
        ("error200", KaleyraEmailAPIError, 200),
        ("redirect", KaleyraEmailAPIError, 302),
    ],
)
async def test_failures_read_the_same_as_in_the_sync_hook(kaleyra_email_emulator, fault, error, status):
    """One interpretation (interpret_response) for both: same class, same status, for every fault."""
    message_id = synthetic_id(kaleyra_email_emulator)
    kaleyra_email_emulator.queue_faults(fault, fault)
    hook = KaleyraEmailAsyncHook(max_retries=0)

    with pytest.raises(KaleyraEmailAPIError) as in_async:
        await hook.get_message_stats(message_id)
    await hook.aclose()
    with pytest.raises(KaleyraEmailAPIError) as in_sync:
        KaleyraEmailHook(max_retries=0).get_message_stats(message_id)

    assert type(in_async.value) is type(in_sync.value) is error
    assert in_async.value.status_code == in_sync.value.status_code == status
    assert in_async.value.endpoint == in_sync.value.endpoint
    assert len(kaleyra_email_emulator.requests) == 2, "one attempt each, no retries"


@pytest.mark.asyncio
async def test_an_unknown_id_is_a_404(kaleyra_email_emulator):
    hook = KaleyraEmailAsyncHook()
    with pytest.raises(KaleyraEmailAPIError) as error:
        await hook.get_message_stats("8f0c2d4e-0000-4000-8000-000000000000:1")
    await hook.aclose()
    assert error.value.status_code == 404
    assert not isinstance(error.value, KaleyraEmailRetriesExhaustedError)


@pytest.mark.asyncio
async def test_the_connection_extras_apply(kaleyra_email_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timeout=7))
    config = await KaleyraEmailAsyncHook().get_config()
    assert config.timeout == 7
    assert config.base_url == kaleyra_email_emulator.base_url
    assert DEFAULT_API_KEY not in repr(config)
    assert DEFAULT_API_KEY not in repr(KaleyraEmailAsyncHook())


@pytest.mark.asyncio
async def test_a_bad_message_id_is_refused_before_any_request(kaleyra_email_emulator):
    with pytest.raises(ValueError, match="message_id='a/b'"):
        await KaleyraEmailAsyncHook().get_message_stats("a/b")
    assert len(kaleyra_email_emulator.requests) == 0


@pytest.mark.asyncio
async def test_a_sent_message_reads_back(kaleyra_email_emulator):
    message_id = sent(kaleyra_email_emulator, "ops@example.com", "cfo@example.com")
    await asyncio.sleep(0.6)  # past the emulator's visibility delay
    hook = KaleyraEmailAsyncHook()
    message = await hook.get_message_stats(message_id)
    await hook.aclose()
    assert [r["to"] for r in message["recipients"]] == ["ops@example.com"]
    assert json.loads(json.dumps(message)) == message


@pytest.mark.asyncio
async def test_the_async_hook_retries_with_the_sync_hooks_policy(kaleyra_email_emulator):
    message_id = synthetic_id(kaleyra_email_emulator)
    kaleyra_email_emulator.queue_faults("503", "drop")
    hook = KaleyraEmailAsyncHook(max_retries=2, retry_wait_initial=0.01, retry_wait_max=0.02)
    try:
        got = await hook.get_message_stats(message_id)
    finally:
        await hook.aclose()
    assert got["message_id"] == message_id
    assert [r.fault for r in kaleyra_email_emulator.requests] == ["503", "drop", None]
