"""store: the only code that talks to ClickHouse (clickhouse-connect over chDB or HTTP)."""

from store.client import (
    QueryResult,
    Store,
    StoreBusy,
    StoreError,
    StorePool,
    StoreURL,
    parse_url,
    quote_ident,
    quote_literal,
)

__all__ = ["QueryResult", "Store", "StoreBusy", "StoreError", "StorePool", "StoreURL", "parse_url", "quote_ident",
           "quote_literal"]
