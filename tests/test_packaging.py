"""The distributions users install: what they hold and what their metadata says."""

from __future__ import annotations

import email
import re
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


REPOSITORY = "https://github.com/airflow-provider-kaleyra-email/airflow-provider-kaleyra-email"
RAW = "https://raw.githubusercontent.com/airflow-provider-kaleyra-email/airflow-provider-kaleyra-email/main/"
README = (ROOT / "README.md").read_text()


def wheel_metadata(dist: Path) -> email.message.Message:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_and_image_of_the_long_description_works_on_a_package_index(dist):
    description = wheel_metadata(dist).get_payload(decode=True).decode()
    assert description.strip() == README.strip()
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    assert len(targets) >= 10
    for target in targets:
        url, _, anchor = target.partition("#")
        assert url.startswith("https://"), f"{target} is relative: a package index page cannot follow it"
        if url.startswith(RAW):
            path = ROOT / url.removeprefix(RAW)
        elif url.startswith(REPOSITORY + "/"):
            path = ROOT / re.sub(r"^(blob|tree)/main/", "", url.removeprefix(REPOSITORY + "/"))
        else:
            continue  # outside the repository (Kaleyra's API page)
        assert path.exists(), f"{target}: no {path.relative_to(ROOT)} in the repository"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
            assert anchor in {github_anchor(heading) for heading in headings}, target


def test_the_readme_starts_with_pip_install_and_names_what_ci_runs():
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL)[1]
    assert first_block.startswith("pip install airflow-provider-kaleyra-email\n")
    ci_commands = re.findall(r"^(make [\w-]+)$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
    assert ci_commands[:2] == ["make test", "make test-system"]
    develop = README.partition("## Develop")[2]
    for command in ci_commands:
        assert re.search(rf"^{command}\s", develop, re.MULTILINE), command


def test_the_readmes_connection_line_is_one_the_hook_reads(monkeypatch):
    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook

    (value,) = re.findall(r"^export AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT='(.+)'$", README, re.MULTILINE)
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", value)

    config = KaleyraEmailHook().config

    assert (config.base_url, config.timezone) == ("https://api.in.kaleyra.io", "Asia/Kolkata")
    assert config.unknown_extras == ()


def test_the_readme_lists_every_connection_extra():
    from airflow_provider_kaleyra_email.connection import KNOWN_EXTRAS

    listed = set(re.findall(r"^\| extra `(\w+)` \|", README, re.MULTILINE))
    assert listed == set(KNOWN_EXTRAS)
    assert f"{REPOSITORY}/blob/main/docs/connection.md" in README.partition("### The connection's fields")[2]


def test_every_python_example_in_the_readme_compiles():
    blocks = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, "README.md", "exec")


def test_the_docs_index_links_every_page_and_only_pages_that_exist():
    index = (ROOT / "docs" / "README.md").read_text()
    linked = set(re.findall(r"\]\(([\w./-]+\.md)\)", index))
    pages = {path.name for path in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages <= linked
    for target in linked:
        assert (ROOT / "docs" / target).resolve().exists(), target


def test_extras_take_ranges_not_exact_pins(dist):
    from packaging.requirements import Requirement

    extras = [Requirement(line) for line in wheel_metadata(dist).get_all("Requires-Dist") if "extra ==" in line]
    assert {"parquet", "report", "s3", "dev"} <= {str(r.marker).split('"')[1] for r in extras}
    pinned = [str(r) for r in extras if any(spec.operator in ("==", "===") for spec in r.specifier)]
    assert pinned == [], "exact pins belong in constraints/"


def test_the_classifiers_claim_the_python_running_these_tests(dist):
    claimed = {
        value.rpartition(" :: ")[2]
        for value in wheel_metadata(dist).get_all("Classifier")
        if value.startswith("Programming Language :: Python :: 3.")
    }
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in claimed
    assert min(claimed, key=lambda version: tuple(map(int, version.split(".")))) == "3.10"  # requires-python
