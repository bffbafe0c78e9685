"""ingest: OTLP receivers feeding ClickHouse through the exporter's tables.

- `service`: `IngestService` (OTLP/gRPC + OTLP/HTTP, auth, bounded bytes in flight, answers) and
  `IngestThread` for in-process use;
- `otlp`: body decoding (protobuf, OTLP/JSON with hex ids, gzip) and the per-signal messages;
- `mapping`: OTLP -> column-oriented rows exactly as the Collector's ClickHouse exporter writes them;
- `values`: attribute values as Go's `pcommon.Value.AsString()` renders them;
- `writer`: the group-commit writer that acknowledges only committed rows.
"""
