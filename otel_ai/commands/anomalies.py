"""`otel-ai anomalies train|score|list`: batch training and scoring, and the ranked anomaly list.

`list` asks the serve holding the store (`GET /api/anomalies`) when there is one; train and score
need the store itself, which a running serve holds (and it trains and scores by itself)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from otel_ai.commands.common import add_data_option, settings_from_args, terminal_text
from otel_ai.commands.remote import Server, ServerError, find_server, open_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomalies", help="train the anomaly model, score windows, list anomalies")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, since, text in (
        ("train", "24h", "train the autoencoder (and baseline) on the last --since of telemetry"),
        ("score", "30m", "score the closed windows of the last --since and store the anomalies"),
        ("list", "30m", "anomalies of the last --since, ranked by score"),
    ):
        v = verbs.add_parser(verb, help=text, description=text)
        add_data_option(v)
        v.add_argument("--since", default=since, help=f"how far back (e.g. 30m, 2h, 1d; default {since})")
        v.add_argument("--json", action="store_true", help="machine-readable output")
        v.add_argument("--server", help="URL of a running otel-ai serve (list only: serve trains and scores itself; "
                       "default: the serve at the configured host and port, if it holds the store)")
        if verb == "list":
            v.add_argument("--service", help="only this service")
            v.add_argument("--severity", choices=["info", "warning", "critical"], help="at least this severity")
            v.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.api import duration_seconds

    try:
        since = duration_seconds(args.since)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    if args.verb == "list":
        server = find_server(settings, args.server)
        if server is not None:
            return _list_remote(server, args)
    elif args.server:
        print(f"error: `anomalies {args.verb}` runs on the store itself; a running serve trains and scores "
              "by itself (stop it, or use `anomalies list --server`)", file=sys.stderr)
        return 2
    from store.migrations import migrate

    store = open_store(settings, f"`otel-ai anomalies {args.verb}`",
                       "pass --server URL of the otel-ai serve that holds it" if args.verb == "list" else
                       "a running serve trains and scores by itself; stop it first to run this by hand")
    try:
        migrate(store, settings)
        if args.verb == "list":
            from anomaly.api import list_anomalies

            try:
                rows = list_anomalies(store, since, args.service, None, args.severity, args.limit)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            _print_list(rows, args.json)
            return 0
        return _train_or_score(args, store, settings, since)
    finally:
        store.close()


def _train_or_score(args: argparse.Namespace, store: object, settings: object, since: float) -> int:
    from anomaly.scorer import AnomalyConfig, Scorer

    scorer = Scorer(store, int(settings.anomaly_window_seconds), AnomalyConfig())  # type: ignore[arg-type,attr-defined]
    now = time.time()
    w = scorer.window_seconds
    end = (now // w) * w
    if args.verb == "train":
        info = scorer.fit(end - since, end)
        if not scorer.normaliser or not scorer.normaliser.stats:
            print("error: no telemetry to train on in that window", file=sys.stderr)
            return 1
        out = {"version": scorer.model_version, **info}
        print(json.dumps(out, indent=2) if args.json else
              f"trained {scorer.model_version}: {info['entities']} entities, {info['windows']} windows, "
              f"{info['seconds']} s" + ("" if scorer.model else " (baseline only: not enough history for the model)"))
        return 0
    if not scorer.load():
        # cold start: learn the baseline from the history before the scored range
        scorer.fit(end - since - scorer.config.train_hours * 3600, end - since, train_model=False, persist=False)
    records = scorer.score_range(end - since, end)
    if args.json:
        print(json.dumps({"model_version": scorer.model_version, "anomalies": [r.as_dict() for r in records]},
                         indent=2))
    else:
        print(f"scored {args.since} with {scorer.model_version}: {len(records)} anomalies stored")
    return 0


def _list_remote(server: Server, args: argparse.Namespace) -> int:
    params: dict[str, object] = {"since": args.since, "limit": args.limit}
    if args.service:
        params["service"] = args.service
    if args.severity:
        params["severity"] = args.severity
    try:
        body = server.call("GET", "/api/anomalies", params=params, timeout=30)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return _print_list(body["anomalies"], args.json)


def _print_list(rows: list[dict], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no anomalies")
        return 0
    for r in rows:
        entity = r["service"] + (f" {r['operation']}" if r["operation"] else "")
        print(terminal_text(f"{r['window_start'][:19]}  {r['score']:6.2f}  {r['severity']:<8} {r['detector']:<11} "
                            f"{entity}: {r['explanation']}"))
    return 0
