"""Airflow accepts and finds the provider."""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from pathlib import Path

import airflow
import pytest

from airflow_provider_kaleyra_email import get_provider_info


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
    for field in ("region", "timezone", "timeout", "max_retries", "page_size", "max_concurrency"):
        assert f"extra__kaleyra_email__{field}" in widgets
    behaviour = manager.field_behaviours["kaleyra_email"]
    assert behaviour["relabeling"] == {"login": "Account SID", "password": "API key", "host": "Base URL"}
    assert set(behaviour["hidden_fields"]) == {"schema", "port"}


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
