"""Local fake servers speaking real protocols (OpenAI-compatible chat completions, Ollama)."""

from tests.fakes.llm import FakeLLMServer, FakeOllamaServer, ScriptedBrain, closed_port_url

__all__ = ["FakeLLMServer", "FakeOllamaServer", "ScriptedBrain", "closed_port_url"]
