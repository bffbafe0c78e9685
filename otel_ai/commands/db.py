"""`otel-ai db migrate|status|reset`: the schema of the store (embedded or a ClickHouse server/cluster)."""

from __future__ import annotations

import argparse
import json
import sys

from otel_ai.commands.common import add_data_option, settings_from_args
from otel_ai.commands.remote import open_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="schema migrations: migrate, status, reset")
    verbs = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, help_text in (
        ("migrate", "apply pending migrations"),
        ("status", "list migrations and whether each is applied"),
        ("reset", "drop otel-ai's tables (ALL DATA) and apply every migration again"),
        ("retention", "change the TTL of the existing telemetry tables"),
    ):
        v = verbs.add_parser(name, help=help_text)
        add_data_option(v)
        v.add_argument("--cluster", help="ClickHouse cluster name: ON CLUSTER, Replicated*MergeTree, Distributed")
        v.add_argument("--ttl-days", type=int, help="retention for new tables in days (0 = keep forever)")
        if name == "status":
            v.add_argument("--json", action="store_true", help="print JSON")
        if name == "reset":
            v.add_argument("--yes", action="store_true", help="confirm dropping every table and its data")
        if name == "retention":
            v.add_argument("days", type=int, help="keep telemetry this many days (0 = forever)")
        v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from store.migrations import migrate, reset, set_retention, status

    settings = settings_from_args(args, ttl_days=args.ttl_days, cluster=args.cluster)
    if args.db_command == "reset" and not args.yes:
        print(
            f"error: reset drops every otel-ai table in database {settings.database!r} with its data; "
            "run again with --yes to confirm",
            file=sys.stderr,
        )
        return 2
    store = open_store(settings, f"`otel-ai db {args.db_command}`",
                       "stop that serve first (it applies pending migrations itself when it starts)")
    try:
        if args.db_command == "migrate":
            done = migrate(store, settings)
            print(f"applied: {', '.join(done)}" if done else "up to date: no pending migrations")
        elif args.db_command == "retention":
            if args.days < 0:
                print("error: days must be >= 0", file=sys.stderr)
                return 2
            altered = set_retention(store, settings, args.days)
            print(f"retention {'removed' if args.days == 0 else f'set to {args.days} days'} on "
                  f"{len(altered)} tables" + "".join(f"\n  {sql}" for sql in altered))
        elif args.db_command == "reset":
            done = reset(store, settings)
            print(f"reset database {settings.database}; applied: {', '.join(done)}")
        else:
            rows = status(store)
            if args.json:
                print(json.dumps([
                    {"version": r.version, "name": r.name, "state": r.state, "checksum": r.checksum,
                     "applied_at": r.applied_at.isoformat() if r.applied_at else None}
                    for r in rows
                ], indent=2))
            else:
                print(f"store {store.url.redacted()}  database {store.database}")
                for r in rows:
                    when = r.applied_at.strftime("%Y-%m-%d %H:%M:%S") if r.applied_at else ""
                    print(f"{r.version:03d}  {r.name:<32} {r.state:<8} {when}")
            return 1 if any(r.state == "changed" for r in rows) else 0
    finally:
        store.close()
    return 0
