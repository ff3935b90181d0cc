"""`mlx-workbench serve`: the OpenAI + Anthropic compatible listener, without the TUI."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the OpenAI/Anthropic-compatible HTTP listener (Ctrl-C stops it)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; anything else requires a listener key)")
    p.add_argument("--port", type=int, help="port (default 8765)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from router.config import ConfigError, load_config
    from router.listener.standalone import run_serve
    from router.store import StoreError

    try:
        config = load_config(args.config)
        return run_serve(config, args.host, args.port)
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
