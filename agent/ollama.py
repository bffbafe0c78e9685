"""A small client for the Ollama HTTP API: list, pull and health-check local models.

Used by `otel-ai models` and by model routing to explain an unreachable or missing local model
before a chat turn fails on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


class OllamaError(RuntimeError):
    """Ollama is unreachable or refused a request; the message says which and what to do."""


@dataclass(frozen=True)
class LocalModel:
    name: str
    size: int = 0
    modified_at: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""


@dataclass(frozen=True)
class Health:
    ok: bool
    base_url: str
    version: str = ""
    error: str = ""


class OllamaClient:
    """Synchronous Ollama API client (the CLI and health checks need nothing more)."""

    def __init__(self, base_url: str = "http://127.0.0.1:11434", timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:  # noqa: ANN401
        try:
            response = httpx.request(method, f"{self.base_url}{path}", timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise OllamaError(f"Ollama {method} {path} failed with {response.status_code}: {_error_text(response)}")
        return response

    def health(self) -> Health:
        """Whether the server answers, and its version."""
        try:
            version = self._request("GET", "/api/version").json().get("version", "")
        except (OllamaError, ValueError) as exc:
            return Health(ok=False, base_url=self.base_url, error=str(exc))
        return Health(ok=True, base_url=self.base_url, version=str(version))

    def list_models(self) -> list[LocalModel]:
        """Models pulled into the local Ollama."""
        body = self._request("GET", "/api/tags").json()
        out = []
        for m in body.get("models", []):
            details = m.get("details") or {}
            out.append(
                LocalModel(
                    name=m.get("name") or m.get("model", ""),
                    size=int(m.get("size") or 0),
                    modified_at=str(m.get("modified_at", "")),
                    family=str(details.get("family", "")),
                    parameter_size=str(details.get("parameter_size", "")),
                    quantization=str(details.get("quantization_level", "")),
                )
            )
        return out

    def has_model(self, name: str) -> bool:
        """True when `name` (with or without the `:latest` tag) is pulled."""
        names = {m.name for m in self.list_models()}
        return name in names or f"{name}:latest" in names

    def pull(self, name: str, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Pull a model, reporting each streamed status line; raises OllamaError on failure."""
        for event in self._stream("POST", "/api/pull", {"model": name, "stream": True}, timeout=None):
            if "error" in event:
                raise OllamaError(f"pulling {name!r} failed: {event['error']}")
            if progress:
                progress(event)

    def _stream(self, method: str, path: str, body: dict[str, Any], timeout: float | None) -> Iterator[dict]:
        try:
            with httpx.stream(method, f"{self.base_url}{path}", json=body, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise OllamaError(
                        f"Ollama {method} {path} failed with {response.status_code}: {_error_text(response)}"
                    )
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> OllamaError:
        return OllamaError(
            f"Ollama is not reachable at {self.base_url} ({exc.__class__.__name__}: {exc}); "
            "start it with `ollama serve` or set OLLAMA_BASE_URL"
        )


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]
