"""Mount the Chainlit chat UI into serve's FastAPI app at "/" (one process, one port).

Chainlit keeps process-wide state (its config, data layer and callbacks are module globals), reads
its config from `CHAINLIT_APP_ROOT` when first imported, and serves a catch-all `/{path}` route.
So this module:
- prepares a per-process runtime directory (config, public assets, translations) so the source
  tree is never written to, and points Chainlit at it before importing it;
- registers our own routes first and mounts Chainlit last at "/": FastAPI matches routes in order,
  so `/healthz`, `/api/*` and the OTLP paths registered before it keep working, and unknown
  `/api/...` paths get a JSON 404 instead of the single-page app;
- strips every external URL (Google Fonts, the KaTeX CDN, preconnects) from the page Chainlit
  serves, so the UI works with the network closed;
- refuses to serve a non-loopback address without password auth.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_ai.auth import AuthConfigError, auth_users, is_loopback, parse_users  # noqa: F401 - re-exported
from otel_ai.context import ServerContext

WEB_DIR = Path(__file__).resolve().parent
APP_FILE = WEB_DIR / "chainlit_app.py"
# Paths the chat must never answer with its single-page app (they belong to the API, OTLP, Slack).
RESERVED_PREFIXES = ("/api/", "/v1/", "/slack/", "/healthz")
# Chainlit reads these at import time to register Slack/Teams/Discord handlers of its own;
# otel-ai's Slack app (chat/slack) owns those tokens, so Chainlit must not see them.
_FOREIGN_ENV = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_WEBSOCKET_TOKEN", "TEAMS_APP_ID",
                "TEAMS_APP_PASSWORD", "DISCORD_BOT_TOKEN", "DATABASE_URL", "LITERAL_API_KEY")
_EXTERNAL_TAG = re.compile(r"<link\b[^>]*href=\"https?://[^\"]*\"[^>]*/?>\s*", re.IGNORECASE)


def prepare_app_root() -> Path:
    """A per-process copy of .chainlit/ and public/ for Chainlit to read and write (.files, translations)."""
    root = Path(tempfile.mkdtemp(prefix="otel-ai-chat-"))
    atexit.register(shutil.rmtree, root, True)
    (root / ".chainlit").mkdir()
    shutil.copy(WEB_DIR / ".chainlit" / "config.toml", root / ".chainlit" / "config.toml")
    shutil.copytree(WEB_DIR / "public", root / "public")
    shutil.copy(WEB_DIR / "chainlit.md", root / "chainlit.md")
    shutil.copy(WEB_DIR / "chainlit.md", root / "chainlit_en-US.md")
    _write_translation(root / ".chainlit" / "translations")
    return root


# Our wording over Chainlit's en-US texts (users log in with a user name, not an e-mail address).
TEXT_OVERRIDES = {
    ("auth", "login", "title"): "Sign in to otel-ai",
    ("auth", "login", "form", "email", "label"): "User name",
    ("auth", "login", "form", "email", "placeholder"): "",
    ("auth", "login", "form", "email", "required"): "a user name is required",
    ("auth", "login", "errors", "credentialsSignin"): "Wrong user name or password",
    ("chat", "input", "placeholder"): "Ask about your telemetry, /sql SELECT ..., or /dashboard <service>",
}


def _write_translation(directory: Path) -> None:
    spec = importlib.util.find_spec("chainlit")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return
    source = Path(next(iter(spec.submodule_search_locations))) / "translations" / "en-US.json"
    texts = json.loads(source.read_text(encoding="utf-8"))
    for path, value in TEXT_OVERRIDES.items():
        node = texts
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = value
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "en-US.json").write_text(json.dumps(texts, indent=1, ensure_ascii=False), encoding="utf-8")


@contextlib.contextmanager
def _hidden_env(names: tuple[str, ...]) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def strip_external_assets(html: str) -> str:
    """Drop <link> tags to other origins (fonts, CDN CSS, preconnects) from Chainlit's page."""
    return _EXTERNAL_TAG.sub("", html)


class _ReservedPaths:
    """Answers JSON 404 for API-like paths that no earlier route matched, instead of the chat page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(RESERVED_PREFIXES):
            from starlette.responses import JSONResponse

            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def mount(app: FastAPI, ctx: ServerContext) -> None:
    """Add the chat UI at "/" (must stay the last mount: it catches every path not matched before)."""
    users = auth_users(ctx.settings)
    if "chainlit.config" not in sys.modules:  # Chainlit reads its root once, when first imported
        os.environ["CHAINLIT_APP_ROOT"] = str(prepare_app_root())
    if users:
        assert ctx.settings.auth_secret is not None
        os.environ["CHAINLIT_AUTH_SECRET"] = ctx.settings.auth_secret.get_secret_value()
    else:
        # Localhost: everyone is the "local" user (header auth); a per-process key signs its cookie.
        os.environ["CHAINLIT_AUTH_SECRET"] = secrets.token_urlsafe(32)

    # Chainlit logs every translation file it copies and every page load at INFO.
    logging.getLogger("chainlit").setLevel(logging.WARNING)
    from chat.web import runtime

    runtime.configure(ctx, users)
    with _hidden_env(_FOREIGN_ENV):
        import chainlit.server as chainlit_server
        from chainlit.utils import mount_chainlit

    original_template = chainlit_server.get_html_template
    chainlit_server.get_html_template = lambda root_path: strip_external_assets(original_template(root_path))

    runtime.add_routes(app)
    mount_chainlit(app, target=str(APP_FILE), path="/")
    # mount_chainlit appended a Mount("/") as the app's last route; wrap it to keep API 404s JSON.
    chat_mount = app.router.routes[-1]
    chat_mount.app = _ReservedPaths(chat_mount.app)  # type: ignore[attr-defined]
