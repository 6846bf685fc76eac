"""The emulator's command line: ``--delivery-seconds`` keeps sent mail in flight as long as asked; bad values exit 2."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.testing.__main__ import emulator_from, main, parse_args


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


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("--days", "0"),
        ("--days", "two"),
        ("--rows-per-day", "-5"),
        ("--timezone", "Mars/Base"),
        ("--timezone", "../../etc/passwd"),
        ("--port", "-1"),
        ("--port", "65536"),
        ("--latency-ms", "-20"),
        ("--retry-after", "nan"),
        ("--rate-limit", "1.5"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_argument_and_value(argument, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([argument, value])

    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert f"argument {argument}: {value!r}" in errors[0]


def test_a_port_in_use_exits_2_naming_the_port(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["--port", str(port), "--rows-per-day", "1"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if "error:" in line]
    assert f"--port {port}" in error
    assert "in use" in error


def test_the_default_port_is_none_of_airflows():
    port = parse_args([]).port
    assert port not in {8080, 8793, 8794, 5555}  # api-server / webserver, log servers, Flower
    assert 1024 < port < 32768  # no root needed, below Linux's ephemeral range
