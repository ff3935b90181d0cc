"""What the rules / backends / keys / cloud commands share: the store context, errors, tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any


class CLIError(Exception):
    """A one-line message for stderr, exit code 1."""


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def wrap(fn: Callable[[argparse.Namespace, Any], int], needs_store: bool = True) -> Callable[[argparse.Namespace], int]:
    # Keys live in the keyring, not the database: `keys set` must work even when the DB cannot be opened.
    def run(args: argparse.Namespace) -> int:
        import sqlite3

        from router.config import ConfigError, load_config
        from router.database import store_error
        from router.rules import RuleError
        from router.secrets import KeyringUnavailableError
        from router.store import Store, StoreError

        store = None
        try:
            config = load_config(args.config)
            store = Store.open(config.database) if needs_store else None
            for notice in store.notices if store else ():
                print(f"note: {notice}", file=sys.stderr)
            return fn(args, (config, store))
        except (ConfigError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except sqlite3.Error as exc:  # the store words its own errors; this is the net under it
            print(f"error: {store_error(exc, config.database, 'finish the command')}", file=sys.stderr)
            return 1
        except KeyError as exc:  # str() of a KeyError is the repr of its message, quotes and all
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 1
        except (CLIError, RuleError, KeyringUnavailableError, ValueError) as exc:
            print(f"error: {str(exc).strip(chr(39))}", file=sys.stderr)
            return 1
        finally:
            if store is not None:
                store.close()

    return run


def table(rows: Iterable[Iterable[Any]], header: list[str]) -> None:
    data = [header] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in data) for i in range(len(header))]
    for r in data:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def rule_dict(r: Any) -> dict[str, Any]:
    d = asdict(r)
    d["fallbacks"] = [str(s) for s in r.fallbacks]
    return d


def workbench(ctx: Any) -> Any:
    from router.workbench import Workbench

    config, store = ctx
    return Workbench(config, store)
