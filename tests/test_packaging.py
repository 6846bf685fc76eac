"""The distributions users install: what they hold and what their metadata says."""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_provider_kaleyra_email"


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv), "build", "--quiet", "--out-dir", str(out), str(ROOT)], check=True, timeout=120)
    return out


def test_the_sdist_holds_the_package_readme_and_license_only(dist):
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    stray = {name for name in names if not name.startswith(f"{PACKAGE}/")}
    assert stray == {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", ".gitignore"}
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_the_wheel_carries_the_license_and_project_urls(dist):
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
        license_text = archive.read(next(name for name in names if name.endswith("licenses/LICENSE"))).decode()
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0" in license_text
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    assert not any(name.startswith(("tests/", "benchmarks/", "docs/")) for name in names)


def test_airflow_finds_the_documentation_url_in_the_installed_metadata():
    """Airflow 3's providers page links ``Project-URL: Documentation``, read from the installed distribution."""
    from importlib.metadata import metadata

    urls = dict(value.split(", ", 1) for value in metadata("airflow-provider-kaleyra-email").get_all("Project-URL"))
    assert urls["Documentation"].endswith("/docs")
