"""Decoding OTLP request bodies (protobuf or OTLP/JSON, optionally gzip) with precise errors.

OTLP/JSON differs from protobuf's canonical JSON in one way that matters: trace and span ids are
hex strings, not base64. They are rewritten to base64 before `json_format.ParseDict`; an id that
is not valid hex becomes a 1-byte id so the item is rejected (partial success) rather than the
whole request. Unknown fields are ignored, as the OTLP spec asks of receivers.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.mapping import Rows, logs_rows, metrics_rows, traces_rows


class BadRequest(ValueError):
    """A body that is not a valid OTLP request (answered INVALID_ARGUMENT / 400)."""


class TooLarge(ValueError):
    """A body (or its decompressed form) above the configured limit (413 / RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: its messages, its mapping to rows and how rejections are reported."""

    name: str  # traces | logs | metrics
    noun: str
    request: type[Message]
    response: type[Message]
    partial: type[Message]
    rejected_field: str
    to_rows: Any  # Callable[[Message], Rows]
    grpc_service: str

    def response_for(self, rows: Rows) -> Message:
        if not rows.rejected:
            return self.response()
        partial = self.partial(error_message=rows.error_message(self.noun))
        setattr(partial, self.rejected_field, rows.rejected)
        return self.response(partial_success=partial)


SIGNALS: dict[str, Signal] = {
    "traces": Signal(
        "traces", "spans", ExportTraceServiceRequest, ExportTraceServiceResponse, ExportTracePartialSuccess,
        "rejected_spans", traces_rows, "opentelemetry.proto.collector.trace.v1.TraceService",
    ),
    "logs": Signal(
        "logs", "log records", ExportLogsServiceRequest, ExportLogsServiceResponse, ExportLogsPartialSuccess,
        "rejected_log_records", logs_rows, "opentelemetry.proto.collector.logs.v1.LogsService",
    ),
    "metrics": Signal(
        "metrics", "data points", ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        ExportMetricsPartialSuccess, "rejected_data_points", metrics_rows,
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
    ),
}

_ID_FIELDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8, "trace_id": 16, "span_id": 8, "parent_span_id": 8}


def gunzip(body: bytes, limit: int, charge: Callable[[int], None] | None = None, step: int = 256 * 1024) -> bytes:
    """Decompress a gzip body `step` bytes of output at a time, never past `limit` bytes.

    `charge(n)` is called for every piece before it is kept, so the caller can count decompressed
    bytes against its in-flight budget and refuse (by raising) while the body is still inflating.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pieces: list[bytes] = []
    total = 0
    data = body
    try:
        while True:
            piece = d.decompress(data, step)
            data = d.unconsumed_tail
            total += len(piece)
            if total > limit:
                raise TooLarge(f"decompressed body exceeds the limit of {limit} bytes")
            if piece:
                if charge is not None:
                    charge(len(piece))
                pieces.append(piece)
            if d.eof or not (piece or data):
                break
    except zlib.error as exc:
        raise BadRequest(f"body is not valid gzip: {exc}") from None
    if not d.eof:
        raise BadRequest("body is not valid gzip: truncated stream")
    return b"".join(pieces)


def _hex_ids_to_base64(node: Any, depth: int = 0) -> None:  # noqa: ANN401
    """Rewrite OTLP/JSON hex ids in place so protobuf's JSON parser reads them as bytes."""
    if depth > 64:
        raise BadRequest("JSON nested deeper than 64 levels outside attribute values")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raw = b"\xff"  # not hex: an invalid id, rejected per item
                node[key] = base64.b64encode(raw).decode("ascii")
            elif isinstance(value, (dict, list)) and key not in ("value", "values", "kvlistValue", "arrayValue"):
                _hex_ids_to_base64(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item, depth + 1)


def parse(signal: Signal, body: bytes, content_type: str) -> Message:
    """A request message from a protobuf or OTLP/JSON body; BadRequest says exactly what is wrong."""
    message = signal.request()
    if content_type == "json":
        try:
            doc = json.loads(body)
        except RecursionError:
            raise BadRequest("invalid JSON: nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise BadRequest(f"invalid JSON: body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(doc, dict):
            raise BadRequest(f"invalid OTLP/JSON: expected an object, got {type(doc).__name__}")
        _hex_ids_to_base64(doc)
        try:
            json_format.ParseDict(doc, message, ignore_unknown_fields=True, max_recursion_depth=100)
        except json_format.ParseError as exc:
            raise BadRequest(f"invalid OTLP/JSON {signal.request.__name__}: {exc}") from None
        except (RecursionError, binascii.Error) as exc:
            raise BadRequest(f"invalid OTLP/JSON {signal.request.__name__}: {exc}") from None
        return message
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"invalid protobuf {signal.request.__name__}: {exc or 'cannot decode'}") from None
    except RecursionError:
        raise BadRequest(f"invalid protobuf {signal.request.__name__}: nested too deeply") from None
    return message


def to_rows(signal: Signal, body: bytes, content_type: str) -> Rows:
    """Parse and map one request body (runs in a worker thread)."""
    message = parse(signal, body, content_type)
    try:
        return signal.to_rows(message)
    except RecursionError:
        raise BadRequest("attribute values nested too deeply") from None
    except UnicodeDecodeError as exc:  # lazily decoded strings
        raise BadRequest(f"invalid UTF-8 in a string field: {exc.reason}") from None
    except DecodeError as exc:
        raise BadRequest(f"invalid protobuf {signal.request.__name__}: {exc}") from None
