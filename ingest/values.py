"""OTLP attribute values rendered as strings exactly as the Collector's ClickHouse exporter does.

The exporter stores every attribute as `pcommon.Value.AsString()`: strings as-is, ints in decimal,
bools as `true`/`false`, doubles in Go's shortest ES6 form (`1`, `0.25`, `1e-7`, `1e+21`), bytes as
standard base64, arrays and maps as Go `encoding/json` output (sorted keys, no spaces, `<>&`
escaped). Matching it byte for byte keeps queries portable between a Collector and otel-ai.
"""

from __future__ import annotations

import base64
import json
import math
from decimal import Decimal
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue


class _Unrepresentable(ValueError):
    """NaN or infinity inside an array/map: Go's json.Marshal fails and AsString yields ''."""


def go_float(value: float) -> str:
    """A float64 as Go's AsString renders it (ES6 number-to-string: `1`, `0.00001`, `1e-7`, `1e+21`)."""
    if math.isinf(value) or math.isnan(value):
        text = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        return f"json: unsupported value: {text}"
    text = repr(value)  # shortest round-tripping digits, like Go's precision -1
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, _, exponent = text.partition("e")
        exp = int(exponent)
        return f"{mantissa}e-{-exp}" if exp < 0 else f"{mantissa}e+{exp:02d}"
    if "e" in text:
        return format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _go_json_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    if any(c in text for c in "<>&\u2028\u2029"):
        out = (
            out.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )
    return out


def _raw(value: AnyValue) -> Any:  # noqa: ANN401
    """The Go `AsRaw()` of a value, as a tagged Python object ready for `_go_json`."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    return None


def _go_json(obj: Any, depth: int = 0) -> str:  # noqa: ANN401
    if depth > 200:
        raise _Unrepresentable("nesting too deep")
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        return _go_json_string(obj)
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        if math.isinf(obj) or math.isnan(obj):
            raise _Unrepresentable("NaN/Inf")
        return go_float(obj)
    if isinstance(obj, list):
        return "[" + ",".join(_go_json(v, depth + 1) for v in obj) + "]"
    return "{" + ",".join(f"{_go_json_string(k)}:{_go_json(obj[k], depth + 1)}" for k in sorted(obj)) + "}"


def as_string(value: AnyValue) -> str:
    """`pcommon.Value.AsString()` for an OTLP AnyValue."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return go_float(value.double_value)
    if kind is None:
        return ""
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    try:
        return _go_json(_raw(value))
    except (_Unrepresentable, RecursionError):
        return ""


def attributes(kvs: Any) -> dict[str, str]:  # noqa: ANN401
    """A repeated KeyValue as the exporter's Map(String, String) value (later duplicates win).

    The hot loop of ingest: string values (most attributes) skip the oneof dispatch entirely.
    """
    out: dict[str, str] = {}
    for kv in kvs:
        value = kv.value
        out[kv.key] = value.string_value or as_string(value)
    return out
