"""The emulator's command line: ``--delivery-seconds`` keeps sent mail in flight as long as asked."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.testing.__main__ import emulator_from, parse_args


@pytest.fixture
def cli_emulator(monkeypatch):
    """Serve what ``--port 0 --delivery-seconds 30`` would, on a clock the test moves; yield the clock."""
    emulator = emulator_from(parse_args(["--port", "0", "--rows-per-day", "10", "--delivery-seconds", "30"]))
    now = [datetime.now(timezone.utc)]
    emulator.dataset.clock = lambda: now[0]
    with emulator:
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", emulator.connection_json())
        yield now


def statuses(hook, ids):
    return [hook.get_message_stats(message_id)["recipients"][0]["status"] for message_id in ids]


def test_sent_mail_stays_in_flight_for_the_delivery_seconds(cli_emulator):
    now = cli_emulator
    hook = KaleyraEmailHook(max_retries=0)
    to = ["ada@example.com", "bounce@example.com", "defer@example.com", "slow@example.com"]
    ids = hook.send_email(from_email="a@shop.example.com", to=to, subject="s", text_body="t")
    sent = now[0]

    def at(seconds):
        now[0] = sent + timedelta(seconds=seconds)
        return statuses(hook, ids)

    assert at(1) == ["ACCEPTED"] * 4
    assert at(29) == ["ACCEPTED"] * 4, "still in flight just before --delivery-seconds"
    assert at(31) == ["DELIVERED", "BOUNCE", "DEFERRED", "ACCEPTED"]
    assert at(91) == ["DELIVERED", "BOUNCE", "DELIVERED", "ACCEPTED"]
    assert at(121) == ["OPEN", "BOUNCE", "DELIVERED", "ACCEPTED"]
    assert at(301) == ["OPEN", "BOUNCE", "DELIVERED", "DELIVERED"]


def test_the_default_is_one_second():
    args = parse_args([])
    assert args.delivery_seconds == 1.0
    assert emulator_from(args).dataset.send_time_scale == pytest.approx(0.05)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_the_delivery_seconds_must_be_positive(value, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--delivery-seconds", value])
    assert "--delivery-seconds" in capsys.readouterr().err
