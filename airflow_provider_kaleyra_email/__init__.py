"""Apache Airflow provider for the Kaleyra Email API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Return what Airflow's ``ProvidersManager`` reads through the ``apache_airflow_provider`` entry point."""
    from airflow_provider_kaleyra_email.provider_info import provider_info

    return provider_info()
