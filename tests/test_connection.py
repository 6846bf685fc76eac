"""From an Airflow connection to the settings the hook uses."""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import pytest

from airflow_provider_kaleyra_email.connection import KNOWN_EXTRAS, ConnectionConfig, config_of
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook

KEY = "secret-api-key-9f8e7d"


def config_from_connection(*, conn_id, extra, **fields):
    """What a hook does with an Airflow ``Connection`` that has these fields and (parsed) extras."""
    return config_of(SimpleNamespace(**fields), extra, conn_id=conn_id, overrides={})


def config(host=None, port=None, schema=None, **extra):
    return config_from_connection(
        conn_id="c", login="HXSID", password=KEY, host=host, port=port, schema=schema, extra=extra
    )


@pytest.mark.parametrize(
    ("region", "url"),
    [
        (None, "https://api.kaleyra.io"),
        ("in", "https://api.in.kaleyra.io"),
        ("sg", "https://api.ap.kaleyra.io"),
        ("eu", "https://api.eu.kaleyra.io"),
        ("EU", "https://api.eu.kaleyra.io"),
        (" IN ", "https://api.in.kaleyra.io"),
        (" ", "https://api.kaleyra.io"),
    ],
)
def test_region_chooses_the_pod(region, url):
    assert config(region=region).base_url == url


def test_an_explicit_host_wins_over_region():
    assert config("https://proxy.example.com/kaleyra/", region="in").base_url == "https://proxy.example.com/kaleyra"


def test_a_bare_host_takes_schema_and_port():
    assert config("api.kaleyra.io").base_url == "https://api.kaleyra.io"
    assert config("127.0.0.1", port=8080, schema="http").base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("host", ["http://api.kaleyra.io", "http://10.1.2.3:8080"])
def test_plain_http_is_refused_off_loopback(host):
    with pytest.raises(ValueError, match="plain http") as error:
        config(host)
    assert host in str(error.value)
    assert config(host, allow_insecure_http="true").base_url == host


@pytest.mark.parametrize("host", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_is_fine_on_loopback(host):
    assert config(host).base_url == host


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"login": ""}, "no account SID"),
        ({"password": None}, "no API key"),
        ({"host": "ftp://files.example.com"}, "not an http(s) URL"),
        ({"host": "https://user:pw@api.kaleyra.io"}, "must not carry credentials"),
        (
            {"host": "https://user:s3cret@api.kaleyra.io:99999"},
            "host='https://***@api.kaleyra.io:99999' is not a valid",
        ),
        ({"host": "ftp://user:s3cret@files.example.com"}, "host='ftp://***@files.example.com' is not an http(s)"),
        ({"extra": {"region": "us"}}, "region='us'"),
        ({"extra": {"timezone": "IST"}}, "timezone='IST'"),
        ({"extra": {"page_size": "500"}}, "page_size='500'"),
        ({"extra": {"timeout": "soon"}}, "timeout='soon'"),
        ({"extra": {"max_concurrency": 0}}, "max_concurrency=0"),
        ({"extra": {"max_retries": -1}}, "max_retries=-1"),
    ],
)
def test_bad_connections_are_named(fields, fragment):
    arguments = {
        "conn_id": "c",
        "login": "HXSID",
        "password": KEY,
        "host": None,
        "port": None,
        "schema": None,
        "extra": {},
    }
    arguments.update(fields)
    with pytest.raises(ValueError, match=re.escape(fragment)) as error:
        config_from_connection(**arguments)
    assert KEY not in str(error.value)
    assert "s3cret" not in str(error.value)


def test_extras_from_a_uri_are_strings_and_form_fields_may_be_prefixed():
    settings = config(timeout="12.5", max_retries="3", page_size="40", extra__kaleyra_email__max_concurrency="2")
    assert (settings.timeout, settings.max_retries, settings.page_size, settings.max_concurrency) == (
        12.5,
        3,
        40,
        2,
    )


def test_unknown_extras_are_logged(caplog):
    with caplog.at_level(logging.WARNING):
        config(time_zone="UTC")
    assert "time_zone" in caplog.text


def test_the_key_stays_out_of_repr():
    settings = config()
    assert KEY not in repr(settings)
    assert settings.api_key == KEY


def test_json_and_uri_connections_from_the_environment(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_JSON",
        json.dumps({"conn_type": "kaleyra_email", "login": "HXSID", "password": KEY, "extra": {"region": "in"}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_URI", f"kaleyra-email://HXSID:{KEY}@127.0.0.1:8080/http?timezone=Asia%2FKolkata"
    )

    from_json = KaleyraEmailHook("kaleyra_json").config
    from_uri = KaleyraEmailHook("kaleyra_uri").config

    assert from_json == ConnectionConfig(base_url="https://api.in.kaleyra.io", sid="HXSID", api_key=KEY)
    assert (from_uri.base_url, from_uri.timezone, from_uri.api_key) == (
        "http://127.0.0.1:8080",
        "Asia/Kolkata",
        KEY,
    )


def test_hook_arguments_override_the_connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT",
        json.dumps({"conn_type": "kaleyra_email", "login": "S", "password": KEY, "extra": {"page_size": 20}}),
    )
    hook = KaleyraEmailHook(page_size=10, max_concurrency=2, timeout=5)
    assert (hook.config.page_size, hook.config.max_concurrency, hook.config.timeout) == (10, 2, 5)
    assert KEY not in repr(hook)


def test_hook_arguments_are_checked_before_any_lookup():
    with pytest.raises(ValueError, match="page_size=0"):
        KaleyraEmailHook("does_not_exist", page_size=0)
    with pytest.raises(ValueError, match="max_concurrency=100"):
        KaleyraEmailHook("does_not_exist", max_concurrency=100)


# ------------------------------------------------------------------------------------------
# Testing a connection, as Airflow's Test button and `airflow connections test` do
# ------------------------------------------------------------------------------------------


def airflow_test(monkeypatch, conn_id, **fields):
    """Test a connection as Airflow's API does: under a temporary id, through an env variable."""
    from airflow.models.connection import Connection

    conn = Connection(conn_id=conn_id, conn_type="kaleyra_email", **fields)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn.get_uri())
    return conn.test_connection()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"password": KEY}, "This connection has no account SID: put it in the login field."),
        ({"login": "HXSID"}, "This connection has no API key: put it in the password field."),
        ({"login": "HXSID", "password": KEY, "extra": '{"region": "mars"}'}, "This connection is not usable: "),
    ],
)
def test_a_test_result_never_names_airflows_temporary_id(monkeypatch, fields, expected):
    ok, message = airflow_test(monkeypatch, "gwrfjn07", **fields)
    assert not ok
    assert message.startswith(expected)
    assert "gwrfjn07" not in message.lower()
    assert KEY not in message


def test_outside_a_test_a_broken_connection_is_named(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MY_KALEYRA", json.dumps({"conn_type": "kaleyra_email", "password": KEY}))
    with pytest.raises(ValueError, match=re.escape("Connection 'my_kaleyra' has no account SID")):
        _ = KaleyraEmailHook("my_kaleyra").config


def test_a_test_names_unknown_extras_and_still_succeeds(kaleyra_email_emulator, monkeypatch):
    connection = kaleyra_email_emulator.connection(time_zone="Asia/Kolkata")
    ok, message = airflow_test(
        monkeypatch,
        "tmp12345",
        login=connection["login"],
        password=connection["password"],
        host=connection["host"],
        extra=json.dumps(connection["extra"]),
    )
    assert ok, message
    assert message.startswith(f"Connected to {kaleyra_email_emulator.base_url} as account ")
    assert "ignored unknown extra field(s) 'time_zone' (known: region, timezone," in message


def test_a_failed_test_names_unknown_extras_too(kaleyra_email_emulator, monkeypatch):
    connection = kaleyra_email_emulator.connection(regoin="in")
    connection["password"] = "wrong-key-abcdef"
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(connection))
    ok, message = KaleyraEmailHook().test_connection()
    assert not ok
    assert "(HTTP 401)" in message
    assert message.endswith("; ignored unknown extra field(s) 'regoin' (known: " + ", ".join(KNOWN_EXTRAS) + ").")


def test_a_clean_connection_mentions_no_extras(kaleyra_email_connection):
    ok, message = KaleyraEmailHook(kaleyra_email_connection).test_connection()
    assert ok, message
    assert "extra" not in message


def test_a_hook_warns_once_about_unknown_extras(kaleyra_email_emulator, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(time_zone="UTC"))
    hook = KaleyraEmailHook()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_kaleyra_email"):
        hook.test_connection()
        hook.test_connection()
    warnings = [r for r in caplog.records if "time_zone" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
