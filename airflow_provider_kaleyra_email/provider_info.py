"""
The provider description Airflow validates against ``provider_info.schema.json``.

Kept free of Airflow imports: ``ProvidersManager`` calls it while it starts up.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "airflow-provider-kaleyra-email"
INTEGRATION = "Kaleyra Email"
_PACKAGE = "airflow_provider_kaleyra_email"

#: Extra fields of the ``kaleyra_email`` connection form (Airflow 3.2+ reads these directly;
#: ``KaleyraEmailHook.get_connection_form_widgets`` builds the same for older web servers).
#: Airflow 3 renders an ``enum`` as a dropdown labelled by ``values_display`` (a ``None`` choice
#: would read "null"), and shows ``examples`` as suggestions, the nearest it has to a placeholder.
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
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Seconds to wait for each response (default 30).",
        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 600},
    },
    "max_retries": {
        "label": "Max retries",
        "description": (
            "Retries of a request that failed with 429, 5xx, a timeout or a dropped connection (default 5)."
        ),
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    },
    "page_size": {
        "label": "Page size",
        "description": "Rows per request, 1 to 100 (default 100).",
        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 100},
    },
    "max_concurrency": {
        "label": "Max concurrency",
        "description": "Most log pages fetched at once (default 16); halved on HTTP 429.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 32},
    },
    "allow_insecure_http": {
        "label": "Allow plain http",
        "description": "Allow an http:// Base URL off loopback: the API key would travel unencrypted.",
        "schema": {"type": ["boolean", "null"], "default": False},
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


def provider_info() -> dict[str, Any]:
    def modules(kind: str) -> list[dict[str, Any]]:
        return [{"integration-name": INTEGRATION, "python-modules": [f"{_PACKAGE}.{kind}.kaleyra_email"]}]

    return {
        "package-name": PACKAGE_NAME,
        "name": "Kaleyra Email",
        "description": "Export Kaleyra Email logs and delivery stats, and wait for messages to be delivered.",
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://developers.kaleyra.io/docs/email-get-stats-and-get-logs",
                "tags": ["service"],
            }
        ],
        "hooks": modules("hooks"),
        "operators": modules("operators"),
        "sensors": modules("sensors"),
        "triggers": modules("triggers"),
        "connection-types": [
            {
                "connection-type": "kaleyra_email",
                "hook-class-name": f"{_PACKAGE}.hooks.kaleyra_email.KaleyraEmailHook",
                "hook-name": "Kaleyra Email",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }


def ui_field_behaviour() -> dict[str, Any]:
    """Return the connection form's layout for Airflow 2.11 to 3.1 (3.2+ reads it from provider info)."""
    return {
        "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
        "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
        "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
    }


def connection_form_widgets() -> dict[str, Any]:
    """Return named extra fields for Airflow 2.11 to 3.1, whose web server has wtforms."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional

    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        label, description = lazy_gettext(spec["label"]), spec["description"]
        if spec["schema"]["type"] == ["boolean", "null"]:
            widgets[name] = BooleanField(label, description=description, default=spec["schema"]["default"])
        elif spec["schema"]["type"] == ["integer", "null"]:
            bounds = NumberRange(min=spec["schema"].get("minimum"), max=spec["schema"].get("maximum"))
            widgets[name] = IntegerField(
                label, description=description, validators=[Optional(), bounds], widget=BS3TextFieldWidget()
            )
        else:
            widgets[name] = StringField(label, description=description, widget=BS3TextFieldWidget())
    return widgets
