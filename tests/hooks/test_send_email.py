"""KaleyraEmailHook.send_email: a send is not idempotent, so it is retried only when safe."""

from __future__ import annotations

import re

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAPIError, KaleyraEmailHook
from airflow_provider_kaleyra_email.testing import Faults
from tests.hooks.conftest import http_answer

SEND = {"from_email": "alerts@shop.example.com", "subject": "Daily report", "text_body": "All good."}


def posts(emulator):
    return [request for request in emulator.requests if request.method == "POST"]


def test_a_send_returns_one_id_per_recipient(hook, kaleyra_email_emulator):
    ids = hook.send_email(to=["a@example.com", "b@example.com"], html_body="<b>hi</b>", message_type="MKT", **SEND)

    assert [i.rsplit(":", 1)[1] for i in ids] == ["1", "2"]
    assert len({i.rsplit(":", 1)[0] for i in ids}) == 1
    assert [r.status for r in posts(kaleyra_email_emulator)] == [202]


def test_a_429_is_retried_because_nothing_was_sent(hook, kaleyra_email_emulator):
    kaleyra_email_emulator.set_faults(Faults(retry_after=0.05))
    kaleyra_email_emulator.queue_faults("429")

    ids = hook.send_email(to="a@example.com", **SEND)

    assert len(ids) == 1
    assert [r.status for r in posts(kaleyra_email_emulator)] == [429, 202]


@pytest.mark.parametrize("fault", ["503", "drop_mid_body"])
def test_an_ambiguous_failure_is_not_retried(hook, kaleyra_email_emulator, fault):
    kaleyra_email_emulator.queue_faults(fault)

    with pytest.raises(KaleyraEmailAPIError, match="not retried, because Kaleyra may have acted on it already"):
        hook.send_email(to="a@example.com", **SEND)

    assert len(posts(kaleyra_email_emulator)) == 1


def test_a_refused_connection_is_retried(kaleyra_email_emulator, monkeypatch):
    """Nothing listens on the first address: the hook may try again (and gives up cleanly)."""
    kaleyra_email_emulator.stop()
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json())
    hook = KaleyraEmailHook(max_retries=2, retry_wait_initial=0.01)

    with pytest.raises(KaleyraEmailAPIError, match=r"gave up after 3 attempt\(s\)"):
        hook.send_email(to="a@example.com", **SEND)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"to": []}, "to=[]"),
        ({"to": "not an address"}, "to[0]='not an address'"),
        ({"to": ["ok@example.com", "bad"]}, "to[1]='bad'"),
        ({"from_email": ""}, "from_email=''"),
        ({"subject": "  "}, "subject='  '"),
        ({"text_body": None}, "give at least one body"),
        ({"message_type": ""}, "message_type=''"),
    ],
)
def test_bad_sends_are_refused_before_anything_goes_out(hook, kaleyra_email_emulator, overrides, named):
    arguments = {"to": "a@example.com", **SEND, **overrides}
    with pytest.raises(ValueError, match=re.escape(named)):
        hook.send_email(**arguments)
    assert list(kaleyra_email_emulator.requests) == []


def test_only_string_ids_are_returned_and_never_an_echo_of_the_key(scripted_server, caplog, capfd):
    # An id that is an object could hold anything the server echoed; it is not returned (nor put in XCom).
    body = b'{"data": [{"message_id": "x:1"}, {"message_id": {"k": "%s"}}, {"message_id": "%s:2"}], "error": {}}'
    key = scripted_server(lambda request, sent: http_answer("202 Accepted", body % (sent.encode(), sent.encode())))

    ids = KaleyraEmailHook(max_retries=0).send_email(
        from_email="a@example.com", to="b@example.com", subject="s", text_body="t"
    )

    assert ids == ["x:1", "***:2"]
    logged = caplog.text + "".join(capfd.readouterr())
    assert "1 of the 3 entries" in logged
    assert key not in logged
