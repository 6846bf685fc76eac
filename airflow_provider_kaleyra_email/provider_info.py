"""The provider description Airflow validates: no Airflow imports, as ``ProvidersManager`` calls it at start-up."""

from __future__ import annotations

import copy
from typing import Any

from airflow_provider_kaleyra_email.api_facts import DEFAULT_BASE_URL, MAX_PAGE_SIZE, REGION_BASE_URLS

INTEGRATION = "Kaleyra Email"
_PACKAGE = "airflow_provider_kaleyra_email"
_API_DOCS = "https://developers.kaleyra.io/docs/email-get-stats-and-get-logs"


def _field(kind: str, label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": [kind, "null"], **schema}}


def _text(label: str, description: str, examples: list[str] | None = None) -> dict[str, Any]:
    """Return a text field; Airflow 3 suggests its ``examples``."""
    text = _field("string", label, description)
    if examples:
        text["schema"]["examples"] = examples
    return text


def _choice(label: str, description: str, choices: dict[str, str]) -> dict[str, Any]:
    """Return a dropdown; Airflow 3 labels it by ``values_display``, where a ``None`` choice would read "null"."""
    return _field("string", label, description, enum=list(choices), default="", values_display=choices)


def _flag(label: str, description: str, default: bool) -> dict[str, Any]:
    return _field("boolean", label, description, default=default)


def _whole_number(label: str, description: str, low: int, high: int) -> dict[str, Any]:
    return _field("integer", label, description, minimum=low, maximum=high)


_REGIONS = {"": f"Global: {DEFAULT_BASE_URL}"} | {key: f"{key}: {url}" for key, url in REGION_BASE_URLS.items()}

#: Extra fields of the ``kaleyra_email`` connection form: Airflow 3.2+ reads them from here,
#: ``connection_form_widgets`` builds them for older web servers, and the connection enforces their bounds.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "region": _choice(
        "Region", f"Kaleyra pod when Base URL is empty: in, sg or eu. Empty means {DEFAULT_BASE_URL}.", _REGIONS
    ),
    "timezone": _text(
        "Account time zone",
        "IANA name of the account's time zone, e.g. Asia/Kolkata, in which the API reads dates (default UTC).",
        ["Asia/Kolkata", "Asia/Singapore", "Europe/London", "America/New_York", "UTC"],
    ),
    "timeout": _field("number", "Timeout (seconds)", "Seconds a whole response may take (default 30)."),
    "max_retries": _whole_number(
        "Max retries", "Retries after a 429, a 5xx, a timeout or a dropped connection (default 5).", 0, 20
    ),
    "page_size": _whole_number("Page size", f"Rows per request, 1 to {MAX_PAGE_SIZE} (default 100).", 1, MAX_PAGE_SIZE),
    "max_concurrency": _whole_number(
        "Max concurrency", "Most log pages fetched at once (default 16); halved on HTTP 429.", 1, 32
    ),
    "allow_insecure_http": _flag(
        "Allow plain http", "Allow an http:// Base URL off loopback: the API key would travel unencrypted.", False
    ),
    # The network settings, named and shaped as HttpHook's; both hooks apply them alike.
    "proxies": _text(
        "Proxies",
        'JSON as requests takes it, e.g. {"https": "http://user:password@proxy.corp:3128"}. '
        "Empty: HTTPS_PROXY, ALL_PROXY and NO_PROXY from the environment.",
    ),
    "verify": _text(
        "Verify TLS",
        "true, false, or the path of a CA bundle (a corporate CA). "
        "Empty: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's bundle.",
        ["true", "/etc/ssl/certs/corp-ca.pem"],
    ),
    "cert": _text(
        "Client certificate", 'Path of a PEM holding the client certificate and its key, or ["cert.pem", "key.pem"].'
    ),
    "trust_env": _flag(
        "Read proxy and CA settings from the environment",
        "When the fields above are empty (default true). ~/.netrc is never read.",
        True,
    ),
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["port"],
    "relabeling": {"login": "Account SID", "password": "API key", "host": "Base URL", "schema": "URL scheme"},
    "placeholders": {
        "login": "HXIN1234567890IN",
        "host": f"{DEFAULT_BASE_URL} (leave empty to use Region)",
        "schema": "https (used only when Base URL is a bare host name)",
        "region": "in",
        "timezone": "Asia/Kolkata",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return what Airflow's ``ProvidersManager`` reads through the ``apache_airflow_provider`` entry point."""
    modules = {
        kind: [{"integration-name": INTEGRATION, "python-modules": [f"{_PACKAGE}.{kind}.kaleyra_email"]}]
        for kind in ("hooks", "operators", "sensors", "triggers")
    }
    connection_type = {
        "connection-type": "kaleyra_email",
        "hook-class-name": f"{_PACKAGE}.hooks.kaleyra_email.KaleyraEmailHook",
        "hook-name": INTEGRATION,
        "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
        "conn-fields": CONN_FIELDS,
    }
    return {
        "package-name": "airflow-provider-kaleyra-email",
        "name": INTEGRATION,
        "description": "Export Kaleyra Email logs and delivery stats, and wait for messages to be delivered.",
        "integrations": [{"integration-name": INTEGRATION, "external-doc-url": _API_DOCS, "tags": ["service"]}],
        **modules,
        "connection-types": [connection_type],
    }


def ui_field_behaviour() -> dict[str, Any]:
    """Return the connection form's layout for Airflow 2.11 to 3.1 (3.2+ reads it from provider info)."""
    return {key.replace("-", "_"): copy.deepcopy(value) for key, value in UI_FIELD_BEHAVIOUR.items()}


def connection_form_widgets() -> dict[str, Any]:
    """Return named extra fields for Airflow 2.11 to 3.1, whose web server has wtforms."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional

    # Airflow 2 takes only these field classes: a number that is no whole number (timeout) is text.
    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        label, description, schema = lazy_gettext(spec["label"]), spec["description"], spec["schema"]
        if schema["type"][0] == "boolean":
            widgets[name] = BooleanField(label, description=description, default=schema["default"])
        elif schema["type"][0] == "integer":
            bounds = NumberRange(min=schema["minimum"], max=schema["maximum"])
            widgets[name] = IntegerField(
                label, description=description, validators=[Optional(), bounds], widget=BS3TextFieldWidget()
            )
        else:
            widgets[name] = StringField(label, description=description, widget=BS3TextFieldWidget())
    return widgets
