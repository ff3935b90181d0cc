"""`mlx-workbench models list` and `chat` error handling, through main(argv)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def test_models_list_table_has_a_header_and_a_row(tiny_gguf_model: Path, tmp_path: Path, monkeypatch,
                                                 capsys) -> None:
    _data_with(tiny_gguf_model, tmp_path, monkeypatch)
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "FORMAT", "ARCH"]
    assert any(line.startswith(tiny_gguf_model.stem) and "gguf" in line for line in lines[1:])


def test_models_list_with_no_models_says_how_to_get_one(capsys) -> None:
    assert main(["models", "list"]) == 0
    assert "fetch-demo" in capsys.readouterr().out


def test_chat_errors_are_one_line_without_traceback(tiny_gguf_model: Path, tmp_path: Path, monkeypatch,
                                                   capsys) -> None:
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
