"""`mlx-workbench models list` and `chat` error handling, through main(argv)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tui.cli import main


def _data_with(tiny_gguf_model: Path, tmp_path: Path, monkeypatch) -> Path:
    data = tmp_path / "cli-data"
    (data / "models").mkdir(parents=True)
    shutil.copy(tiny_gguf_model, data / "models" / tiny_gguf_model.name)
    monkeypatch.setenv("MLXWB_DATA_DIR", str(data))
    return data


def test_models_list_json_describes_the_model(tiny_gguf_model: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    _data_with(tiny_gguf_model, tmp_path, monkeypatch)
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ids = [r["id"] for r in rows]
    assert tiny_gguf_model.stem in ids
    row = rows[ids.index(tiny_gguf_model.stem)]
    assert row["format"] == "gguf" and row["architecture"] == "llama" and row["parameters"] > 0
    assert Path(row["path"]).name == tiny_gguf_model.name


def test_models_list_table_has_a_header_and_a_row(tiny_gguf_model: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    _data_with(tiny_gguf_model, tmp_path, monkeypatch)
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "FORMAT", "ARCH"]
    assert any(line.startswith(tiny_gguf_model.stem) and "gguf" in line for line in lines[1:])


def test_models_list_with_no_models_says_how_to_get_one(capsys) -> None:
    assert main(["models", "list"]) == 0
    assert "fetch-demo" in capsys.readouterr().out


def test_chat_errors_are_one_line_without_traceback(tiny_gguf_model: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    _data_with(tiny_gguf_model, tmp_path, monkeypatch)
    assert main(["chat", "--local", "--model", "no-such-model", "hi"]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    assert main(["chat", "--local", "--model", tiny_gguf_model.stem, "--max-tokens", "0", "hi"]) == 1
    err = capsys.readouterr().err
    assert "max_tokens" in err and "Traceback" not in err


def test_chat_streams_the_tiny_model_answer(tiny_gguf_model: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    _data_with(tiny_gguf_model, tmp_path, monkeypatch)
    args = ["chat", "--local", "--model", tiny_gguf_model.stem, "--max-tokens", "6", "Hello"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.strip()
    # Temperature defaults to 0 on the CLI: the same answer every time.
    assert main(args) == 0
    assert capsys.readouterr().out == first


def _config_with(tmp_path: Path, monkeypatch, **keys: str) -> Path:
    # The file's data_dir must win: drop the suite's MLXWB_DATA_DIR override.
    monkeypatch.delenv("MLXWB_DATA_DIR", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text("scan_hf_cache = false\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items()))
    return cfg


def test_models_list_and_chat_local_honour_config(tiny_gguf_model: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "configured-data"
    (data / "models").mkdir(parents=True)
    shutil.copy(tiny_gguf_model, data / "models" / "configured.gguf")
    cfg = _config_with(tmp_path, monkeypatch, data_dir=str(data))
    assert main(["--config", str(cfg), "models", "list", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["configured"]
    assert main(["--config", str(cfg), "chat", "--local", "--model", "configured", "--max-tokens", "4", "Hi"]) == 0
    assert capsys.readouterr().out.strip()
    # Without --config the default data dir (empty here) is used.
    monkeypatch.setenv("MLXWB_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("MLXWB_DATA_DIR", str(tmp_path / "empty"))
    assert main(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_bad_config_is_one_error_line_for_local_commands(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("max_batch = 0\n")
    for argv in (["models", "list"], ["models", "fetch-demo"], ["chat", "--local", "hi"], ["chat", "hi"]):
        assert main(["--config", str(cfg), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "max_batch" in err and "Traceback" not in err


def test_chat_on_the_command_line_may_name_a_model_by_path(tiny_gguf_model: Path, tmp_path: Path, capsys) -> None:
    assert main(["chat", "--local", "--model", str(tiny_gguf_model), "--max-tokens", "4", "Hello"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.demo
def test_fetch_demo_uses_the_configured_data_dir(demo_model_path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "configured-data"
    (data / "models" / "demo").mkdir(parents=True)
    (data / "models" / "demo" / demo_model_path.name).symlink_to(demo_model_path)
    cfg = _config_with(tmp_path, monkeypatch, data_dir=str(data))
    assert main(["--config", str(cfg), "models", "fetch-demo"]) == 0
    assert f"already present: {data}" in capsys.readouterr().err


def test_the_answer_line_says_when_load_or_queue_took_time() -> None:
    from engine.types import Chunk, Usage
    from tui.cli.chat import answer_line

    final = Chunk(
        finish_reason="stop",
        backend="local",
        model="demo",
        usage=Usage(10, 5, ttft_s=3.2, tokens_per_s=20.0, queued_s=0.05, load_s=2.9),
    )
    line = answer_line(final)
    assert "loaded demo in 2.9 s" in line and "first token after 3.20 s" in line and "queued" not in line
    final.usage.queued_s = 1.5
    assert "queued 1.5 s" in answer_line(final)
