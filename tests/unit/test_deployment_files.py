"""docker-compose.yml and the Dockerfiles, checked without a Docker engine."""

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
APP_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    if not COMPOSE_SCHEMA.exists():  # CI and developers have ../shared; a stray clone may not
        pytest.skip(f"Compose Specification schema not found at {COMPOSE_SCHEMA}")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The schema names draft-07 without the trailing '#' that jsonschema looks up by.
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_infrastructure_has_healthchecks_and_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "rabbitmq-diagnostics" in services["rabbitmq"]["healthcheck"]["test"]
    assert "management" in services["rabbitmq"]["image"]
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("postgres", "rabbitmq", "prometheus"):
        assert re.search(r":\S*\d", services[name]["image"]), f"{name} image is not pinned"
    assert services["postgres"]["volumes"][0].startswith("postgres-data:")


def test_services_start_in_the_order_they_need(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy"


def seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(s|m)", duration).groups()  # type: ignore[union-attr]
    return float(value) * (60 if unit == "m" else 1)


def test_workers_scale_and_get_time_to_shut_down(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker
    default_timeout = Settings().worker_shutdown_timeout_seconds
    assert seconds(worker["stop_grace_period"]) > default_timeout


def test_every_variable_compose_sets_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert set(environment) <= known, (name, set(environment) - known)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_images_are_lean_pinned_and_unprivileged(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim", text, flags=re.MULTILINE)
    assert "PYTHONUNBUFFERED=1" in text and "LOG_FORMAT=json" in text
    assert re.search(r"^USER (?!root)\w+", text, flags=re.MULTILINE)
    assert re.search(r'^CMD \[".+"\]$', text, flags=re.MULTILINE), "CMD must be exec form"
    # Dependencies before code, so code edits reuse the installed layer; never dev tools.
    assert (
        text.index("COPY requirements.txt")
        < text.index("RUN pip install")
        < text.index("COPY shared/")
    )
    assert "requirements-dev" not in text


def test_build_context_leaves_out_what_images_do_not_need() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "tests", "**/__pycache__", ".env"):
        assert entry in ignored


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert missing == []
