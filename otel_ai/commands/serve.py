"""`otel-ai serve`: receivers, scorer, API and chat in one process."""

from __future__ import annotations

import argparse
import asyncio
import sys

from otel_ai.commands.common import add_data_option, settings_from_args


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    add_data_option(parser)
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="chat UI and HTTP API port (default 8000)")
    parser.add_argument("--otlp-grpc-port", type=int, help="OTLP/gRPC port (default 4317)")
    parser.add_argument("--otlp-http-port", type=int, help="OTLP/HTTP port (default 4318)")


def serve_settings(args: argparse.Namespace):  # noqa: ANN201
    return settings_from_args(
        args,
        host=args.host,
        port=args.port,
        otlp_grpc_port=args.otlp_grpc_port,
        otlp_http_port=args.otlp_http_port,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run receivers, scorer, API and chat UI")
    add_serve_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from otel_ai.server import run as run_server

    try:
        asyncio.run(run_server(serve_settings(args)))
    except OSError as exc:  # a port in use: say which, without a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
