"""A workbench whose rules give the coding agents' model names each kind of route, and a listener.

Routes (the test puts one of these names in the agent's request as its model):
- agent-local: the tiny random-weight model with a context long enough for an agent's prompt;
- agent-small: the same tiny model with its own 512-token context (too small for an agent);
- agent-openai / agent-anthropic: the fake upstream through the OpenAI / Anthropic cloud backends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.config import EngineConfig
from router.config import AppConfig
from router.listener import Listener
from router.rules import Rule
from router.store import BackendRecord
from router.workbench import Workbench

FAST = {
    "retries": 0,
    "backoff_factor": 0.01,
    "connect_timeout": 2.0,
    "deadline": 10.0,
    "idle_timeout": 10.0,
    "total_timeout": 30.0,
    "fail_max": 3,
    "reset_timeout": 30.0,
}
FIXTURES = Path(__file__).parent / "fixtures"
LONG_CONTEXT = 65536


def recorded(name: str) -> dict:
    """One recorded request: client, method, path, query, headers, body."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def agent_models_dir(tiny_mlx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agent-models")
    shutil.copytree(tiny_mlx_model, root / "tiny-llama-mlx")
    long = shutil.copytree(tiny_mlx_model, root / "tiny-long-mlx")
    config = json.loads((long / "config.json").read_text())
    (long / "config.json").write_text(json.dumps({**config, "max_position_embeddings": LONG_CONTEXT}))
    return root


@pytest.fixture
async def workbench(tmp_path: Path, agent_models_dir: Path, fake_upstream):
    cfg = AppConfig(engine=EngineConfig(data_dir=tmp_path / "data", model_dirs=[agent_models_dir], scan_hf_cache=False))
    wb = Workbench.open(cfg)
    wb.store.set_cloud_routing(True)  # off in a new data directory
    wb.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, dict(FAST)))
    wb.store.save_backend(BackendRecord("anthropic", "anthropic", fake_upstream.anthropic_url, dict(FAST)))
    wb.secrets.set("openai", "sk-upstream-openai-0123456789")
    wb.secrets.set("anthropic", "sk-upstream-anthropic-0123456789")
    wb.refresh_keys()
    wb.store.add_rule(Rule("agent-local", "local", model="tiny-long-mlx"))
    wb.store.add_rule(Rule("agent-small", "local", model="tiny-llama-mlx"))
    wb.store.add_rule(Rule("agent-openai", "openai", model="gpt-fake"))
    wb.store.add_rule(Rule("agent-anthropic", "anthropic", model="claude-real"))
    yield wb
    await wb.aclose()


@pytest.fixture
async def listener(workbench):
    lst = Listener(workbench, "127.0.0.1", 0)
    await lst.start()
    yield lst
    await lst.stop()


@pytest.fixture(scope="session")
def agent_clis() -> dict[str, Path]:
    """Claude Code and Codex, pinned, from npm into .cache/npm-agents (installed on first use)."""
    from tests.agents.clis import CLIUnavailable, install_clis

    try:
        return install_clis()
    except CLIUnavailable as exc:
        pytest.fail(str(exc))
