"""`otel-ai serve`: receivers, scorer, HTTP API and chat in one process over one store.

Start order: open store → apply migrations → start services (OTLP receivers, scorer) → serve the
HTTP app. On SIGTERM/SIGINT the order reverses: the HTTP app stops, then each service stops taking
work and commits what it acknowledged.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from otel_ai.auth import RequireAuth, auth_required, is_authorized
from otel_ai.context import QuietUvicorn, ServerContext, Service, bind_socket
from otel_ai.http_limits import LimitRequestBody, head_deadline_h11
from otel_ai.settings import Settings
from store import Store
from store.migrations import migrate

log = logging.getLogger("otel_ai.server")

# Factories of services started by serve, in start order; each takes the context.
ServiceFactory = Callable[[ServerContext], Service]
# Functions that add routes or sub-apps (API, chat UI, Slack) to the HTTP app.
Mount = Callable[[FastAPI, ServerContext], None]


def service_factories() -> list[ServiceFactory]:
    from anomaly.service import ScorerService
    from ingest.service import IngestService
    from otel_ai.memory import MemoryService

    return [IngestService, ScorerService, MemoryService]


def mounts() -> list[Mount]:
    from anomaly.api import mount as anomalies_mount
    from chat.slack.mount import mount as slack_mount
    from chat.web.mount import mount as chat_mount
    from ingest.service import mount as otlp_mount
    from otel_ai.api_ask import mount as ask_mount
    from otel_ai.api_sql import mount as sql_mount

    # chat_mount stays last: it serves the chat UI at "/" and catches every path not matched before.
    return [slack_mount, anomalies_mount, sql_mount, ask_mount, otlp_mount, chat_mount]


def tune_gc() -> None:
    """Keep Python's cycle collector off the ingest path.

    Ingest allocates many containers per span; with the default thresholds the collector runs
    constantly and its full passes rescan every object the libraries (torch, Chainlit, ...) created at
    start-up. py-spy found it in 16 % of serve's samples under ingest load, 5 % after freezing the
    start-up heap and collecting the young generation less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def build_app(ctx: ServerContext) -> FastAPI:
    # no generated API pages: /openapi.json could not describe the routes' responses (a 500), and /docs
    # listed them to anyone; docs/interfaces.md documents the API
    app = FastAPI(title="otel-ai", version="0.1.0", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    auth_on = auth_required(ctx.settings)  # also refuses malformed tokens before anything listens
    # added first, so it runs after the auth check: an anonymous /api/* caller gets 401, not 413
    app.add_middleware(LimitRequestBody, max_bytes=ctx.settings.http_max_request_bytes,
                       timeout=ctx.settings.http_body_timeout_seconds)
    app.add_middleware(RequireAuth, settings=ctx.settings)
    health_store = ctx.health  # opened now: the first health check must not open connections

    @app.get("/healthz")
    def healthz(request: Request) -> JSONResponse:
        """Up or not, on a handle no user query holds. Where, what and how much (store path, database,
        ingest counters) only for callers who may see data."""
        ok = health_store.ping()
        body: dict[str, object] = {"status": "ok" if ok else "degraded", "services": sorted(ctx.services)}
        if not auth_on or is_authorized(request, ctx.settings):
            body |= {"store": ctx.store.url.redacted(), "database": ctx.store.database}
            ingest = ctx.services.get("ingest")
            if ingest is not None and hasattr(ingest, "stats"):
                body["ingest"] = ingest.stats()  # per signal: requests, accepted, rejected, stored, failures
            body["queries"] = ctx.queries.stats()  # pooled handles in use, callers waiting for one
            memory = ctx.services.get("memory")
            if memory is not None and hasattr(memory, "stats"):
                body["memory"] = memory.stats()  # resident size, releases of freed memory and what they gave back
        return JSONResponse(body, status_code=200 if ok else 503)

    for mount in mounts():
        mount(app, ctx)
    return app


async def run(settings: Settings, ready: Callable[[ServerContext], None] | None = None) -> None:
    store = Store.from_settings(settings)
    applied = migrate(store, settings)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    ctx = ServerContext(settings=settings, store=store)
    app = build_app(ctx)
    sock = bind_socket(settings.host, settings.port, "the HTTP API")
    # a chat message (socket.io over a WebSocket) is held to the same size as a request body
    config = uvicorn.Config(app, log_level="warning", lifespan="on",
                            http=head_deadline_h11(settings.http_header_timeout_seconds),
                            ws_max_size=settings.http_max_request_bytes)
    http = QuietUvicorn(config)

    started: list[Service] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for factory in service_factories():
            service = factory(ctx)
            await service.start()
            ctx.services[service.name] = service
            started.append(service)
        http_task = asyncio.create_task(http.serve(sockets=[sock]))
        while not http.started and not http_task.done():
            await asyncio.sleep(0.05)
        if http_task.done():
            http_task.result()
            raise RuntimeError(f"HTTP server on {settings.host}:{settings.port} did not start")
        port = sock.getsockname()[1]
        print(f"otel-ai serving: chat and API on http://{settings.host}:{port}", flush=True)
        tune_gc()
        if ready:
            ready(ctx)
        await stop.wait()
        log.info("shutting down")
        http.should_exit = True
        await http_task
    finally:
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("error stopping %s", service.name)
        ctx.close()
        store.close()
