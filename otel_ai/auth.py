"""Who may use the HTTP API: chat logins, API tokens, and the guard on `/api/*` and `/chat-files/*`.

With neither chat users (OTEL_AI_AUTH_USERS + OTEL_AI_AUTH_SECRET) nor API tokens (OTEL_AI_API_TOKEN)
configured, serve binds to loopback only and the API is open to local callers, as before. As soon as
either is configured, every request to `/api/*` and `/chat-files/*` needs `Authorization: Bearer
<one of the API tokens>` or the cookie of a chat user logged in with a password; anything else gets
401. Localhost sessions (the chat's header login, which anyone who can reach the page gets) never
count. `/healthz` stays open but tells anonymous callers only whether the server is up.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from otel_ai.settings import Settings

if TYPE_CHECKING:  # the ASGI side only: `ask --server` uses the client half and starts without Starlette
    from starlette.requests import HTTPConnection
    from starlette.types import ASGIApp, Receive, Scope, Send

PROTECTED_PREFIXES = ("/api/", "/chat-files/")


class AuthConfigError(SystemExit):
    """Serve must not start: the chat would be reachable from the network without a password."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_users(spec: str | None) -> dict[str, str]:
    """`user:password,user2:password2` -> {user: password}; malformed pairs are an error."""
    users: dict[str, str] = {}
    for pair in (spec or "").split(","):
        pair = pair.strip()
        if not pair:
            continue
        name, sep, password = pair.partition(":")
        if not sep or not name.strip() or not password:
            raise AuthConfigError(
                f"error: OTEL_AI_AUTH_USERS entry {name.strip() or pair!r} is not of the form user:password"
            )
        users[name.strip()] = password
    return users


def auth_users(settings: Settings) -> dict[str, str]:
    """Users allowed to log in, or {} when password auth is off; refuses half or unsafe configs."""
    users = parse_users(settings.auth_users)
    secret = settings.auth_secret.get_secret_value() if settings.auth_secret else ""
    if bool(users) != bool(secret):
        raise AuthConfigError(
            "error: chat login needs both OTEL_AI_AUTH_SECRET (a long random string) and "
            "OTEL_AI_AUTH_USERS (user:password,...); only one of them is set"
        )
    if not users and not is_loopback(settings.host):
        raise AuthConfigError(
            f"error: refusing to serve the chat on {settings.host}, which is reachable from other machines, "
            "without a login: set OTEL_AI_AUTH_SECRET and OTEL_AI_AUTH_USERS=user:password "
            "(or bind to 127.0.0.1)"
        )
    if users and len(secret) < 16:
        raise AuthConfigError("error: OTEL_AI_AUTH_SECRET must be at least 16 characters")
    return users


def api_tokens(settings: Settings) -> list[str]:
    """The configured API tokens (OTEL_AI_API_TOKEN, comma separated); short ones are a config error."""
    raw = settings.api_token.get_secret_value() if settings.api_token else ""
    tokens = [t.strip() for t in raw.split(",") if t.strip()]
    if any(len(t) < 16 for t in tokens):
        raise AuthConfigError("error: every OTEL_AI_API_TOKEN must be at least 16 characters")
    return tokens


def auth_required(settings: Settings) -> bool:
    return bool(api_tokens(settings) or parse_users(settings.auth_users))


def has_token(conn: HTTPConnection, tokens: Sequence[str]) -> bool:
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return False
    given = value.strip().encode()
    # compare against every token (no early exit), so timing does not tell which prefix matched
    return any([hmac.compare_digest(given, t.encode()) for t in tokens])


def logged_in_user(conn: HTTPConnection, users: dict[str, str]) -> str | None:
    """The chat user of a valid password-login cookie (still configured), or None."""
    if not users:
        return None
    try:
        from chainlit.auth import decode_jwt, get_token_from_cookies

        token = get_token_from_cookies(dict(conn.cookies))
        user = decode_jwt(token) if token else None
    except Exception:  # bad signature, expired, malformed: not logged in
        return None
    if user is None or (user.metadata or {}).get("provider") != "password" or user.identifier not in users:
        return None
    return user.identifier


def is_authorized(conn: HTTPConnection, settings: Settings) -> bool:
    """Whether a request may see data: auth off, a valid API token, or a logged-in chat user."""
    tokens = api_tokens(settings)
    users = parse_users(settings.auth_users)
    if not tokens and not users:
        return True
    return has_token(conn, tokens) or logged_in_user(conn, users) is not None


class RequireAuth:
    """ASGI middleware: 401 on `/api/*` and `/chat-files/*` unless `is_authorized`."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(PROTECTED_PREFIXES):
            from starlette.requests import HTTPConnection

            if not is_authorized(HTTPConnection(scope), self.settings):
                body = json.dumps({"error": "authentication required: send Authorization: Bearer <OTEL_AI_API_TOKEN> "
                                            "or log in to the chat"}).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="otel-ai"')]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def client_headers(settings: Settings | None = None) -> dict[str, str]:
    """Headers for our own clients (CLI, Slack in Socket Mode) calling a server's API: the first
    configured API token (from env / otel-ai.toml when no settings are given)."""
    from otel_ai.settings import load_settings

    tokens = api_tokens(settings or load_settings())
    return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}
