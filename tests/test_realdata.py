"""Root cause on real fault data: the first development case of each fault type of the Nezha Train-Ticket
study (../shared/realdata, beside the project), replayed by the shared replay into a fresh `otel-ai serve`
over OTLP/gRPC and asked through `otel-ai ask --json`, exactly as the replay scores them. A miss fails.

The data is not part of the project (its licence and size keep it beside it); without it the tests skip."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
REALDATA = ROOT.parent / "shared" / "realdata"
ARCHIVE = REALDATA / "nezha-tt-dev.tar.xz"
FAULT_TYPES = ("return", "exception", "cpu_contention", "network_delay")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ARCHIVE.exists(), reason=f"no real fault data at {ARCHIVE}")]


def replay_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nezha_replay", REALDATA / "nezha_replay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def replay() -> tuple[ModuleType, str, list[dict]]:
    module = replay_module()
    repo = module.unpacked(str(ARCHIVE))
    return module, repo, [c for c in module.cases(repo) if c.get("split") in (None, "dev")]


@pytest.mark.parametrize("fault_type", FAULT_TYPES)
def test_first_case_of_each_fault_type_names_the_faulty_service_first(replay, fault_type, tmp_path):
    module, repo, cases = replay
    case = next(c for c in cases if c["type"] == fault_type)
    with open(tmp_path / "serve.log", "wb") as log:
        result = module.run_case(str(ROOT), repo, case, 5.0, log)
    assert "error" not in result, result
    assert result["spans"] > 10_000 and result["logs"] > 1_000, result
    assert result["ranked"] and result["ranked"][0] == case["service"], (case["service"], case["type"], result)
