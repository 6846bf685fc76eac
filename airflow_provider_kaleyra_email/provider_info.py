"""The provider description Airflow validates: no Airflow imports, as ``ProvidersManager`` calls it at start-up."""

from __future__ import annotations

import copy
from typing import Any

INTEGRATION = "Kaleyra Email"
_PACKAGE = "airflow_provider_kaleyra_email"


def _whole_number(label: str, description: str, low: int, high: int) -> dict[str, Any]:
    schema = {"type": ["integer", "null"], "minimum": low, "maximum": high}
    return {"label": label, "description": description, "schema": schema}


#: Extra fields of the ``kaleyra_email`` connection form (Airflow 3.2+ reads these directly;
#: ``connection_form_widgets`` builds the same for older web servers). The connection accepts
#: the whole-number bounds shown here. Airflow 3 labels an ``enum`` dropdown by ``values_display``
#: (a ``None`` choice would read "null"), and shows ``examples`` as suggestions.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "region": {
        "label": "Region",
        "description": "Kaleyra pod when Base URL is empty: in, sg or eu. Empty means https://api.kaleyra.io.",
        "schema": {
            "type": ["string", "null"],
            "enum": ["", "in", "sg", "eu"],
            "default": "",
            "values_display": {
                "": "Global: https://api.kaleyra.io",
                "in": "in: https://api.in.kaleyra.io",
                "sg": "sg: https://api.ap.kaleyra.io",
                "eu": "eu: https://api.eu.kaleyra.io",
            },
        },
    },
    "timezone": {
        "label": "Account time zone",
        "description": "IANA name of the account's time zone, e.g. Asia/Kolkata, in which the API reads dates "
        "(default UTC).",
        "schema": {
            "type": ["string", "null"],
            "examples": ["Asia/Kolkata", "Asia/Singapore", "Europe/London", "America/New_York", "UTC"],
        },
    },
    "timeout": _whole_number("Timeout (seconds)", "Seconds to wait for each response (default 30).", 1, 600),
    "max_retries": _whole_number(
        "Max retries", "Retries after a 429, a 5xx, a timeout or a dropped connection (default 5).", 0, 20
    ),
    "page_size": _whole_number("Page size", "Rows per request, 1 to 100 (default 100).", 1, 100),
    "max_concurrency": _whole_number(
        "Max concurrency", "Most log pages fetched at once (default 16); halved on HTTP 429.", 1, 32
    ),
    "allow_insecure_http": {
        "label": "Allow plain http",
        "description": "Allow an http:// Base URL off loopback: the API key would travel unencrypted.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    # The network settings, named and shaped as HttpHook's; both hooks apply them alike.
    "proxies": {
        "label": "Proxies",
        "description": 'JSON as requests takes it, e.g. {"https": "http://user:password@proxy.corp:3128"}. '
        "Empty: HTTPS_PROXY, ALL_PROXY and NO_PROXY from the environment.",
        "schema": {"type": ["string", "null"]},
    },
    "verify": {
        "label": "Verify TLS",
        "description": "true, false, or the path of a CA bundle (a corporate CA). "
        "Empty: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's bundle.",
        "schema": {"type": ["string", "null"], "examples": ["true", "/etc/ssl/certs/corp-ca.pem"]},
    },
    "cert": {
        "label": "Client certificate",
        "description": 'Path of a PEM holding the client certificate and its key, or ["cert.pem", "key.pem"].',
        "schema": {"type": ["string", "null"]},
    },
    "trust_env": {
        "label": "Read proxy and CA settings from the environment",
        "description": "When the fields above are empty (default true). ~/.netrc is never read.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["port"],
    "relabeling": {"login": "Account SID", "password": "API key", "host": "Base URL", "schema": "URL scheme"},
    "placeholders": {
        "login": "HXIN1234567890IN",
        "host": "https://api.kaleyra.io (leave empty to use Region)",
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
    return {
        "package-name": "airflow-provider-kaleyra-email",
        "name": INTEGRATION,
        "description": "Export Kaleyra Email logs and delivery stats, and wait for messages to be delivered.",
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://developers.kaleyra.io/docs/email-get-stats-and-get-logs",
                "tags": ["service"],
            }
        ],
        **modules,
        "connection-types": [
            {
                "connection-type": "kaleyra_email",
                "hook-class-name": f"{_PACKAGE}.hooks.kaleyra_email.KaleyraEmailHook",
                "hook-name": INTEGRATION,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
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

    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        label, description, schema = lazy_gettext(spec["label"]), spec["description"], spec["schema"]
        if schema["type"] == ["boolean", "null"]:
            widgets[name] = BooleanField(label, description=description, default=schema["default"])
        elif schema["type"] == ["integer", "null"]:
            bounds = NumberRange(min=schema["minimum"], max=schema["maximum"])
            widgets[name] = IntegerField(
                label, description=description, validators=[Optional(), bounds], widget=BS3TextFieldWidget()
            )
        else:
            widgets[name] = StringField(label, description=description, widget=BS3TextFieldWidget())
    return widgets
