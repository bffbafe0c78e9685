"""How a CLI command reaches the data: a running `otel-ai serve`'s HTTP API, or the store itself.

chDB allows one process per data directory, so while serve runs, a command must go through serve's
API instead of opening the directory. `find_server` looks for the serve holding our store (`--server`,
else the configured host and port); `open_store` opens the store only when no other process holds it,
and otherwise says who does, before chDB prints its own lock error.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_ai.auth import client_headers
from otel_ai.settings import Settings
from store import Store, StoreError
from store.client import _directory_locked, parse_url

PROBE_TIMEOUT = 2.0


class ServerError(Exception):
    """The server could not be reached or turned the request down; the message is fit for a user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Server:
    """A running `otel-ai serve` and the headers its API wants."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, *, json: object = None, params: dict[str, object] | None = None,
             timeout: float = 120.0) -> Any:  # noqa: ANN401 - the API's JSON
        """The JSON body of a 200 answer; anything else becomes a ServerError with the server's reason."""
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        try:
            status, reason, raw = _request(method, url, json, self.headers, timeout)
        except (OSError, http.client.HTTPException) as exc:
            cause = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, Exception) else exc
            raise ServerError(f"otel-ai is not reachable at {self.url} ({type(cause).__name__}: {cause})") from None
        try:
            body = jsonlib.loads(raw)
        except ValueError:
            body = None
        if status == 200 and body is not None:
            return body
        raise ServerError(self._reason(status, reason, raw, body), status)

    def _reason(self, status: int, reason: str, raw: bytes, body: object) -> str:
        """One line from an error answer: ours are {"error": ...}, FastAPI's validation {"detail": [...]}."""
        if status == 401:  # the server's own words say how to log in to the chat: not for us
            said = body.get("error") if isinstance(body, dict) else None
            what = str(said).split(":")[0] if said else "authentication required"
            hint = "set OTEL_AI_API_TOKEN to one of its tokens" if not self.headers else \
                "OTEL_AI_API_TOKEN is not one of its tokens"
            return f"{what} by the otel-ai serve at {self.url}: {hint}"
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
        if isinstance(body, dict) and isinstance(body.get("detail"), list):
            return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                             for d in body["detail"] if isinstance(d, dict))
        text = raw.decode("utf-8", "replace").strip()[:300] or reason
        return f"{self.url} answered {status}: {text}"


def _request(method: str, url: str, body: object, headers: dict[str, str], timeout: float) -> tuple[int, str, bytes]:
    """(status, reason, body bytes) of one HTTP exchange; an error status is an answer, not an exception.

    The standard library, not httpx: a command that only talks to serve starts ~70 ms sooner without it."""
    data = None if body is None else jsonlib.dumps(body).encode()
    sent = {**headers, **({"Content-Type": "application/json"} if data is not None else {})}
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) URLs of serve
            return response.status, response.reason, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, str(exc.reason), exc.read()


def default_url(settings: Settings) -> str:
    """OTEL_AI_SERVER_URL, else where a local serve with these settings listens (a wildcard bind is
    reached on loopback)."""
    if settings.server_url:
        return settings.server_url.rstrip("/")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def our_store(settings: Settings) -> tuple[str, str]:
    """(redacted URL, database) of the store these settings open, as serve's /healthz reports them."""
    target = parse_url(settings.clickhouse_url)
    explicit = "database" in settings.model_fields_set  # the same precedence as Store.from_settings
    return target.redacted(), (settings.database if explicit else None) or target.database or settings.database


def probe(url: str, settings: Settings) -> dict[str, Any] | None:
    """serve's /healthz at `url`, or None when nothing (or not an otel-ai serve) answers there."""
    try:
        _, _, raw = _request("GET", f"{url}/healthz", None, client_headers(settings), PROBE_TIMEOUT)
        health = jsonlib.loads(raw)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return health if isinstance(health, dict) and "services" in health else None


def holds(health: dict[str, Any], settings: Settings) -> bool:
    """Whether the serve that sent `health` has our store open."""
    return (health.get("store"), health.get("database")) == our_store(settings)


def store_named(settings: Settings) -> bool:
    """Whether a flag, OTEL_AI_* or otel-ai.toml names the store (else the default `./data` is meant)."""
    return bool({"clickhouse_url", "database"} & settings.model_fields_set)


def find_server(settings: Settings, explicit: str | None = None) -> Server | None:
    """`--server URL` as given; else the serve at the configured host and port if it holds our store, or
    whatever store it holds when none is named (a user beside the demo means the demo's data, from any
    directory; `./data` would be another one elsewhere)."""
    if explicit:
        return Server(explicit.rstrip("/"), client_headers(settings))
    url = default_url(settings)
    health = probe(url, settings)
    if health is None or (store_named(settings) and not holds(health, settings)):
        return None
    return Server(url, client_headers(settings))


def held_elsewhere(data_dir: Path) -> bool:
    """Whether another process holds the data directory (chDB flocks `<dir>/status`). This process may
    hold it itself (in-process callers such as tests), which is no obstacle: /proc/locks names the
    holder's pid; where it cannot be read, any lock counts."""
    if not _directory_locked(data_dir):
        return False
    try:
        st = os.stat(data_dir / "status")
        locks = Path("/proc/locks").read_text()
    except OSError:
        return True
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = {fields[-4] for fields in map(str.split, locks.splitlines()) if len(fields) >= 8 and fields[-3] == key}
    return holders != {str(os.getpid())}


def ensure_free(settings: Settings, what: str, hint: str) -> None:
    """Raise a StoreError naming who holds our data directory, if anyone does, and what to do (`hint`),
    so that `what` (e.g. "`otel-ai db status`") never gets as far as chDB's own lock error."""
    data_dir = settings.data_dir()
    if data_dir is None or not held_elsewhere(data_dir):
        return
    url = default_url(settings)
    health = probe(url, settings)
    if health is None:
        holder = f"another process (no otel-ai serve answers at {url})"
    elif "store" not in health:
        holder = (f"probably the otel-ai serve at {url} (it names its store only to callers with its API token: "
                  "set OTEL_AI_API_TOKEN to use its API)")
    elif holds(health, settings):
        holder = f"the otel-ai serve at {url}"
    else:
        holder = f"another process (the otel-ai serve at {url} holds another store)"
    raise StoreError(f"{what} opens the store itself, but the data directory {data_dir} is in use by "
                     f"{holder}: {hint}")


def open_store(settings: Settings, what: str, hint: str) -> Store:
    """The store for `what`, once `ensure_free` says no other process holds it."""
    ensure_free(settings, what, hint)
    return Store.from_settings(settings)
