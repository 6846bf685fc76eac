"""
Test settings: Airflow gets a throwaway home and metadata database, so no test reads or
writes ~/airflow. DAGs defined anywhere in the project may run with ``dag.test()``: Airflow 3.3
only serializes DAGs whose file is inside ``[core] dags_folder``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent

# The emulator's fixtures are opt-in, for us as for any DAG author.
pytest_plugins = ["airflow_provider_kaleyra_email.testing.pytest_plugin"]

# Set before anything imports Airflow (the emulator's plugin does not). Always a new one, also in
# each pytest-xdist worker (which inherits the controller's environment): its own SQLite database.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="kaleyra-email-tests-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT / "tests" / "dag_files"))
# Airflow 3 only runs DAGs it finds by walking a bundle: the test DAGs and the examples.
os.environ.setdefault(
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    json.dumps(
        [
            {
                "name": name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(path)},
            }
            for name, path in (
                ("tests", PROJECT / "tests" / "dag_files"),
                ("examples", PROJECT / "example_dags"),
            )
        ]
    ),
)
os.environ.setdefault("AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP", r"airflow_provider_kaleyra_email\..*")


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated SQLite metadata database, for tests that run DAGs."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
