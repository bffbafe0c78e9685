"""`POST /api/sql {sql}`: the SQL guard over HTTP (the same guard and limits as the agent's SQL tool).

200 {columns, rows, sql} with the SQL actually run; 400 {error} when the body is not `{"sql": "..."}`,
the guard refuses the query, ClickHouse rejects it (unknown column, timeout, memory, result bytes), or
the JSON answer would exceed `api_max_response_bytes`; 503 when `sql_concurrency` queries are already
running. Each query runs on a handle of its own (ctx.query_handle), never on the server's.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from otel_ai.context import ServerContext
from store import StoreBusy
from tools.result import ToolResult
from tools.sql import SqlLimits, run_sql

MAX_BODY_BYTES = 200_000


def busy_response(exc: StoreBusy) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})


def mount(app: FastAPI, ctx: ServerContext) -> None:
    limits = SqlLimits.from_settings(ctx.settings)
    max_response = ctx.settings.api_max_response_bytes

    @app.post("/api/sql")
    async def api_sql(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            body = json.loads(raw or b"null")
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder recurses
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            return JSONResponse({"error": 'send JSON {"sql": "SELECT ..."}'}, status_code=400)
        try:
            async with ctx.query_handle() as store:
                result: ToolResult = await run_in_threadpool(run_sql, store, body["sql"], limits=limits)
        except StoreBusy as exc:
            return busy_response(exc)
        if not result.ok:
            return JSONResponse({"error": result.error, "sql": result.sql[0] if result.sql else None},
                                status_code=400)
        payload = jsonable_encoder({"columns": result.columns, "rows": result.rows, "sql": result.sql[0]})
        encoded = await run_in_threadpool(json.dumps, payload, ensure_ascii=False, allow_nan=False,
                                          separators=(",", ":"))
        size = len(encoded.encode())
        if size > max_response:
            return JSONResponse({"error": f"the result is {size:,} bytes as JSON, over the API cap of {max_response:,} "
                                          "(OTEL_AI_API_MAX_RESPONSE_BYTES): select fewer or shorter columns, or fewer "
                                          "rows", "sql": result.sql[0]}, status_code=400)
        return Response(encoded, media_type="application/json")
