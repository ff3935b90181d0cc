"""The `mlx-workbench` command (one module per command group): no arguments opens the TUI; subcommands for scripts.

Heavy imports (MLX, textual, the router) happen inside the command that needs them, so
`mlx-workbench --help` and the CLI stay fast.
"""

from __future__ import annotations

import argparse
import sys

from tui.cli import backends, chat, cloud, keys, models, rules, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-workbench",
        description="A terminal workbench for local MLX models with cloud fallback.",
    )
    parser.add_argument("--config", help="path to config.toml (default: the user config dir; env MLXWB_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (models, chat, rules, backends, cloud, keys, serve):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from tui.app import run_app

        return run_app(config_path=args.config)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from router.database import StoreError

        if not isinstance(exc, StoreError):  # a database error is one line, anything else a bug report
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
