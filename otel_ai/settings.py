"""Settings: env `OTEL_AI_*`, then `otel-ai.toml`, then defaults.

One object carries every knob so that serve, the CLI, tests and evals configure the same way.
Provider keys keep their usual names (OPENAI_API_KEY, ANTHROPIC_API_KEY, OLLAMA_BASE_URL, SLACK_*).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_TOML = "otel-ai.toml"


class Settings(BaseSettings):
    """All configuration of otel-ai."""

    model_config = SettingsConfigDict(
        env_prefix="OTEL_AI_",
        extra="ignore",
        toml_file=os.environ.get("OTEL_AI_CONFIG", DEFAULT_TOML),
        populate_by_name=True,
    )

    # storage
    clickhouse_url: str = Field(
        "chdb://./data",
        description="chdb://<dir> (embedded, default) or http(s)://user:pass@host:8123/db",
    )
    database: str = Field("otel", description="database holding the otel_* tables (HTTP URLs may name it)")
    ttl_days: int = Field(7, ge=0, description="retention of telemetry in days; 0 keeps data forever")
    cluster: str | None = Field(None, description="ClickHouse cluster name for the ON CLUSTER schema variant")

    # network
    host: str = "127.0.0.1"
    port: int = 8000
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    public_url: str | None = Field(None, description="URL users open the chat at (links from Slack)")
    server_url: str | None = Field(None, description="the otel-ai serve CLI commands use (default http://host:port)")

    # ingest
    ingest_token: SecretStr | None = None
    ingest_max_inflight_bytes: int = 256 * 1024 * 1024
    ingest_max_body_bytes: int = 64 * 1024 * 1024
    ingest_batch_rows: int = 50_000
    ingest_batch_wait_ms: int = 200
    ingest_max_wait_seconds: float = Field(5.0, gt=0, description="a request waiting longer turns new ones away (429)")
    ingest_decoder: Literal["python", "clickhouse"] = Field(
        "clickhouse", description="clickhouse: ClickHouse decodes OTLP (embedded store, groups of "
        "ingest_native_min_items or more); python: the reference mapper, always")
    ingest_native_min_items: int = Field(
        5_000, ge=0, description="per insert query a group needs (metrics: one per metric-type table it has "
        "points for): smaller groups use the python mapper (ClickHouse's fixed CPU cost per insert query)")

    # memory: freed memory is handed back to the OS when the process grew by this much since the last time
    memory_release_interval_seconds: float = Field(10.0, ge=0, description="how often to check; 0 turns it off")
    memory_release_growth_bytes: int = Field(256 * 1024**2, ge=0, description="growth that triggers a release")

    # anomaly scoring
    anomaly_window_seconds: int = 30
    anomaly_enabled: bool = True

    # models: role -> model spec ("builtin", "ollama:<m>", "openai:<m>", "anthropic:<m>"), comma = fallback chain
    model: str = "builtin"
    model_planner: str | None = None
    model_sql: str | None = None
    model_summary: str | None = None
    privacy_local_only: bool = Field(
        False, description="raw telemetry only goes to local models (builtin, ollama)"
    )
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(None, validation_alias=AliasChoices("OPENAI_BASE_URL"))
    anthropic_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL"))
    ollama_base_url: str = Field(
        "http://127.0.0.1:11434", validation_alias=AliasChoices("OLLAMA_BASE_URL", "OTEL_AI_OLLAMA_BASE_URL")
    )
    eval_judge: str | None = Field(None, description="model spec of the optional LLM judge in `otel-ai eval`")

    # chat UI auth
    auth_secret: SecretStr | None = None
    auth_users: str | None = Field(None, description="user:password pairs, comma separated")
    # HTTP API auth: bearer tokens for /api/* and /chat-files/* (comma separated, each >= 16 characters)
    api_token: SecretStr | None = None

    # limits for ad-hoc SQL (POST /api/sql, /sql in the chat, the agent's SQL tool)
    sql_max_result_bytes: int = Field(32 * 1024**2, ge=1024, description="ClickHouse max_result_bytes")
    sql_max_execution_time: int = Field(20, ge=1, description="seconds")
    sql_max_memory_bytes: int = Field(2 * 1024**3, ge=64 * 1024**2)
    sql_max_rows_to_read: int = Field(500_000_000, ge=1000)
    api_max_response_bytes: int = Field(16 * 1024**2, ge=1024, description="largest JSON body /api/sql returns")
    sql_concurrency: int = Field(2, ge=1, le=16, description="ad-hoc queries running at once (own connections)")
    http_max_request_bytes: int = Field(
        1024**2, ge=64 * 1024, description="largest request body of the chat, /api/* and Slack (413 above; "
        "OTLP has ingest_max_body_bytes)")
    http_body_timeout_seconds: float = Field(
        30.0, gt=0, description="time a request body of the chat, /api/*, Slack and OTLP/HTTP may take to arrive "
        "(408 after; a client trickling a body held a connection and its task for as long as it liked)")
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, description="time a request's head (request line and headers) may take to arrive on the HTTP "
        "and OTLP/HTTP ports, from the connection opening or the request's first byte (408 and close after; a "
        "client trickling header bytes held a connection and its task for ever)")

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_BOT_TOKEN"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET"))
    slack_api_url: str | None = Field(None, validation_alias=AliasChoices("SLACK_API_URL"))
    slack_allowed_channels: str | None = None
    slack_allowed_users: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls), file_secret_settings)

    def data_dir(self) -> Path | None:
        """The embedded store's directory, or None for a ClickHouse server."""
        if self.clickhouse_url.startswith("chdb://"):
            return Path(self.clickhouse_url.removeprefix("chdb://") or "./data").resolve()
        return None

    def role_model(self, role: str) -> str:
        """Model spec for a role (planner, sql, summary), defaulting to `model`."""
        return getattr(self, f"model_{role}", None) or self.model

    def model_choices(self) -> list[str]:
        """The models a caller may pick (chat settings, POST /api/ask): the configured roles' and builtin.

        Only these, so a caller cannot make the server spend its provider keys on another model."""
        specs = [self.role_model("planner"), self.model, self.role_model("sql"), self.role_model("summary"),
                 "builtin"]
        return list(dict.fromkeys(s for s in specs if s))


def load_settings(**overrides: object) -> Settings:
    """Settings from env and otel-ai.toml, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
