"""Deployment files, checked without a Docker engine: compose files against the Compose Specification
JSON schema, Collector configs structurally, ClickHouse XML, the Dockerfile and the otel-demo override."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from store.migrations import schema_objects

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# Vendored from compose-spec/compose-spec, schema/compose-spec.json (see tests/data/README.md).
COMPOSE_SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
COMPOSE_FILES = [ROOT / "compose.yaml", DEPLOY / "compose.cold-storage.yaml",
                 DEPLOY / "otel-demo" / "compose.override.yaml"]
COLLECTOR_CONFIGS = sorted((DEPLOY / "otel-collector").glob("*.yaml"))
ENV_EXAMPLE = DEPLOY / "env.example"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(COMPOSE_SCHEMA)(COMPOSE_SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    assert _schema_errors(_load(path)) == []


def test_schema_check_catches_mistakes() -> None:
    doc = _load(ROOT / "compose.yaml")
    for mutate in (
        lambda d: d["services"]["otel-ai"].__setitem__("helthcheck", {"test": ["CMD", "true"]}),
        lambda d: d["services"]["clickhouse"].__setitem__("ports", "8123:8123"),
        lambda d: d["services"]["otel-ai"]["depends_on"]["clickhouse"].__setitem__("condition", "healthy"),
    ):
        bad = copy.deepcopy(doc)
        mutate(bad)
        assert _schema_errors(bad), "a broken compose file passed the schema"


def test_compose_services_are_pinned_healthy_and_restarting() -> None:
    services = _load(ROOT / "compose.yaml")["services"]
    assert {"clickhouse", "otel-collector", "otel-ai", "slack", "ollama"} <= set(services)
    assert services["slack"]["profiles"] == ["slack"] and services["ollama"]["profiles"] == ["ollama"]
    for name, svc in services.items():
        image = svc["image"]
        assert re.search(r":[^:/]*\d[^:/]*$", image) and not image.endswith(":latest"), f"{name}: unpinned {image}"
        assert svc.get("restart") == "unless-stopped", name
        for dep, cond in svc.get("depends_on", {}).items():
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no check"
    for name in ("clickhouse", "otel-ai", "ollama"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert any(v.startswith("clickhouse-data:/var/lib/clickhouse") for v in services["clickhouse"]["volumes"])


def test_otel_ai_service_reads_clickhouse_by_url_with_secrets_from_env_file() -> None:
    compose = _load(ROOT / "compose.yaml")
    otel_ai = compose["services"]["otel-ai"]
    assert otel_ai["env_file"] == ["deploy/secrets.env"]
    assert otel_ai["environment"]["OTEL_AI_HOST"] == "0.0.0.0"
    env = _env_example()
    url = env["OTEL_AI_CLICKHOUSE_URL"]
    assert url.startswith("http://otel_ai:") and url.endswith("@clickhouse:8123/otel")
    assert url.split(":")[2].split("@")[0] == env["CLICKHOUSE_OTEL_AI_PASSWORD"]  # same writer password
    for svc in compose["services"].values():
        for value in (svc.get("environment") or {}).values():
            assert "change-me" not in str(value) and "PASSWORD" not in str(value)  # secrets only in env files
    assert "deploy/secrets.env" in (ROOT / ".gitignore").read_text() + (ROOT / ".dockerignore").read_text()


def _bind_sources(path: Path) -> list[str]:
    out = []
    for svc in _load(path)["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            default = re.fullmatch(r"\$\{[A-Z_]+:-(.+)\}", source)
            source = default.group(1) if default else source
            if source.startswith("./"):
                out.append(source)
    return out


@pytest.mark.parametrize("path", [ROOT / "compose.yaml", DEPLOY / "compose.cold-storage.yaml"],
                         ids=lambda p: p.name)
def test_mounted_files_exist(path: Path) -> None:
    sources = _bind_sources(path)
    assert sources
    for source in sources:
        assert (ROOT / source).is_file(), source


def _components(cfg: dict[str, Any], kind: str) -> set[str]:
    return set((cfg.get(kind) or {}).keys())


def check_collector_config(cfg: dict[str, Any]) -> list[str]:
    """What `otelcol validate` would reject structurally: undefined or unused components, bad pipelines."""
    problems: list[str] = []
    receivers, processors, exporters = (_components(cfg, k) for k in ("receivers", "processors", "exporters"))
    connectors, extensions = _components(cfg, "connectors"), _components(cfg, "extensions")
    service = cfg.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("no pipelines")
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        if name.split("/")[0] not in ("traces", "logs", "metrics"):
            problems.append(f"pipeline {name}: unknown signal")
        for kind, defined in (("receivers", receivers | connectors), ("processors", processors),
                              ("exporters", exporters | connectors)):
            for comp in pipeline.get(kind) or []:
                used[kind].add(comp)
                if comp not in defined:
                    problems.append(f"pipeline {name}: {kind[:-1]} {comp} is not defined")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"pipeline {name}: needs receivers and exporters")
        procs = pipeline.get("processors") or []
        if "memory_limiter" in procs and procs[0] != "memory_limiter":
            problems.append(f"pipeline {name}: memory_limiter must come first")
    for kind, defined in (("receivers", receivers), ("processors", processors), ("exporters", exporters)):
        for comp in defined - used[kind]:
            problems.append(f"{kind[:-1]} {comp} is defined but unused")
    for ext in service.get("extensions") or []:
        if ext not in extensions:
            problems.append(f"extension {ext} is not defined")
    return problems


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_configs_are_consistent(path: Path) -> None:
    cfg = _load(path)
    assert check_collector_config(cfg) == []
    assert set(cfg["service"]["pipelines"]) == {"traces", "logs", "metrics"}
    assert cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    compose_env = _load(ROOT / "compose.yaml")["services"]["otel-collector"]["environment"]
    for var in re.findall(r"\$\{env:([A-Z0-9_]+)\}", path.read_text()):
        assert var in compose_env or var in _env_example(), f"{path.name}: ${{env:{var}}} is never set"


def test_collector_check_catches_mistakes() -> None:
    cfg = _load(DEPLOY / "otel-collector" / "config.yaml")
    cfg["service"]["pipelines"]["traces"]["exporters"] = ["otlp/typo"]
    assert any("otlp/typo is not defined" in p for p in check_collector_config(cfg))


def test_default_collector_exports_to_otel_ai() -> None:
    cfg = _load(DEPLOY / "otel-collector" / "config.yaml")
    assert _load(ROOT / "compose.yaml")["services"]["otel-collector"]["environment"]["OTEL_AI_OTLP_ENDPOINT"] == \
        "otel-ai:4317"
    exporter = cfg["exporters"]["otlp/otel-ai"]
    assert exporter["endpoint"] == "${env:OTEL_AI_OTLP_ENDPOINT}"
    assert exporter["retry_on_failure"]["enabled"] and exporter["sending_queue"]["enabled"]
    assert all(p["exporters"] == ["otlp/otel-ai"] for p in cfg["service"]["pipelines"].values())


def test_clickhouse_exporter_config_writes_into_our_tables() -> None:
    cfg = _load(DEPLOY / "otel-collector" / "config-clickhouse.yaml")
    ch = cfg["exporters"]["clickhouse"]
    assert ch["create_schema"] is False and ch["database"] == "otel"
    ours = {o.name for o in schema_objects() if o.kind == "table"}
    names = {ch["logs_table_name"], ch["traces_table_name"], *(t["name"] for t in ch["metrics_tables"].values())}
    assert names <= ours
    assert set(ch["metrics_tables"]) == {"gauge", "sum", "summary", "histogram", "exponential_histogram"}


def test_load_balancing_routes_traces_by_trace_id() -> None:
    cfg = _load(DEPLOY / "otel-collector" / "config-loadbalancing.yaml")
    assert cfg["exporters"]["loadbalancing/traces"]["routing_key"] == "traceID"
    assert cfg["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing/traces"]


def test_clickhouse_users_give_the_agent_a_read_only_account() -> None:
    root = ET.parse(DEPLOY / "clickhouse" / "users.d" / "otel-ai.xml").getroot()
    reader = root.find("users/otel_ai_reader")
    assert reader is not None and reader.find("password").get("from_env") == "CLICKHOUSE_READER_PASSWORD"
    profile = root.find(f"profiles/{reader.findtext('profile')}")
    assert profile is not None
    # read-only by grants: a readonly profile would make the SQL tools' per-query `readonly=1` fail
    assert profile.find("readonly") is None
    assert [q.text for q in reader.findall("grants/query")] == ["GRANT SELECT ON otel.*"]
    from tools.sql import QUERY_SETTINGS

    for name, value in QUERY_SETTINGS.items():  # what the tools ask for stays within the constraints
        cap = profile.findtext(f"constraints/{name}/max")
        assert cap is None or int(value) <= int(cap), name
    writer = root.find("users/otel_ai")
    assert writer is not None and writer.find("password").get("from_env") in _env_example()
    for path in (DEPLOY / "clickhouse").rglob("*.xml"):
        tree = ET.parse(path).getroot()
        assert tree.tag == "clickhouse", path
        for el in tree.iter():
            if el.get("from_env"):
                assert el.get("from_env") in _env_example(), f"{path.name}: {el.get('from_env')} not in env.example"


def test_cold_storage_policy_adds_an_s3_volume_to_default() -> None:
    root = ET.parse(DEPLOY / "clickhouse" / "cold-storage" / "storage.xml").getroot()
    disks = root.find("storage_configuration/disks")
    assert disks.find("s3_cold/type").text == "s3"
    volumes = root.find("storage_configuration/policies/default/volumes")
    assert [v.tag for v in volumes] == ["hot", "cold"]
    assert volumes.findtext("hot/disk") == "default"
    assert disks.find(f"{volumes.findtext('cold/disk')}/disk").text == "s3_cold"


def test_dockerfile_is_slim_non_root_with_cpu_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", text)
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    final_stage = text.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER\s+(\S+)", final_stage, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in final_stage and "/healthz" in final_stage
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored)
    for package in re.findall(r"^COPY (\w+) \./\1$", text, re.M):
        assert (ROOT / package / "__init__.py").is_file(), package
    packaged = re.search(r'include = \[(.*?)\]', (ROOT / "pyproject.toml").read_text()).group(1)
    for pattern in re.findall(r'"(\w+)\*"', packaged):
        assert f"COPY {pattern} ./{pattern}" in text, f"package {pattern} missing from the image"


def test_otel_demo_override_adds_otel_ai_to_every_demo_pipeline() -> None:
    override = _load(DEPLOY / "otel-demo" / "compose.override.yaml")
    assert override["services"]["otel-collector"]["volumes"] == [
        "${OTEL_AI_DEMO_EXTRAS:?set by otel-ai otel-demo}:/etc/otelcol-config-extras.yml:ro"]
    assert override["services"]["otel-ai"]["build"]["context"].startswith("${OTEL_AI_SOURCE")
    extras = _load(DEPLOY / "otel-demo" / "otelcol-config-extras.yml")
    assert "otlp/otel-ai" in extras["exporters"]
    assert extras["exporters"]["otlp/otel-ai"]["endpoint"] == "otel-ai:4317"
    pipelines = extras["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    assert all("otlp/otel-ai" in p["exporters"] for p in pipelines.values())
    assert "spanmetrics" in pipelines["traces"]["exporters"]  # the demo's span metrics keep flowing


def test_the_wheel_the_image_installs_carries_every_package_file(tmp_path: Path) -> None:
    """The Dockerfile runs `pip install .`: every tracked file under the packages (SQL migrations, prompts,
    Chainlit config and assets) must be in the wheel, or the image breaks where the source tree works."""
    import subprocess
    import sys
    import zipfile

    packages = re.findall(r'"(\w+)\*"', re.search(r'include = \[(.*?)\]',
                                                  (ROOT / "pyproject.toml").read_text()).group(1))
    tracked = subprocess.run(["git", "ls-files", "--", *packages], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    expected = {f for f in tracked if "__pycache__" not in f}
    assert any(f.startswith("schema/migrations/") for f in expected)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("otel_ai-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert sorted(expected - names) == []
