"""`mlx-workbench keys`: API keys in the system keyring, never on the command line."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from tui.cli.common import CLIError, add_json, table, wrap


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys in the system keyring (never on the command line)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("set", help="store a key: typed at a hidden prompt, or one line on stdin")
    p.add_argument("name", help="backend name (or 'listener' for the listener's own key)")
    p.set_defaults(func=wrap(_keys_set, needs_store=False))
    p = ksub.add_parser("rm")
    p.add_argument("name")
    p.set_defaults(func=wrap(_keys_rm, needs_store=False))
    p = ksub.add_parser("status", help="which backends have a key, and where it comes from")
    add_json(p)
    p.set_defaults(func=wrap(_keys_status))


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
    table(([n, status[n] or "none", env_var_for(n)] for n in names), ["NAME", "KEY FROM", "ENV VAR"])
    return 0
