"""Test settings: Airflow gets a throwaway home, so no test reads or writes ~/airflow."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports Airflow (our pytest11 plugin does not).
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kaleyra-email-tests-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault(
    "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP", r"airflow_provider_kaleyra_email\..*"
)
