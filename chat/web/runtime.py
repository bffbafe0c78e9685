"""What the Chainlit app needs from the running server, set once by `chat.web.mount.mount`.

Chainlit loads its app module by file path and keeps callbacks as process globals, so the server
context reaches the app through this module rather than through arguments.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from otel_ai.context import ServerContext
from store import Store


@dataclass
class ChatRuntime:
    ctx: ServerContext
    store: Store
    users: dict[str, str] = field(default_factory=dict)
    _data_layer: object | None = None

    @property
    def password_auth(self) -> bool:
        return bool(self.users)

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        # Compare against a dummy for unknown users too, so timing does not reveal user names.
        ok = hmac.compare_digest((expected or "\0").encode(), password.encode())
        return expected is not None and ok

    def data_layer(self):  # noqa: ANN201 - chat.web.history.ClickHouseDataLayer (imports chainlit)
        if self._data_layer is None:
            from chat.web.history import ClickHouseDataLayer

            self._data_layer = ClickHouseDataLayer(self.store)
        return self._data_layer


_RUNTIME: ChatRuntime | None = None


def configure(ctx: ServerContext, users: dict[str, str]) -> ChatRuntime:
    """Bind the chat to a server: its own store handle, so chat writes never wait on ingest."""
    global _RUNTIME
    _RUNTIME = ChatRuntime(ctx=ctx, store=ctx.store.clone(), users=users)
    return _RUNTIME


def get() -> ChatRuntime:
    if _RUNTIME is None:
        raise RuntimeError("the chat UI is not mounted (chat.web.mount.mount was not called)")
    return _RUNTIME


def add_routes(app: FastAPI) -> None:
    """Routes the chat needs besides Chainlit's own; registered before Chainlit's catch-all mount."""
    from chainlit.auth import get_current_user
    from chainlit.data.acl import is_thread_author

    from chat.web.history import ELEMENT_ROUTE

    @app.get(ELEMENT_ROUTE + "/{thread_id}/{element_id}", include_in_schema=False)
    async def chat_file(thread_id: str, element_id: str, request: Request) -> Response:
        """Content of a stored element (a chart of an earlier answer), for its thread's author only."""
        from chainlit.auth import get_token_from_cookies

        token = get_token_from_cookies(dict(request.cookies)) or request.headers.get("authorization", "")
        user = await get_current_user(token.removeprefix("Bearer ").strip() if token else None)
        if user is None:
            raise HTTPException(status_code=401, detail="login required")
        await is_thread_author(user.identifier, thread_id)
        found = await get().data_layer().get_element_content(thread_id, element_id)
        if found is None:
            raise HTTPException(status_code=404, detail="element not found")
        content, mime = found
        return Response(content, media_type=mime)
