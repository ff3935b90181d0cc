"""`mlx-workbench rules`: the routing table from the shell."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from tui.cli.common import CLIError, add_json, rule_dict, table, workbench, wrap


def register(sub: argparse._SubParsersAction) -> None:
    rules = sub.add_parser("rules", help="routing rules: list, add, edit, rm, enable, disable, explain")
    rsub = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    p = rsub.add_parser("list", help="rules in match order")
    add_json(p)
    p.set_defaults(func=wrap(_rules_list))
    for name, needs_id in (("add", False), ("edit", True)):
        p = rsub.add_parser(name, help=f"{name} a rule")
        if needs_id:
            p.add_argument("id", type=int)
            p.add_argument("--pattern")
        else:
            p.add_argument("pattern", help="exact name, glob (gpt-*), or re:<regex>")
        p.add_argument("--backend", "-b", required=not needs_id, help="target backend (local, or a backend name)")
        p.add_argument("--model", "-m", help="model name to send (default: the requested name)")
        p.add_argument(
            "--fallback", "-f", action="append", metavar="BACKEND[:MODEL]", help="fallback step, in order (repeatable)"
        )
        if needs_id:
            p.add_argument("--no-fallbacks", action="store_true", help="remove all fallbacks")
        p.add_argument("--priority", "-p", type=int)
        p.add_argument("--disabled", action="store_true", default=None)
        p.add_argument("--note")
        add_json(p)
        p.set_defaults(func=wrap(_rules_edit if needs_id else _rules_add))
    for name in ("rm", "enable", "disable"):
        p = rsub.add_parser(name, help=f"{name} a rule")
        p.add_argument("id", type=int)
        p.set_defaults(func=wrap(_rules_toggle), action=name)
    p = rsub.add_parser("explain", help="which rule a model name hits, and the attempt chain")
    p.add_argument("model")
    add_json(p)
    p.set_defaults(func=wrap(_rules_explain))


def _known_backends(store: Any) -> set[str]:
    return {"local"} | {b.name for b in store.list_backends()}


def _rules_list(args: argparse.Namespace, ctx: Any) -> int:
    from router.rules import order

    _, store = ctx
    rules = order(store.list_rules())
    if args.json:
        print(json.dumps([rule_dict(r) for r in rules], indent=2))
    elif not rules:
        print("no rules: every model goes to the default route (local)")
    else:
        table(
            (
                [
                    r.id,
                    r.pattern,
                    r.backend,
                    r.model or "(same)",
                    ", ".join(map(str, r.fallbacks)) or "-",
                    r.priority,
                    "yes" if r.enabled else "no",
                    r.note,
                ]
                for r in rules
            ),
            ["ID", "PATTERN", "BACKEND", "MODEL", "FALLBACKS", "PRIO", "ENABLED", "NOTE"],
        )
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
    print(json.dumps(rule_dict(rule)) if args.json else f"added rule {rule.id}: {rule.pattern} -> {rule.backend}")
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
    print(json.dumps(rule_dict(rule)) if args.json else f"updated rule {rule.id}")
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


def _rules_explain(args: argparse.Namespace, ctx: Any) -> int:
    router = workbench(ctx).router
    ex = router.explain(args.model)
    if args.json:
        print(
            json.dumps(
                {
                    "model": ex.model,
                    "cloud_routing": router.cloud_routing,
                    "rule": rule_dict(ex.rule) if ex.rule else None,
                    "default_used": ex.default_used,
                    "beaten": [{"rule": rule_dict(r), "reason": why} for r, why in ex.beaten],
                    "chain": [asdict(s) for s in ex.chain],
                },
                indent=2,
            )
        )
        return 0
    print(f"model: {ex.model}")
    print(f"rule:  #{ex.rule.id} {ex.rule.pattern}" if ex.rule else "rule:  none matched: the default route")
    for r, why in ex.beaten:
        print(f"  beat #{r.id} {r.pattern}: {why}")
    print(f"cloud: {'on' if router.cloud_routing else 'off (cloud steps are skipped)'}")
    print("chain:")
    for i, s in enumerate(ex.chain, 1):
        print(f"  {i}. {s.backend}/{s.model} [{s.state}]" + (f" skipped: {s.reason}" if s.skipped else ""))
    return 0
