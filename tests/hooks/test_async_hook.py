"""KaleyraEmailAsyncHook against the emulator: the same answers, and the same reading of failures, as the sync hook."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import (
    KaleyraEmailAPIError,
    KaleyraEmailAsyncHook,
    KaleyraEmailHook,
    KaleyraEmailRetriesExhaustedError,
)
from airflow_provider_kaleyra_email.testing import DEFAULT_API_KEY, Faults

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


@pytest.fixture
def lookups(monkeypatch):
    """Count the connection lookups the async hooks make (Airflow's own lookup still answers)."""
    from airflow_provider_kaleyra_email.hooks import _async as module

    calls: list[str] = []
    real = module.get_async_connection

    async def counted(conn_id):
        calls.append(conn_id)
        return await real(conn_id)

    monkeypatch.setattr(module, "get_async_connection", counted)
    return calls


@pytest.mark.asyncio
async def test_hooks_on_one_connection_share_a_lookup_a_client_and_a_cap_on_requests_in_flight(
    kaleyra_email_emulator, monkeypatch, lookups
):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(max_concurrency=2))
    kaleyra_email_emulator.set_faults(Faults(latency=0.2))
    message_id = synthetic_id(kaleyra_email_emulator)
    hooks = [KaleyraEmailAsyncHook() for _ in range(6)]

    started = time.monotonic()
    answers = await asyncio.gather(*(hook.get_message_stats(message_id) for hook in hooks))
    elapsed = time.monotonic() - started

    assert all(answer["message_id"] == message_id for answer in answers)
    assert lookups == ["kaleyra_email_default"]
    clients = {id((await hook._shared().client())[0]) for hook in hooks}
    assert len(clients) == 1
    # Two at a time, 0.2 s each: three rounds, and the server saw them arrive two by two.
    assert elapsed >= 0.55
    arrivals = sorted(request.at for request in kaleyra_email_emulator.requests)
    assert arrivals[2] - arrivals[0] >= 0.15
    assert arrivals[4] - arrivals[2] >= 0.15
    client, _ = await hooks[0]._shared().client()
    for hook in hooks:
        await hook.aclose()
    assert client.is_closed, "the last hook to leave closes the shared client"


@pytest.mark.asyncio
async def test_a_429_pauses_every_hook_on_the_connection_for_its_retry_after(kaleyra_email_emulator, lookups):
    kaleyra_email_emulator.set_faults(Faults(retry_after=1.0))
    message_id = synthetic_id(kaleyra_email_emulator)
    first, second = KaleyraEmailAsyncHook(), KaleyraEmailAsyncHook()
    kaleyra_email_emulator.queue_faults("429")
    try:
        with pytest.raises(KaleyraEmailRetriesExhaustedError, match="429"):
            await first.get_message_stats(message_id)
        started = time.monotonic()
        answer = await second.get_message_stats(message_id)
        waited = time.monotonic() - started
    finally:
        await first.aclose()
        await second.aclose()

    assert answer["message_id"] == message_id
    assert waited >= 0.9, "the other hook waited out the Retry-After before asking"
    assert lookups == ["kaleyra_email_default"]


@pytest.mark.asyncio
async def test_a_hook_that_comes_after_the_last_one_left_looks_the_connection_up_again(kaleyra_email_emulator, lookups):
    message_id = synthetic_id(kaleyra_email_emulator)
    for _ in range(2):
        hook = KaleyraEmailAsyncHook()
        await hook.get_message_stats(message_id)
        await hook.aclose()
    assert lookups == ["kaleyra_email_default"] * 2, "a rotated key is read by the next wait"
