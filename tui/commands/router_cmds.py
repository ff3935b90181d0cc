"""`mlx-workbench rules | backends | keys`: the routing table and credentials from the shell."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict
from typing import Any, Callable, Iterable

BACKEND_KINDS = ("openai", "anthropic", "openai-compatible")


class CLIError(Exception):
    """A one-line message for stderr, exit code 1."""


def register(sub: argparse._SubParsersAction) -> None:
    rules = sub.add_parser("rules", help="routing rules: list, add, edit, rm, enable, disable, explain")
    rsub = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    p = rsub.add_parser("list", help="rules in match order")
    _json(p)
    p.set_defaults(func=_wrap(_rules_list))
    for name, needs_id in (("add", False), ("edit", True)):
        p = rsub.add_parser(name, help=f"{name} a rule")
        if needs_id:
            p.add_argument("id", type=int)
            p.add_argument("--pattern")
        else:
            p.add_argument("pattern", help="exact name, glob (gpt-*), or re:<regex>")
        p.add_argument("--backend", "-b", required=not needs_id, help="target backend (local, or a backend name)")
        p.add_argument("--model", "-m", help="model name to send (default: the requested name)")
        p.add_argument("--fallback", "-f", action="append", metavar="BACKEND[:MODEL]",
                       help="fallback step, in order (repeatable)")
        if needs_id:
            p.add_argument("--no-fallbacks", action="store_true", help="remove all fallbacks")
        p.add_argument("--priority", "-p", type=int)
        p.add_argument("--disabled", action="store_true", default=None)
        p.add_argument("--note")
        _json(p)
        p.set_defaults(func=_wrap(_rules_edit if needs_id else _rules_add))
    for name in ("rm", "enable", "disable"):
        p = rsub.add_parser(name, help=f"{name} a rule")
        p.add_argument("id", type=int)
        p.set_defaults(func=_wrap(_rules_toggle), action=name)
    p = rsub.add_parser("explain", help="which rule a model name hits, and the attempt chain")
    p.add_argument("model")
    _json(p)
    p.set_defaults(func=_wrap(_rules_explain))

    backends = sub.add_parser("backends", help="cloud backends: list, add, rm, health")
    bsub = backends.add_subparsers(dest="backends_command", metavar="ACTION", required=True)
    p = bsub.add_parser("list")
    _json(p)
    p.set_defaults(func=_wrap(_backends_list))
    p = bsub.add_parser("add", help="add or replace a backend")
    p.add_argument("name")
    p.add_argument("--kind", required=True, choices=BACKEND_KINDS)
    p.add_argument("--base-url", help="required for openai-compatible; openai and anthropic default to "
                                      "https://api.openai.com/v1 and https://api.anthropic.com")
    for opt, typ in (("retries", int), ("fail-max", int), ("reset-timeout", float), ("timeout", float),
                     ("connect-timeout", float), ("idle-timeout", float)):
        p.add_argument(f"--{opt}", type=typ)
    p.set_defaults(func=_wrap(_backends_add))
    p = bsub.add_parser("rm")
    p.add_argument("name")
    p.set_defaults(func=_wrap(_backends_rm))
    p = bsub.add_parser("health", help="breaker state, failures, latency of every backend")
    _json(p)
    p.set_defaults(func=_wrap(_backends_health))

    keys = sub.add_parser("keys", help="API keys in the system keyring (never on the command line)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("set", help="store a key: typed at a hidden prompt, or one line on stdin")
    p.add_argument("name", help="backend name (or 'listener' for the listener's own key)")
    p.set_defaults(func=_wrap(_keys_set, needs_store=False))
    p = ksub.add_parser("rm")
    p.add_argument("name")
    p.set_defaults(func=_wrap(_keys_rm, needs_store=False))
    p = ksub.add_parser("status", help="which backends have a key, and where it comes from")
    _json(p)
    p.set_defaults(func=_wrap(_keys_status))


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _wrap(fn: Callable[[argparse.Namespace, Any], int], needs_store: bool = True) -> Callable[[argparse.Namespace], int]:
    # Keys live in the keyring, not the database: `keys set` must work even when the DB cannot be opened.
    def run(args: argparse.Namespace) -> int:
        from router.config import ConfigError, load_config
        from router.rules import RuleError
        from router.secrets import KeyringUnavailableError
        from router.store import Store, StoreError

        try:
            config = load_config(args.config)
            store = Store.open(config.database) if needs_store else None
        except (ConfigError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for notice in store.notices if store else ():
            print(f"note: {notice}", file=sys.stderr)
        try:
            return fn(args, (config, store))
        except (CLIError, RuleError, KeyringUnavailableError, ValueError, KeyError) as exc:
            print(f"error: {str(exc).strip(chr(39))}", file=sys.stderr)
            return 1
        finally:
            if store is not None:
                store.close()

    return run


def _table(rows: Iterable[Iterable[Any]], header: list[str]) -> None:
    data = [header] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in data) for i in range(len(header))]
    for r in data:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _rule_dict(r: Any) -> dict[str, Any]:
    d = asdict(r)
    d["fallbacks"] = [str(s) for s in r.fallbacks]
    return d


def _known_backends(store: Any) -> set[str]:
    return {"local"} | {b.name for b in store.list_backends()}


def _rules_list(args: argparse.Namespace, ctx: Any) -> int:
    from router.rules import order

    _, store = ctx
    rules = order(store.list_rules())
    if args.json:
        print(json.dumps([_rule_dict(r) for r in rules], indent=2))
    elif not rules:
        print("no rules: every model goes to the default route (local)")
    else:
        _table(([r.id, r.pattern, r.backend, r.model or "(same)", ", ".join(map(str, r.fallbacks)) or "-",
                 r.priority, "yes" if r.enabled else "no", r.note] for r in rules),
               ["ID", "PATTERN", "BACKEND", "MODEL", "FALLBACKS", "PRIO", "ENABLED", "NOTE"])
    return 0


def _apply(rule: Any, args: argparse.Namespace) -> None:
    from router.rules import Step

    if getattr(args, "pattern", None) is not None:
        rule.pattern = args.pattern
    if args.backend is not None:
        rule.backend = args.backend
    if args.model is not None:
        rule.model = args.model or None
    if getattr(args, "no_fallbacks", False):
        rule.fallbacks = []
    if args.fallback:
        rule.fallbacks = [Step.parse(f) for f in args.fallback]
    if args.priority is not None:
        rule.priority = args.priority
    if args.disabled is not None:
        rule.enabled = not args.disabled
    if args.note is not None:
        rule.note = args.note


def _rules_add(args: argparse.Namespace, ctx: Any) -> int:
    from router.rules import Rule, validate_rule

    _, store = ctx
    rule = Rule(pattern=args.pattern, backend=args.backend)
    _apply(rule, args)
    validate_rule(rule, _known_backends(store))
    store.add_rule(rule)
    print(json.dumps(_rule_dict(rule)) if args.json else f"added rule {rule.id}: {rule.pattern} -> {rule.backend}")
    return 0


def _rules_edit(args: argparse.Namespace, ctx: Any) -> int:
    from router.rules import validate_rule

    _, store = ctx
    rule = store.get_rule(args.id)
    if rule is None:
        raise CLIError(f"no rule with id {args.id}")
    _apply(rule, args)
    validate_rule(rule, _known_backends(store))
    store.update_rule(rule)
    print(json.dumps(_rule_dict(rule)) if args.json else f"updated rule {rule.id}")
    return 0


def _rules_toggle(args: argparse.Namespace, ctx: Any) -> int:
    _, store = ctx
    rule = store.get_rule(args.id)
    if rule is None:
        raise CLIError(f"no rule with id {args.id}")
    if args.action == "rm":
        store.delete_rule(args.id)
        print(f"removed rule {args.id}")
    else:
        rule.enabled = args.action == "enable"
        store.update_rule(rule)
        print(f"rule {args.id} {'enabled' if rule.enabled else 'disabled'}")
    return 0


def _workbench(ctx: Any) -> Any:
    from router.workbench import Workbench

    config, store = ctx
    return Workbench(config, store)


def _rules_explain(args: argparse.Namespace, ctx: Any) -> int:
    ex = _workbench(ctx).router.explain(args.model)
    if args.json:
        print(json.dumps({
            "model": ex.model, "rule": _rule_dict(ex.rule) if ex.rule else None, "default_used": ex.default_used,
            "beaten": [{"rule": _rule_dict(r), "reason": why} for r, why in ex.beaten],
            "chain": [asdict(s) for s in ex.chain],
        }, indent=2))
        return 0
    print(f"model: {ex.model}")
    print(f"rule:  #{ex.rule.id} {ex.rule.pattern}" if ex.rule else "rule:  none matched: the default route")
    for r, why in ex.beaten:
        print(f"  beat #{r.id} {r.pattern}: {why}")
    print("chain:")
    for i, s in enumerate(ex.chain, 1):
        print(f"  {i}. {s.backend}/{s.model} [{s.state}]" + (f" skipped: {s.reason}" if s.skipped else ""))
    return 0


def _backends_list(args: argparse.Namespace, ctx: Any) -> int:
    from router.secrets import Secrets

    _, store = ctx
    secrets = Secrets()
    recs = store.list_backends()
    if args.json:
        print(json.dumps([{**asdict(b), "key": secrets.source(b.name)} for b in recs], indent=2))
        return 0
    _table([["local", "mlx", "(built in)", "-", "-"]] +
           [[b.name, b.kind, b.base_url, secrets.source(b.name) or "none", json.dumps(b.settings)] for b in recs],
           ["NAME", "KIND", "BASE URL", "KEY", "SETTINGS"])
    return 0


def _backends_add(args: argparse.Namespace, ctx: Any) -> int:
    from router.store import BackendRecord
    from router.workbench import cloud_config

    _, store = ctx
    settings = {k: v for k, v in {
        "retries": args.retries, "fail_max": args.fail_max, "reset_timeout": args.reset_timeout,
        "total_timeout": args.timeout, "connect_timeout": args.connect_timeout, "idle_timeout": args.idle_timeout,
    }.items() if v is not None}
    from engine.cloud import default_base_url

    base_url = args.base_url or default_base_url(args.kind)
    if not base_url:
        raise ValueError(f"--base-url is required for an {args.kind} backend (e.g. http://127.0.0.1:11434/v1 for Ollama)")
    rec = BackendRecord(args.name, args.kind, base_url, settings)
    cloud_config(rec)  # validates kind, URL and settings before anything is saved
    store.save_backend(rec)
    print(f"saved backend {args.name}; set its key with `mlx-workbench keys set {args.name}`")
    return 0


def _backends_rm(args: argparse.Namespace, ctx: Any) -> int:
    _, store = ctx
    if not store.delete_backend(args.name):
        raise CLIError(f"no backend named {args.name}")
    print(f"removed backend {args.name}")
    return 0


def _backends_health(args: argparse.Namespace, ctx: Any) -> int:
    snaps = _workbench(ctx).snapshots()
    if args.json:
        print(json.dumps([asdict(s) for s in snaps], indent=2))
        return 0

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f}ms"

    _table(([s.name, s.kind, s.state, f"{s.consecutive_failures}/{s.fail_max}" if s.fail_max else "-",
             s.requests, s.errors, ms(s.latency_p50_s), ms(s.latency_p95_s), s.last_error or ""] for s in snaps),
           ["NAME", "KIND", "STATE", "FAILS", "REQS", "ERRS", "P50", "P95", "LAST ERROR"])
    return 0


def _keys_set(args: argparse.Namespace, ctx: Any) -> int:
    from router.secrets import Secrets

    try:
        if sys.stdin.isatty():
            key = getpass.getpass(f"API key for {args.name} (input hidden): ")
        else:
            key = sys.stdin.readline()
    except EOFError:  # Ctrl-D at the hidden prompt
        key = ""
    key = key.strip()
    if not key:
        raise CLIError("no key given (type it at the prompt, or pipe it on stdin)")
    Secrets().set(args.name, key)
    print(f"stored the key for {args.name} in the system keyring")
    return 0


def _keys_rm(args: argparse.Namespace, ctx: Any) -> int:
    from router.secrets import Secrets

    if not Secrets().delete(args.name):
        raise CLIError(f"no key stored for {args.name}")
    print(f"removed the key for {args.name}")
    return 0


def _keys_status(args: argparse.Namespace, ctx: Any) -> int:
    from router.secrets import Secrets, env_var_for

    _, store = ctx
    secrets = Secrets()
    names = [b.name for b in store.list_backends()] + ["listener"]
    status = secrets.status(names)
    if args.json:
        print(json.dumps({n: status[n] for n in names}))
        return 0
    if not secrets.keyring_usable():
        print("note: no usable keyring; keys can only come from environment variables", file=sys.stderr)
    _table(([n, status[n] or "none", env_var_for(n)] for n in names), ["NAME", "KEY FROM", "ENV VAR"])
    return 0
