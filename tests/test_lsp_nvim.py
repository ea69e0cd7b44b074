"""End to end in a real Neovim: headless, a Lua script starts `ingle lsp`, asks for completion, applies it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "nvim" / "complete.lua"
# Neovim waits for each answer at most this long itself; the process gets a little more.
ANSWER_MS = 120_000


@pytest.mark.skipif(shutil.which("nvim") is None, reason="needs Neovim: apt-get install neovim (.ci/run installs it)")
def test_neovim_completes_add_to_a_plus_b(default_model_home: Path, tmp_path: Path) -> None:
    source = tmp_path / "add.py"
    source.write_text("def add(a, b):\n    return \n")
    out = tmp_path / "result.json"
    environment = {
        **os.environ,
        "INGLE_HOME": str(default_model_home),
        "INGLE_NUM_THREADS": "2",
        "INGLE_NUM_CTX": "2048",
        "INGLE_NVIM_CMD": str(Path(sys.executable).with_name("ingle")),
        "INGLE_NVIM_FILE": str(source),
        "INGLE_NVIM_OUT": str(out),
        "INGLE_NVIM_TIMEOUT_MS": str(ANSWER_MS),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    completed = subprocess.run(
        ["nvim", "--headless", "--clean", "-n", "-S", str(SCRIPT)],
        env=environment,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=ANSWER_MS / 1000 * 2 + 30,
    )
    assert out.exists(), f"Neovim wrote no result (exit {completed.returncode}): {completed.stderr[-2000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, result
    assert [item["textEdit"]["newText"] for item in result["items"]] == ["a + b"]
    assert result["line"] == "    return a + b"
