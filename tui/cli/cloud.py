"""`mlx-workbench cloud`: the cloud routing switch (off in a new data directory).

While it is off no prompt leaves the machine: every cloud step of a route is skipped. The switch
lives in the database, so every running workbench (TUI, `serve`) follows it on its next request.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tui.cli.common import add_json, wrap

ON_TEXT = "cloud routing is on: routes may send prompts to cloud backends"
OFF_TEXT = "cloud routing is off: every cloud step is skipped, no prompt leaves this machine"


def register(sub: argparse._SubParsersAction) -> None:
    cloud = sub.add_parser("cloud", help="the cloud routing switch: status, on, off")
    csub = cloud.add_subparsers(dest="cloud_command", metavar="ACTION", required=True)
    p = csub.add_parser("status", help="is cloud routing on?")
    add_json(p)
    p.set_defaults(func=wrap(_status))
    for name, text in (("on", "let routes use cloud backends"), ("off", "skip every cloud step")):
        p = csub.add_parser(name, help=text)
        p.set_defaults(func=wrap(_switch), on=name == "on")


def _status(args: argparse.Namespace, ctx: Any) -> int:
    _, store = ctx
    on = store.cloud_routing()
    names = [b.name for b in store.list_backends() if b.enabled]
    if args.json:
        print(json.dumps({"cloud_routing": on, "cloud_backends": names}))
    else:
        print(ON_TEXT if on else OFF_TEXT)
        if names and not on:
            print(f"cloud backends not used: {', '.join(names)} (`mlx-workbench cloud on` to use them)")
    return 0


def _switch(args: argparse.Namespace, ctx: Any) -> int:
    _, store = ctx
    store.set_cloud_routing(args.on)
    print(ON_TEXT if args.on else OFF_TEXT)
    return 0
