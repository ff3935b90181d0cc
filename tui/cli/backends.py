"""`mlx-workbench backends`: cloud backends from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from engine.cloud import KINDS
from tui.cli.common import CLIError, add_json, table, workbench, wrap


def register(sub: argparse._SubParsersAction) -> None:
    backends = sub.add_parser("backends", help="cloud backends: list, add, rm, health, reset, trip")
    bsub = backends.add_subparsers(dest="backends_command", metavar="ACTION", required=True)
    p = bsub.add_parser("list")
    add_json(p)
    p.set_defaults(func=wrap(_backends_list))
    p = bsub.add_parser("add", help="add or replace a backend")
    p.add_argument("name")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument(
        "--base-url",
        help="required for openai-compatible; openai and anthropic default to "
        "https://api.openai.com/v1 and https://api.anthropic.com",
    )
    for opt, typ, text in (
        ("connect-timeout", float, "seconds for one connect (default 3)"),
        (
            "deadline",
            float,
            "seconds to the first token, retries included; then the next step of the chain is tried (default 15)",
        ),
        ("idle-timeout", float, "seconds of silence mid-answer before it counts as stalled (default 60)"),
        (
            "timeout",
            float,
            "cap on the whole answer in seconds (default: none, so long healthy answers are "
            "never cut; the idle timeout ends a stalled one)",
        ),
        ("retries", int, "retries after a connect error, 429 or 5xx, within the deadline (default 2)"),
        ("fail-max", int, "failures in a row that open the breaker (default 5)"),
        ("reset-timeout", float, "seconds the breaker stays open before one probe (default 30)"),
    ):
        p.add_argument(f"--{opt}", type=typ, help=text)
    p.set_defaults(func=wrap(_backends_add))
    p = bsub.add_parser("rm", help="remove a backend (refused while rules use it, unless --force)")
    p.add_argument("name")
    p.add_argument(
        "--force", action="store_true", help="remove it even though rules use it (their steps on it are then skipped)"
    )
    p.set_defaults(func=wrap(_backends_rm))
    p = bsub.add_parser("health", help="breaker state, failures, latency of every backend")
    add_json(p)
    p.set_defaults(func=wrap(_backends_health))
    for name, text in (
        ("reset", "close the backend's breaker (for every process on this database)"),
        ("trip", "open the backend's breaker now (for every process on this database)"),
    ):
        p = bsub.add_parser(name, help=text)
        p.add_argument("name")
        p.set_defaults(func=wrap(_backends_breaker), action=name)


def _backends_list(args: argparse.Namespace, ctx: Any) -> int:
    from router.secrets import Secrets

    _, store = ctx
    secrets = Secrets()
    recs = store.list_backends()
    if args.json:
        print(json.dumps([{**asdict(b), "key": secrets.source(b.name)} for b in recs], indent=2))
        return 0
    table(
        [["local", "mlx", "(built in)", "-", "-"]]
        + [[b.name, b.kind, b.base_url, secrets.source(b.name) or "none", json.dumps(b.settings)] for b in recs],
        ["NAME", "KIND", "BASE URL", "KEY", "SETTINGS"],
    )
    return 0


# CloudConfig's setting names, as the user typed them here.
_FLAGS = {
    "base_url": "--base-url",
    "retries": "--retries",
    "fail_max": "--fail-max",
    "reset_timeout": "--reset-timeout",
    "total_timeout": "--timeout",
    "connect_timeout": "--connect-timeout",
    "idle_timeout": "--idle-timeout",
    "deadline": "--deadline",
}


def _backends_add(args: argparse.Namespace, ctx: Any) -> int:
    from router.store import BackendRecord
    from router.workbench import cloud_config

    _, store = ctx
    settings = {
        k: v
        for k, v in {
            "retries": args.retries,
            "fail_max": args.fail_max,
            "reset_timeout": args.reset_timeout,
            "total_timeout": args.timeout,
            "connect_timeout": args.connect_timeout,
            "idle_timeout": args.idle_timeout,
            "deadline": args.deadline,
        }.items()
        if v is not None
    }
    from engine.cloud import default_base_url

    base_url = args.base_url or default_base_url(args.kind)
    if not base_url:
        raise ValueError(
            f"--base-url is required for an {args.kind} backend (e.g. http://127.0.0.1:11434/v1 for Ollama)"
        )
    rec = BackendRecord(args.name, args.kind, base_url, settings)
    try:
        cloud_config(rec)  # validates kind, URL and settings before anything is saved
    except ValueError as exc:
        setting, sep, why = str(exc).partition(":")
        raise CLIError(f"{_FLAGS[setting]}:{why}" if sep and setting in _FLAGS else str(exc)) from None
    store.save_backend(rec)
    print(f"saved backend {args.name}; set its key with `mlx-workbench keys set {args.name}`")
    if not store.cloud_routing():
        print("note: cloud routing is off, so no request goes to it yet: `mlx-workbench cloud on` to use it")
    return 0


def _backends_rm(args: argparse.Namespace, ctx: Any) -> int:
    from router.rules import rules_using

    config, store = ctx
    if store.get_backend(args.name) is None:
        raise CLIError(f"no backend named {args.name}")
    uses = [f"rule #{r.id} {r.pattern} ({how})" for r, how in rules_using(store.list_rules(), args.name)]
    if store.get_setting("default_backend", config.default_backend) == args.name:
        uses.append("the default route (setting default_backend)")
    if uses and not args.force:
        raise CLIError(
            f"backend {args.name} is in use by {', '.join(uses)}; edit or remove those first, "
            "or pass --force to remove it anyway. Nothing was removed"
        )
    store.delete_backend(args.name)
    print(f"removed backend {args.name}")
    if uses:
        print(
            f"warning: {args.name} is still named by {', '.join(uses)}; those steps are now skipped "
            "as 'no such backend'",
            file=sys.stderr,
        )
    return 0


def _backends_health(args: argparse.Namespace, ctx: Any) -> int:
    snaps = workbench(ctx).snapshots()
    if args.json:
        print(json.dumps([asdict(s) for s in snaps], indent=2))
        return 0

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f}ms"

    table(
        (
            [
                s.name,
                s.kind,
                s.state,
                f"{s.consecutive_failures}/{s.fail_max}" if s.fail_max else "-",
                s.requests,
                s.errors,
                ms(s.latency_p50_s),
                ms(s.latency_p95_s),
                s.last_error or "",
            ]
            for s in snaps
        ),
        ["NAME", "KIND", "STATE", "FAILS", "REQS", "ERRS", "P50", "P95", "LAST ERROR"],
    )
    return 0


def _backends_breaker(args: argparse.Namespace, ctx: Any) -> int:
    wb = workbench(ctx)
    if args.action == "reset":
        wb.reset_breaker(args.name)
        print(f"breaker of {args.name} closed")
    else:
        wb.trip_breaker(args.name)
        print(f"breaker of {args.name} open")
    return 0
