"""Model routing: a role -> model map from settings, fallback chains and the privacy rule.

A spec is `builtin`, `ollama:<model>`, `openai:<model>` or `anthropic:<model>`; a comma-separated
list is a FallbackModel chain tried left to right. With `privacy_local_only`, raw telemetry (tool
output) only goes to local models (builtin, ollama): hosted models are dropped from the chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.models import Model
from pydantic_ai.models.fallback import FallbackModel

from otel_ai.settings import Settings

log = logging.getLogger("agent.models")

ROLES = ("planner", "sql", "summary")
PROVIDERS = ("builtin", "ollama", "openai", "anthropic")
LOCAL_PROVIDERS = ("builtin", "ollama")
# Connection failures should surface quickly (and fall back) rather than hang a chat turn.
REQUEST_TIMEOUT_S = 120.0
MAX_RETRIES = 1


class AgentError(RuntimeError):
    """A failure of `ask` with a message fit for a user (front ends show it as is)."""


class ModelConfigError(AgentError, ValueError):
    """A model spec that cannot be used: unknown provider, missing key, privacy rule."""


class ModelUnavailable(AgentError):
    """Every configured model failed to answer (unreachable, refused, no such model)."""


@dataclass(frozen=True)
class ModelSpec:
    """One parsed `provider:name` entry."""

    provider: str
    name: str = ""

    @property
    def is_local(self) -> bool:
        return self.provider in LOCAL_PROVIDERS

    def __str__(self) -> str:
        return self.provider if self.provider == "builtin" else f"{self.provider}:{self.name}"


@dataclass
class ResolvedModel:
    """The model to run, the specs it stands for, and why some were skipped."""

    model: Model
    specs: list[ModelSpec]
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ",".join(str(s) for s in self.specs)


def parse_spec(text: str) -> list[ModelSpec]:
    """Parse `builtin` / `provider:model`, comma-separated; raise ModelConfigError on bad input."""
    specs: list[ModelSpec] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        provider, _, name = item.partition(":")
        provider = provider.strip().lower()
        name = name.strip()
        if provider not in PROVIDERS:
            raise ModelConfigError(
                f"unknown model provider {provider!r} in {text!r}: use builtin, ollama:<model>, "
                "openai:<model> or anthropic:<model> (comma-separated for a fallback chain)"
            )
        if provider != "builtin" and not name:
            raise ModelConfigError(f"model spec {item!r} names no model: write {provider}:<model>")
        specs.append(ModelSpec(provider, "" if provider == "builtin" else name))
    if not specs:
        raise ModelConfigError("empty model spec: use builtin, ollama:<model>, openai:<model> or anthropic:<model>")
    return specs


def role_map(settings: Settings) -> dict[str, str]:
    """The model spec configured for each role (planner, sql, summary)."""
    return {role: settings.role_model(role) for role in ROLES}


def _secret(value: object) -> str | None:
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return str(raw) if raw else None


def ollama_v1_url(base_url: str) -> str:
    """Ollama's OpenAI-compatible endpoint under its base URL."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def build_one(spec: ModelSpec, settings: Settings, builtin: Model | None = None) -> Model:
    """A pydantic-ai model for one spec (`builtin`: what stands for the built-in model, default the
    analyst); raises ModelConfigError for a missing key."""
    if spec.provider == "builtin" and builtin is not None:
        return builtin
    if spec.provider == "builtin":
        from agent.streaming import builtin_streaming_model

        return builtin_streaming_model()
    if spec.provider == "ollama":
        from openai import AsyncOpenAI
        from pydantic_ai.models.ollama import OllamaModel
        from pydantic_ai.providers.ollama import OllamaProvider

        client = AsyncOpenAI(
            base_url=ollama_v1_url(settings.ollama_base_url),
            api_key="ollama",
            max_retries=MAX_RETRIES,
            timeout=REQUEST_TIMEOUT_S,
        )
        return OllamaModel(spec.name, provider=OllamaProvider(openai_client=client))
    if spec.provider == "openai":
        key = _secret(settings.openai_api_key)
        if not key:
            raise ModelConfigError(
                f"model {spec} needs an API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for an "
                "OpenAI-compatible server), or use builtin / ollama:<model>"
            )
        from openai import AsyncOpenAI
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        client = AsyncOpenAI(
            base_url=settings.openai_base_url, api_key=key, max_retries=MAX_RETRIES, timeout=REQUEST_TIMEOUT_S
        )
        return OpenAIChatModel(spec.name, provider=OpenAIProvider(openai_client=client))
    if spec.provider == "anthropic":
        key = _secret(settings.anthropic_api_key)
        if not key:
            raise ModelConfigError(
                f"model {spec} needs an API key: set ANTHROPIC_API_KEY, or use builtin / ollama:<model>"
            )
        from anthropic import AsyncAnthropic
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        client = AsyncAnthropic(
            api_key=key, base_url=settings.anthropic_base_url, max_retries=MAX_RETRIES, timeout=REQUEST_TIMEOUT_S
        )
        return AnthropicModel(spec.name, provider=AnthropicProvider(anthropic_client=client))
    raise ModelConfigError(f"unknown model provider {spec.provider!r}")


def resolve_model(settings: Settings, role: str = "planner", override: str | None = None,
                  builtin: Model | None = None) -> ResolvedModel:
    """The model for `role` (or `override`), as one model or a FallbackModel chain (`builtin`: the model
    `builtin` stands for in this chain, e.g. the dashboard planner's; default the analyst).

    A chain entry that cannot be built (missing key, privacy rule) is skipped with a note when
    others remain; when none remain the first reason is raised as ModelConfigError.
    """
    text = override or settings.role_model(role)
    specs = parse_spec(text)
    models: list[Model] = []
    kept: list[ModelSpec] = []
    notes: list[str] = []
    for spec in specs:
        if settings.privacy_local_only and not spec.is_local:
            notes.append(f"skipped {spec}: privacy mode keeps raw telemetry on local models (builtin, ollama)")
            continue
        try:
            models.append(build_one(spec, settings, builtin))
            kept.append(spec)
        except ModelConfigError as exc:
            notes.append(f"skipped {exc}")
    if not models:
        raise ModelConfigError("; ".join(n.removeprefix("skipped ") for n in notes) or f"no usable model in {text!r}")
    for note in notes:
        log.warning("model routing: %s", note)
    model = models[0] if len(models) == 1 else FallbackModel(*models, fallback_on=(ModelAPIError,))
    return ResolvedModel(model=model, specs=kept, notes=notes)
