"""A workbench with the tiny local model and the fake upstream, and a listener on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import EngineConfig
from router.config import AppConfig
from router.listener import Listener
from router.rules import Rule, Step
from router.store import BackendRecord
from router.workbench import Workbench

FAST = {
    "retries": 0,
    "backoff_factor": 0.01,
    "connect_timeout": 2.0,
    "deadline": 5.0,
    "idle_timeout": 2.0,
    "total_timeout": 20.0,
    "fail_max": 3,
    "reset_timeout": 30.0,
}
UPSTREAM_KEY = "sk-upstream-0123456789abcdefghijklmn"


@pytest.fixture
async def workbench(tmp_path: Path, tiny_models_dir: Path, fake_upstream):
    cfg = AppConfig(engine=EngineConfig(data_dir=tmp_path / "data", model_dirs=[tiny_models_dir], scan_hf_cache=False))
    wb = Workbench.open(cfg)
    wb.store.set_cloud_routing(True)  # off in a new data directory
    wb.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, dict(FAST)))
    wb.store.save_backend(BackendRecord("anthropic", "anthropic", fake_upstream.anthropic_url, dict(FAST)))
    wb.secrets.set("openai", UPSTREAM_KEY)
    wb.secrets.set("anthropic", UPSTREAM_KEY)
    wb.refresh_keys()
    wb.store.add_rule(Rule("tiny", "local", model="tiny-llama-mlx"))
    wb.store.add_rule(Rule("gpt-*", "openai", fallbacks=[Step("anthropic", "claude-fake")]))
    wb.store.add_rule(Rule("claude-*", "anthropic"))
    yield wb
    await wb.aclose()


@pytest.fixture
async def listener(workbench):
    lst = Listener(workbench, "127.0.0.1", 0)
    await lst.start()
    yield lst
    await lst.stop()


@pytest.fixture
async def one_slot(tmp_path: Path, tiny_models_dir: Path):
    """A workbench whose local model decodes one answer at a time, and its listener."""
    cfg = AppConfig(
        engine=EngineConfig(data_dir=tmp_path / "one", model_dirs=[tiny_models_dir], scan_hf_cache=False, max_batch=1)
    )
    wb = Workbench.open(cfg)
    wb.store.add_rule(Rule("tiny", "local", model="tiny-llama-mlx"))
    lst = Listener(wb, "127.0.0.1", 0)
    await lst.start()
    yield wb, lst
    await lst.stop()
    await wb.aclose()
