"""`IngestService`: OTLP/gRPC and OTLP/HTTP receivers feeding one group-commit writer.

Every request goes through the same path: auth -> admission (bounded bytes in flight) -> decode and
map in a worker thread -> submit to the writer -> answer once its rows are committed. Answers
follow the OTLP spec so SDKs and Collectors do the right thing:

| outcome                       | gRPC                 | HTTP                     |
| ----------------------------- | -------------------- | ------------------------ |
| stored (maybe some rejected)  | OK + partial_success | 200 + partial_success    |
| malformed body                | INVALID_ARGUMENT     | 400                      |
| body above the limit          | RESOURCE_EXHAUSTED   | 413                      |
| too many bytes in flight      | RESOURCE_EXHAUSTED   | 429 + Retry-After        |
| store failed / shutting down  | UNAVAILABLE          | 503 + Retry-After        |
| missing/wrong bearer token    | UNAUTHENTICATED      | 401                      |

Retryable gRPC errors carry a google.rpc.RetryInfo so SDKs back off by the advised delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.rpc.code_pb2 import Code
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from ingest.mapping import Rows
from ingest.native import METRIC_TABLES, NATIVE_SIGNALS, NativeDecoder
from ingest.otlp import SIGNALS, BadRequest, Signal, TooLarge, gunzip, parse, to_rows
from ingest.writer import BatchWriter, RawRequest, WriterClosed
from otel_ai.context import QuietUvicorn, ServerContext, bind_socket
from otel_ai.http_limits import head_deadline_h11

log = logging.getLogger("otel_ai.ingest")

RETRY_AFTER_SECONDS = 1
COMMIT_TIMEOUT_SECONDS = 60.0


class Admission:
    """Bytes one request holds against the in-flight bound; grows as a body arrives or inflates."""

    def __init__(self, service: IngestService) -> None:
        self._service = service
        self.held = 0

    def grow(self, size: int) -> None:
        """Hold `size` more bytes, or raise IngestError (429 / RESOURCE_EXHAUSTED) if that passes the bound."""
        if size:
            self._service._reserve(self.held, size)
            self.held += size

    def release(self) -> None:
        self._service._release(self.held)
        self.held = 0


class IngestError(Exception):
    """A request answered with an error; `kind` picks the gRPC code and HTTP status."""

    GRPC = {
        "invalid": grpc.StatusCode.INVALID_ARGUMENT,
        "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "unavailable": grpc.StatusCode.UNAVAILABLE,
        "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
        "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    HTTP = {"invalid": 400, "too_large": 413, "exhausted": 429, "unavailable": 503, "unauthenticated": 401,
            "timeout": 408}
    RPC_CODE = {
        "invalid": Code.INVALID_ARGUMENT,
        "too_large": Code.RESOURCE_EXHAUSTED,
        "exhausted": Code.RESOURCE_EXHAUSTED,
        "unavailable": Code.UNAVAILABLE,
        "unauthenticated": Code.UNAUTHENTICATED,
        "timeout": Code.DEADLINE_EXCEEDED,
    }

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.kind in ("exhausted", "unavailable")


@dataclass
class SignalStats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    stored: int = 0
    failed_requests: int = 0


@dataclass
class _Counters:
    signals: dict[str, SignalStats] = field(default_factory=lambda: {name: SignalStats() for name in SIGNALS})
    refused: dict[str, int] = field(default_factory=dict)


class IngestService:
    """OTLP receivers (gRPC + HTTP) writing into `ctx.store`; see the module docstring."""

    name = "ingest"

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        s = ctx.settings
        self.host = s.host
        self.grpc_port: int = s.otlp_grpc_port
        self.http_port: int = s.otlp_http_port
        self.max_body = s.ingest_max_body_bytes
        self.max_inflight = s.ingest_max_inflight_bytes
        # An empty OTEL_AI_INGEST_TOKEN means no auth, like an unset one.
        self._token = (s.ingest_token.get_secret_value() if s.ingest_token else "") or None
        self._inflight_bytes = 0
        self._inflight_lock = threading.Lock()  # decompression charges bytes from worker threads
        self._started: dict[object, float] = {}  # requests being decoded or committed -> since when
        self.max_wait_seconds = s.ingest_max_wait_seconds
        self.body_timeout = s.http_body_timeout_seconds
        self._decoding = 0
        self._counters = _Counters()
        self._stats_lock = threading.Lock()
        self._writer: BatchWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: QuietUvicorn | None = None
        self._http_task: asyncio.Task | None = None
        self._accepting = False
        self.decoder = "python"  # which mapper runs, decided at start()

    # -- lifecycle -----------------------------------------------------------------------------

    def _choose_decoder(self) -> str:
        """`clickhouse` (ClickHouse decodes OTLP, embedded store only) or `python` (the reference mapper).

        From `OTEL_AI_INGEST_DECODER`, `clickhouse` by default: groups under the native threshold are mapped
        by Python anyway, and larger ones cost 1.25-2.5x less server CPU per span decoded by ClickHouse
        (8 to 32 concurrent exporters, docs/benchmarks.md).
        """
        wanted = self.ctx.settings.ingest_decoder
        return "clickhouse" if wanted == "clickhouse" and self.ctx.store.is_embedded else "python"

    async def start(self) -> None:
        s = self.ctx.settings
        self.decoder = self._choose_decoder()
        native = NativeDecoder() if self.decoder == "clickhouse" else None
        self._writer = BatchWriter(
            self.ctx.store.clone(),
            max_rows=s.ingest_batch_rows,
            max_wait=s.ingest_batch_wait_ms / 1000,
            expected=lambda: self._decoding,
            on_commit=self._committed,
            native=native,
            native_min_items=s.ingest_native_min_items,
        )
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="otel-ai-ingest-decode")
        self._accepting = True
        try:
            await self._start_grpc()
            await self._start_http()
        except BaseException:
            await self.stop()  # e.g. the HTTP port is taken: release the gRPC port and the writer
            raise
        log.info("OTLP receivers: gRPC %s:%d, HTTP %s:%d", self.host, self.grpc_port, self.host, self.http_port)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (they wait for their commit), flush."""
        self._accepting = False
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(grace=COMMIT_TIMEOUT_SECONDS / 2)
        if self._http_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, COMMIT_TIMEOUT_SECONDS / 2)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer.store.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        """Counts per signal (requests, items accepted/rejected/stored) and refused requests by reason."""
        with self._stats_lock:
            out: dict[str, Any] = {name: vars(st).copy() for name, st in self._counters.signals.items()}
            out["refused"] = dict(self._counters.refused)
        out["inflight_bytes"] = self._inflight_bytes
        if self._writer is not None:
            out["inserts"] = self._writer.inserts
            out["insert_seconds"] = round(self._writer.insert_seconds, 3)
            out["decoded_by_clickhouse"] = self._writer.native_requests
            out["decoded_by_python"] = self._writer.fallback_requests
        return out

    # -- the common request path ---------------------------------------------------------------

    def _committed(self, rows: Rows) -> None:
        # Called from the writer thread; signal found from the tables written when the rows do not say.
        name = rows.signal or (
            "traces" if "otel_traces" in rows.tables else "logs" if "otel_logs" in rows.tables else "metrics"
        )
        with self._stats_lock:
            self._counters.signals[name].stored += rows.accepted

    def _refuse(self, error: IngestError) -> IngestError:
        with self._stats_lock:
            self._counters.refused[error.kind] = self._counters.refused.get(error.kind, 0) + 1
        return error

    def check_token(self, header: str | None) -> None:
        if self._token is None:
            return
        if not header:
            raise self._refuse(IngestError("unauthenticated", "missing bearer token (Authorization: Bearer <token>)"))
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token.encode()):
            raise self._refuse(IngestError("unauthenticated", "invalid bearer token"))

    @contextlib.contextmanager
    def admit(self, size: int, declared: int = 0) -> Iterator[Admission]:
        """Reserve `size` bytes in flight or refuse with RESOURCE_EXHAUSTED / 429; the reservation can grow.
        A body still to arrive is only `declared` (checked against the body limit): its bytes are reserved as
        they come, so an upload that declares much and sends slowly holds no more than it sent.

        Also refused while the oldest request being decoded or committed has waited longer than
        `max_wait_seconds` (uploads still arriving do not count): under overload new requests get a quick
        429 instead of queueing until SDKs time out and resend (duplicates).
        """
        if not self._accepting:
            raise self._refuse(IngestError("unavailable", "otel-ai is shutting down; retry later"))
        if max(size, declared) > self.max_body:
            raise self._refuse(IngestError("too_large", f"request body of {max(size, declared)} bytes exceeds "
                                                        f"{self.max_body}"))
        now = time.monotonic()
        if self._started and now - min(self._started.values()) > self.max_wait_seconds:
            waited = now - min(self._started.values())
            raise self._refuse(
                IngestError("exhausted", f"ingest is busy: a request in flight has waited {waited:.1f}s; retry later")
            )
        admission = Admission(self)
        admission.grow(size)
        try:
            yield admission
        finally:
            admission.release()

    def _reserve(self, held: int, size: int) -> None:
        """Take `size` more bytes for a request already holding `held`; refuse past the bound."""
        with self._inflight_lock:
            others = self._inflight_bytes - held
            if others and self._inflight_bytes + size > self.max_inflight:
                raise self._refuse(
                    IngestError(
                        "exhausted",
                        f"ingest is busy: {self._inflight_bytes} bytes in flight (limit {self.max_inflight}); "
                        "retry later",
                    )
                )
            self._inflight_bytes += size

    def _release(self, size: int) -> None:
        with self._inflight_lock:
            self._inflight_bytes -= size

    async def export(
        self, signal: Signal, body: bytes, content_type: str, gzip: bool = False, admission: Admission | None = None
    ) -> Rows:
        """Decode, map, commit; returns the rows (with rejections) once they are stored.

        A gzip body's decompressed bytes are charged to `admission` as they come out.
        """
        assert self._writer is not None and self._pool is not None
        stats = self._counters.signals[signal.name]
        loop = asyncio.get_running_loop()
        native = self._writer.native is not None and signal.name in NATIVE_SIGNALS
        token = object()
        self._started[token] = time.monotonic()
        try:
            return await self._export(signal, body, content_type, gzip, admission, native, stats, loop)
        finally:
            del self._started[token]

    async def _export(
        self, signal: Signal, body: bytes, content_type: str, gzip: bool, admission: Admission | None,
        native: bool, stats: SignalStats, loop: asyncio.AbstractEventLoop,
    ) -> Rows:
        assert self._writer is not None and self._pool is not None
        self._decoding += 1  # the writer lingers for requests still being decoded
        try:
            if gzip:
                charge = admission.grow if admission is not None else None
                body = await loop.run_in_executor(self._pool, gunzip, body, self.max_body, charge)
            if native:
                raw = await loop.run_in_executor(self._pool, _raw_request, signal, body, content_type)
            else:
                rows = await loop.run_in_executor(self._pool, to_rows, signal, body, content_type)
        except BadRequest as exc:
            raise self._refuse(IngestError("invalid", str(exc))) from None
        except TooLarge as exc:
            raise self._refuse(IngestError("too_large", str(exc))) from None
        finally:
            self._decoding -= 1
        try:
            # wakes the writer, which now sees an accurate count
            future = self._writer.submit_raw(raw) if native else self._writer.submit(rows)
        except WriterClosed as exc:
            raise self._refuse(IngestError("unavailable", str(exc))) from None
        finally:
            self._writer.wake()
        try:
            committed = await asyncio.wait_for(asyncio.wrap_future(future), COMMIT_TIMEOUT_SECONDS)
        except BadRequest as exc:  # the Python fallback of a raw request found what upb let through
            raise self._refuse(IngestError("invalid", str(exc))) from None
        except Exception as exc:  # noqa: BLE001 - any store failure is retryable for the client
            with self._stats_lock:
                stats.requests += 1
                stats.failed_requests += 1
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise self._refuse(IngestError("unavailable", f"storage failed, nothing acknowledged: {message}")) from None
        if native:
            rows = committed  # counts and rejections are known only once ClickHouse (or the fallback) mapped it
        with self._stats_lock:
            stats.requests += 1
            stats.accepted += rows.accepted
            stats.rejected += rows.rejected
        return rows

    # -- gRPC ------------------------------------------------------------------------------------

    async def _start_grpc(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.max_body),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=None)
        for signal in SIGNALS.values():
            handler = grpc.unary_unary_rpc_method_handler(self._grpc_handler(signal))
            generic = grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": handler})
            server.add_generic_rpc_handlers((generic,))
        try:
            port = server.add_insecure_port(f"{self.host}:{self.grpc_port}")
        except RuntimeError:
            port = 0
        if port == 0:
            raise OSError(f"cannot bind OTLP/gRPC on {self.host}:{self.grpc_port}: address in use or unavailable")
        self.grpc_port = port
        await server.start()
        self._grpc = server

    def _grpc_handler(self, signal: Signal) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        async def handle(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                metadata = dict(context.invocation_metadata() or ())
                self.check_token(metadata.get("authorization"))
                with self.admit(len(body)) as admission:
                    rows = await self.export(signal, body, "proto", admission=admission)
            except IngestError as err:
                trailing: tuple[tuple[str, bytes], ...] = ()
                if err.retryable:
                    info = RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_SECONDS)).SerializeToString()
                    trailing = (("google.rpc.retryinfo-bin", info),)
                await context.abort(IngestError.GRPC[err.kind], err.message, trailing_metadata=trailing)
                raise  # unreachable: abort raises
            return signal.response_for(rows).SerializeToString()

        return handle

    # -- HTTP ------------------------------------------------------------------------------------

    async def _start_http(self) -> None:
        sock = bind_socket(self.host, self.http_port, "OTLP/HTTP")
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.asgi,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            timeout_graceful_shutdown=int(COMMIT_TIMEOUT_SECONDS / 2),
            http=head_deadline_h11(self.ctx.settings.http_header_timeout_seconds),
        )
        server = QuietUvicorn(config)
        self._http = server
        self._http_task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError(f"OTLP/HTTP server on {self.host}:{self.http_port} did not start")
            await asyncio.sleep(0.01)

    async def asgi(self, scope: dict, receive: Callable, send: Callable) -> None:
        """The OTLP/HTTP app: POST /v1/traces|logs|metrics."""
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/")
        signal = SIGNALS.get(path.removeprefix("/v1/")) if path.startswith("/v1/") else None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        as_json = ctype == "application/json"
        if signal is None:
            await _respond(send, 404, as_json, Status(code=Code.NOT_FOUND, message=f"no OTLP endpoint at {path}"))
            return
        if scope["method"] != "POST":
            await _respond(send, 405, as_json, Status(code=Code.UNIMPLEMENTED, message="use POST"), {"allow": "POST"})
            return
        try:
            self.check_token(headers.get("authorization"))
            if ctype not in ("application/x-protobuf", "application/protobuf", "application/json"):
                message = f"unsupported content-type {ctype!r}: use application/x-protobuf or application/json"
                await _respond(send, 415, False, Status(code=Code.INVALID_ARGUMENT, message=message))
                return
            encoding = headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "gzip", ""):
                raise IngestError("invalid", f"unsupported content-encoding {encoding!r}: use gzip or none")
            declared = headers.get("content-length")
            try:
                size = int(declared) if declared is not None else 0
            except ValueError:
                raise IngestError("invalid", f"bad content-length {declared!r}") from None
            with self.admit(0, declared=size) as admission:
                try:
                    async with asyncio.timeout(self.body_timeout):  # one deadline for the whole body
                        body = await self._read_body(receive, admission)
                except TimeoutError:
                    raise self._refuse(IngestError(
                        "timeout", f"request body not complete after {self.body_timeout:g} s "
                                   f"(OTEL_AI_HTTP_BODY_TIMEOUT_SECONDS; {admission.held:,} bytes arrived): send "
                                   "the body without pauses")) from None
                rows = await self.export(
                    signal, body, "json" if as_json else "proto", gzip=encoding == "gzip", admission=admission
                )
        except IngestError as err:
            extra = {"retry-after": str(RETRY_AFTER_SECONDS)} if err.retryable else {}
            if err.kind == "timeout":
                extra["connection"] = "close"  # the rest of a late body is not read
            status = Status(code=IngestError.RPC_CODE[err.kind], message=err.message)
            await _respond(send, IngestError.HTTP[err.kind], as_json, status, extra)
            return
        await _respond(send, 200, as_json, signal.response_for(rows))

    async def _read_body(self, receive: Callable, admission: Admission) -> bytes:
        """Read the body, charging bytes past the declared length (all of a chunked body) as they arrive,
        so an upload past the bounds is refused before it is buffered."""
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise IngestError("invalid", "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                raise self._refuse(IngestError("too_large", f"request body exceeds {self.max_body} bytes"))
            if total > admission.held:
                admission.grow(total - admission.held)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


def _raw_request(signal: Signal, body: bytes, content_type: str) -> RawRequest:
    """Validate a body with upb (the same errors as the Python path) and count its items for the writer.

    OTLP/JSON is re-serialized as protobuf so ClickHouse can read it; the fallback re-parses the
    protobuf rather than keeping the parsed message, so only bytes stay in memory while queued.
    """
    message = parse(signal, body, content_type)
    tables: frozenset[str] = frozenset()
    if signal.name == "traces":
        items = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)  # type: ignore[attr-defined]
    elif signal.name == "logs":
        items = sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)  # type: ignore[attr-defined]
    else:
        items, tables = _metric_points(message)
    proto = message.SerializeToString() if content_type == "json" else body
    return RawRequest(signal.name, proto, items, lambda: to_rows(signal, proto, "proto"), tables)


def _metric_points(message: Any) -> tuple[int, frozenset[str]]:  # noqa: ANN401
    """Data points of a metrics request and the tables they go to (the writer skips the other tables)."""
    items, kinds = 0, set()
    for rm in message.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    points = len(getattr(metric, kind).data_points)
                    if points:
                        items += points
                        kinds.add(kind)
    return items, frozenset(METRIC_TABLES[k] for k in kinds)


async def _respond(
    send: Callable, status: int, as_json: bool, message: Any, extra: dict[str, str] | None = None  # noqa: ANN401
) -> None:
    if as_json:
        body = json_format.MessageToJson(message, indent=None).encode()
        ctype = b"application/json"
    else:
        body = message.SerializeToString()
        ctype = b"application/x-protobuf"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class IngestThread:
    """An IngestService on its own event loop in a background thread (tests, simulator, benchmarks)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.service = IngestService(ctx)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otel-ai-ingest-loop", daemon=True)

    def start(self) -> IngestThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result(60)
        return self

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.service.host}:{self.service.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.service.host}:{self.service.http_port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(120)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> IngestThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mount(app: Any, ctx: ServerContext) -> None:  # noqa: ANN401 - a FastAPI app
    """Also answer OTLP/HTTP on the main port (`POST /v1/traces|logs|metrics`), for single-port setups."""

    async def otlp(scope: dict, receive: Callable, send: Callable) -> None:
        service = ctx.services.get(IngestService.name)
        if not isinstance(service, IngestService):
            status = Status(code=Code.UNAVAILABLE, message="ingest is not running")
            await _respond(send, 503, False, status, {"retry-after": str(RETRY_AFTER_SECONDS)})
            return
        await service.asgi(scope, receive, send)

    app.mount("/v1", otlp)
