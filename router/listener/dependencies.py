"""What a route reaches through its app: the workbench (set by create_app on app.state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from router.workbench import Workbench


async def _workbench(request: Request) -> Workbench:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    workbench: Workbench = request.app.state.workbench
    return workbench


WorkbenchDep = Annotated[Workbench, Depends(_workbench)]
