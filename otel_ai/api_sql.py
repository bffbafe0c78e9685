"""`POST /api/sql {sql}`: the SQL guard over HTTP (the same guard and limits as the agent's SQL tool).

200 {columns, rows, sql} with the SQL actually run; 400 {error} when the body is not `{"sql": "..."}`,
the guard refuses the query, or ClickHouse rejects it (unknown column, timeout, memory limit).
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from otel_ai.context import ServerContext
from tools.sql import run_sql

MAX_BODY_BYTES = 200_000


def mount(app: FastAPI, ctx: ServerContext) -> None:
    @app.post("/api/sql")
    async def api_sql(request: Request) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            return JSONResponse({"error": 'send JSON {"sql": "SELECT ..."}'}, status_code=400)
        result = await run_in_threadpool(run_sql, ctx.store, body["sql"])
        if not result.ok:
            return JSONResponse({"error": result.error, "sql": result.sql[0] if result.sql else None},
                                status_code=400)
        return JSONResponse(jsonable_encoder({"columns": result.columns, "rows": result.rows, "sql": result.sql[0]}))
