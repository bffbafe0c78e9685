"""Model routing (specs, keys, privacy, fallback chains) and the Ollama client against a fake Ollama."""

from __future__ import annotations

import pytest
from pydantic_ai.models.fallback import FallbackModel

from agent.models import ModelConfigError, parse_spec, resolve_model, role_map
from agent.ollama import OllamaClient, OllamaError
from otel_ai.settings import Settings
from tests.fakes.llm import FakeOllamaServer, closed_port_url


def settings(**kw) -> Settings:
    base = dict(openai_api_key=None, anthropic_api_key=None, openai_base_url=None)
    return Settings(**{**base, **kw})


def test_parse_spec_chain_and_errors():
    specs = parse_spec("openai:gpt-4o-mini, ollama:llama3.2 ,builtin")
    assert [str(s) for s in specs] == ["openai:gpt-4o-mini", "ollama:llama3.2", "builtin"]
    assert [s.is_local for s in specs] == [False, True, True]
    with pytest.raises(ModelConfigError, match="unknown model provider 'gemini'"):
        parse_spec("gemini:pro")
    with pytest.raises(ModelConfigError, match="names no model"):
        parse_spec("openai:")
    with pytest.raises(ModelConfigError, match="empty"):
        parse_spec(" , ")


def test_role_map_defaults_to_model():
    s = settings(model="ollama:llama3.2", model_sql="builtin")
    assert role_map(s) == {"planner": "ollama:llama3.2", "sql": "builtin", "summary": "ollama:llama3.2"}


def test_missing_key_is_a_clear_error_or_skipped_in_a_chain():
    with pytest.raises(ModelConfigError, match="OPENAI_API_KEY"):
        resolve_model(settings(model="openai:gpt-4o-mini"))
    with pytest.raises(ModelConfigError, match="ANTHROPIC_API_KEY"):
        resolve_model(settings(model="anthropic:claude-x"))
    resolved = resolve_model(settings(model="openai:gpt-4o-mini,builtin"))
    assert resolved.label == "builtin"
    assert any("OPENAI_API_KEY" in n for n in resolved.notes)


def test_privacy_mode_keeps_telemetry_on_local_models():
    s = settings(model="openai:gpt-4o-mini,ollama:llama3.2", openai_api_key="k", privacy_local_only=True)
    resolved = resolve_model(s)
    assert resolved.label == "ollama:llama3.2"
    assert "privacy" in resolved.notes[0]
    with pytest.raises(ModelConfigError, match="privacy mode"):
        resolve_model(settings(model="openai:gpt-4o-mini", openai_api_key="k", privacy_local_only=True))


def test_chain_builds_fallback_model_and_override_wins():
    resolved = resolve_model(settings(model="builtin"), override="ollama:llama3.2,builtin")
    assert isinstance(resolved.model, FallbackModel)
    assert resolved.label == "ollama:llama3.2,builtin"


def test_ollama_client_lists_pulls_and_checks_health():
    with FakeOllamaServer(models=["llama3.2:latest"], pullable=["qwen2.5:0.5b"]) as fake:
        client = OllamaClient(fake.url)
        health = client.health()
        assert health.ok and health.version == "0.6.0-fake"
        assert [m.name for m in client.list_models()] == ["llama3.2:latest"]
        assert client.has_model("llama3.2") and not client.has_model("qwen2.5:0.5b")
        events: list[dict] = []
        client.pull("qwen2.5:0.5b", progress=events.append)
        assert events[0]["status"] == "pulling manifest" and events[-1]["status"] == "success"
        assert client.has_model("qwen2.5:0.5b")
        with pytest.raises(OllamaError, match="does not exist"):
            client.pull("no-such-model")


def test_ollama_client_unreachable_is_explained():
    client = OllamaClient(closed_port_url(""), timeout=2)
    health = client.health()
    assert not health.ok and "not reachable" in health.error
    with pytest.raises(OllamaError, match="ollama serve"):
        client.list_models()
