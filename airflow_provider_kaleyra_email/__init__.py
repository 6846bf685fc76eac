"""Apache Airflow provider for the Kaleyra Email API."""

from __future__ import annotations

from airflow_provider_kaleyra_email.provider_info import get_provider_info

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]
