"""Static checks of podman-compose.yml (containers cannot run on the machines that build this)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "podman-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROJECT_SERVICES = [n for n, s in SERVICES.items() if s.get("image", "").startswith("localhost/observability-app")]


def _target_exists(cmd: list[str]) -> bool:
    """`python -m pkg.mod` or `python path.py`: does the named module or script exist?"""
    if "-m" in cmd:
        mod = cmd[cmd.index("-m") + 1]
        if mod == "streamlit":  # `python -m streamlit run <script>`
            return (ROOT / cmd[cmd.index("run") + 1]).is_file()
        path = ROOT / mod.replace(".", "/")
        return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()
    scripts = [c for c in cmd if c.endswith((".py", ".sh"))]
    return bool(scripts) and all((ROOT / c).is_file() for c in scripts)


def test_expected_services_are_declared():
    expected = {
        "kafka",
        "kafka-init",
        "generator",
        "ingest",
        "spark",
        "detector",
        "narrator",
        "ollama",
        "ollama-init",
        "postgres",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "dashboard",
    }
    assert expected <= set(SERVICES)


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_service_command_names_an_existing_module_or_script(name):
    cmd = SERVICES[name]["command"]
    assert isinstance(cmd, list) and cmd[0] == "python"
    assert _target_exists(cmd), f"{name}: {cmd} names nothing that exists"


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_services_mount_data_and_read_env(name):
    svc = SERVICES[name]
    assert "./data:/app/data:Z" in svc["volumes"]
    assert any(e["path"] == ".env" for e in svc["env_file"])
    assert svc["environment"]["DATA_DIR"] == "/app/data"


def test_every_long_running_service_has_a_healthcheck_and_restart_policy():
    for name, svc in SERVICES.items():
        assert svc.get("restart") in {"unless-stopped", "on-failure", "always"}, name
        if name.endswith("-init"):
            continue
        assert "test" in svc.get("healthcheck", {}), f"{name} has no health check"


def test_documented_ports_and_volumes():
    ports = {name: svc.get("ports", []) for name, svc in SERVICES.items()}
    assert ports["dashboard"] == ["127.0.0.1:8501:8501"]
    assert ports["airflow-api-server"] == ["127.0.0.1:8080:8080"]
    assert ports["ollama"] == ["127.0.0.1:11434:11434"]
    assert ports["ingest"] == ["127.0.0.1:4317:4317", "127.0.0.1:4318:4318", "127.0.0.1:9102:9102"]
    assert set(COMPOSE["volumes"]) == {"kafka-data", "ollama-models", "postgres-data"}
    assert "kafka-data:/var/lib/kafka/data" in SERVICES["kafka"]["volumes"]
    assert SERVICES["kafka"]["image"].startswith("docker.io/apache/kafka:")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node


def test_image_is_built_from_the_containerfile_with_java():
    text = (ROOT / "Containerfile").read_text()
    assert text.startswith("# ") and "FROM docker.io/library/python:3.11-slim" in text
    assert "openjdk-17-jre-headless" in text
    for name in PROJECT_SERVICES:
        assert SERVICES[name]["build"]["dockerfile"] == "Containerfile"


def test_containerfile_copies_every_package_a_service_runs():
    text = (ROOT / "Containerfile").read_text()
    for folder in (
        "observability",
        "event_generator",
        "ingest",
        "spark",
        "anomaly_detection",
        "llm",
        "dashboard",
        "dags",
        "scripts",
    ):
        assert f"COPY {folder} ./{folder}" in text


def test_ollama_init_pulls_the_configured_model():
    entry = " ".join(SERVICES["ollama-init"]["entrypoint"])
    assert "ollama pull" in entry and "OLLAMA_MODEL" in entry


def test_otlp_receiver_listens_on_every_interface_inside_its_container():
    svc = SERVICES["ingest"]
    assert svc["command"] == ["python", "-m", "ingest"]
    env = svc["environment"]
    assert env["OTLP_HOST"] == "0.0.0.0"
    assert env["TRANSPORT"] == "kafka" and env["KAFKA_BROKER"] == "kafka:9092"  # the shared app environment kept
    assert "--component" in svc["healthcheck"]["test"] and "ingest" in svc["healthcheck"]["test"]


def test_each_service_publishes_its_metrics_port_on_localhost():
    """/metrics of each project service on its METRICS_PORT_<SERVICE> default, bound on all interfaces inside."""
    from observability.settings import Settings

    s = Settings()
    expected = {
        "generator": s.metrics_port_generator,
        "ingest": s.metrics_port_ingest,
        "spark": s.metrics_port_spark,
        "detector": s.metrics_port_detector,
        "narrator": s.metrics_port_narrator,
        "notifier": s.metrics_port_notifier,
        "forecaster": s.metrics_port_forecaster,
        "indexer": s.metrics_port_indexer,
    }
    for name, port in expected.items():
        assert f"127.0.0.1:{port}:{port}" in SERVICES[name].get("ports", []), name
        assert SERVICES[name]["environment"]["METRICS_HOST"] == "0.0.0.0", name
