"""store: the only code that talks to ClickHouse (clickhouse-connect over chDB or HTTP)."""

from store.client import QueryResult, Store, StoreError, StoreURL, parse_url, quote_ident

__all__ = ["QueryResult", "Store", "StoreError", "StoreURL", "parse_url", "quote_ident"]
