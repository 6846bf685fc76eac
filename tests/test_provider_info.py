"""Airflow accepts and finds the provider."""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import airflow
import pytest

from airflow_provider_kaleyra_email import get_provider_info, provider_info, validation
from airflow_provider_kaleyra_email.api_facts import REGION_BASE_URLS
from airflow_provider_kaleyra_email.connection import KNOWN_EXTRAS, config_of
from airflow_provider_kaleyra_email.provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR


def test_provider_info_passes_airflows_schema():
    info = get_provider_info()
    try:
        from airflow.providers_manager import _create_provider_info_schema_validator
    except ImportError:  # private; fall back to the schema file itself
        import jsonschema

        schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
        jsonschema.validate(info, schema)
    else:
        _create_provider_info_schema_validator().validate(info)


def test_package_name_is_the_distribution_name():
    distribution = importlib.metadata.distribution("airflow-provider-kaleyra-email")
    assert get_provider_info()["package-name"] == distribution.metadata["Name"]
    entry_points = [ep for ep in distribution.entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.load() for ep in entry_points] == [get_provider_info]


def hooks_manager():
    """Where hooks are listed: the task SDK's runtime manager on Airflow 3.2+, else ProvidersManager."""
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        from airflow.providers_manager import ProvidersManager

        return ProvidersManager()
    return ProvidersManagerTaskRuntime()


def test_providers_manager_lists_the_hook_and_connection_type():
    from airflow.providers_manager import ProvidersManager

    assert "airflow-provider-kaleyra-email" in ProvidersManager().providers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hook = hooks_manager().hooks["kaleyra_email"]
    ours = [str(w.message) for w in caught if "kaleyra" in str(w.message).lower() or "kaleyra" in w.filename]
    assert ours == [], "loading the hook must not warn (e.g. about form widgets on Airflow 3.2+)"
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_kaleyra_email.hooks.kaleyra_email.KaleyraEmailHook"
    assert hook.connection_id_attribute_name == "kaleyra_email_conn_id"
    assert hook.hook_name == "Kaleyra Email"


def test_the_connection_form_has_named_fields():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    for field in KNOWN_EXTRAS:
        assert f"extra__kaleyra_email__{field}" in widgets
    behaviour = manager.field_behaviours["kaleyra_email"]
    assert behaviour["relabeling"] == {
        "login": "Account SID",
        "password": "API key",
        "host": "Base URL",
        "schema": "URL scheme",
    }
    # The README documents ``schema`` (the scheme of a bare host name): the form must let users set it.
    assert set(behaviour["hidden_fields"]) == {"port"}


def test_every_extra_the_provider_reads_is_a_form_field():
    """``allow_insecure_http`` once could not be set from Airflow 3's form."""
    assert set(CONN_FIELDS) == set(KNOWN_EXTRAS)


def airflow3_dropdown_labels(schema):
    """The labels Airflow 3's connection form shows for an ``enum``, as its React dropdown words them."""
    display = schema.get("values_display") or {}
    return [
        display.get("null" if value is None else str(value), "null" if value is None else str(value))
        for value in schema["enum"]
    ]


def test_dropdowns_show_no_null_and_label_every_choice():
    for name, spec in CONN_FIELDS.items():
        if "enum" in spec["schema"]:
            labels = airflow3_dropdown_labels(spec["schema"])
            assert "null" not in labels, name
            assert all(labels), name
            assert set(spec["schema"]["values_display"]) == {str(v) for v in spec["schema"]["enum"]}, name


def test_region_choices_are_the_regions_and_global():
    schema = CONN_FIELDS["region"]["schema"]
    assert schema["enum"] == ["", *REGION_BASE_URLS]
    for region, url in REGION_BASE_URLS.items():
        assert url in schema["values_display"][region]
    conn = SimpleNamespace(login="S", password="k", host=None, port=None, schema=None)
    assert (
        config_of(conn, {"region": schema["default"]}, conn_id="c", overrides={}).base_url == "https://api.kaleyra.io"
    )


def test_free_text_extras_show_a_hint_on_airflow_2_and_3():
    """Airflow 2 shows ``placeholders``; Airflow 3 ignores them for extras and suggests ``examples``."""
    placeholders = UI_FIELD_BEHAVIOUR["placeholders"]
    for name in ("region", "timezone"):
        assert placeholders.get(name), name
    timezone = CONN_FIELDS["timezone"]["schema"]
    assert placeholders["timezone"] in timezone["examples"]
    for zone in timezone["examples"]:
        validation.account_timezone(zone, parameter="example")


def test_airflow_3s_connection_form_gets_the_fields():
    """What Airflow 3's API hands its React form (private API: skipped where it does not exist)."""
    services = pytest.importorskip("airflow.api_fastapi.core_api.services.ui.connections")
    (meta,) = [m for m in services.HookMetaService.hook_meta_data() if m.connection_type == "kaleyra_email"]
    region = meta.extra_fields["region"]
    assert None not in region["schema"]["enum"]
    assert region["value"] == ""
    assert meta.extra_fields["timezone"]["schema"]["examples"]
    assert meta.extra_fields["allow_insecure_http"]["schema"]["type"] == ["boolean", "null"]
    assert not meta.standard_fields.url_schema.hidden
    assert meta.standard_fields.url_schema.placeholder.startswith("https")


def test_airflow_2s_form_has_a_checkbox_for_allow_insecure_http():
    pytest.importorskip("wtforms")
    widgets = provider_info.connection_form_widgets()
    assert widgets["allow_insecure_http"].field_class.__name__ == "BooleanField"
    assert widgets["region"].field_class.__name__ == "StringField"
    assert widgets["timeout"].field_class.__name__ == "StringField"  # Airflow 2 has no field for a float
    assert widgets["page_size"].field_class.__name__ == "IntegerField"


@pytest.mark.parametrize("module", ["hooks", "operators", "sensors", "triggers"])
def test_every_listed_module_imports(module):
    info = get_provider_info()
    for entry in info[module]:
        for name in entry["python-modules"]:
            __import__(name)


def test_the_emulators_pytest_plugin_is_opt_in():
    """No pytest11 entry point: the fixtures load only where a conftest asks for them."""
    from importlib.metadata import distribution

    entry_points = distribution("airflow-provider-kaleyra-email").entry_points
    assert [e.name for e in entry_points if e.group == "pytest11"] == []


@pytest.mark.parametrize("name", [n for n, spec in CONN_FIELDS.items() if "minimum" in spec["schema"]])
def test_the_connection_enforces_exactly_the_bounds_the_form_shows(name):
    schema = CONN_FIELDS[name]["schema"]
    conn = SimpleNamespace(login="S", password="k", host=None, port=None, schema=None)
    for value in (schema["minimum"], schema["maximum"]):
        assert getattr(config_of(conn, {name: value}, conn_id="c", overrides={}), name) == value
    for value in (schema["minimum"] - 1, schema["maximum"] + 1):
        with pytest.raises(ValueError, match=f"{name}={value} is out of range"):
            config_of(conn, {name: value}, conn_id="c", overrides={})


def test_the_timeout_field_claims_no_bounds_the_connection_does_not_enforce():
    """Any positive number of seconds is a timeout: the form offers a number, not a bounded whole number."""
    conn = SimpleNamespace(login="S", password="k", host=None, port=None, schema=None)
    assert CONN_FIELDS["timeout"]["schema"] == {"type": ["number", "null"]}
    assert config_of(conn, {"timeout": "1200.5"}, conn_id="c", overrides={}).timeout == 1200.5
