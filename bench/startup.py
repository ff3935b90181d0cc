"""Time from process start to the workbench's first frame, headless, and proof that MLX isn't loaded.

    .venv/bin/python bench/startup.py

Runs a fresh interpreter each time (3 runs) against a temporary data dir; prints the median of
(interpreter start -> the app mounted, as run_test hands it over) and of the import of tui.app alone.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import time, sys, asyncio, json
t0 = time.perf_counter()
from engine.config import EngineConfig
from router.config import AppConfig
from tui.app import WorkbenchApp
t_import = time.perf_counter() - t0
cfg = AppConfig(engine=EngineConfig(data_dir=__import__("pathlib").Path(sys.argv[1]), scan_hf_cache=False))

async def main():
    app = WorkbenchApp(cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        first = time.perf_counter() - t0  # run_test hands the app over once it is mounted and ready
        await pilot.pause()
    print(json.dumps({"import": t_import, "first_frame": first,
                      "mlx_loaded": any(m.startswith("mlx") for m in sys.modules)}))

asyncio.run(main())
"""


def main() -> int:
    runs = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, "-c", PROBE, tmp], cwd=ROOT, capture_output=True, text=True, timeout=120
            )
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    imp = statistics.median(r["import"] for r in runs)
    first = statistics.median(r["first_frame"] for r in runs)
    print(
        f"import tui.app: {imp * 1000:.0f} ms; process start -> first frame: {first * 1000:.0f} ms "
        f"(median of 3); MLX loaded at first frame: {any(r['mlx_loaded'] for r in runs)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
