"""The command line answers at once: commands that need no model, daemon or bot load none of their libraries.

`ingle --version` took 1.9 s when every command imported the whole program
first. Timings belong in benchmarks (the README's figure comes from
bench/cli_startup.py); this guards the cause: what gets imported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("llama_cpp", "numpy", "aiohttp", "httpx", "pygls", "slack_bolt", "telegram", "apsw", "jinja2")
"""Libraries that each take a noticeable share of a second to import."""

# Runs `ingle ARGV` as the console script does, then prints which of HEAVY got imported.
_RUN_AND_REPORT = """
import json, sys
argv, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["ingle", *argv]
from ingle.adapters.cli.main import run
try:
    run()
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(heavy))))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def imported_by(args: list[str], home: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `ingle ARGS` in a fresh interpreter (no daemon anywhere); the heavy modules it imported."""
    environment = {**os.environ, "INGLE_HOME": str(home), "INGLE_PORT": str(_free_port())}
    result = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    return result, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], ["list"], ["run", "--help"], ["kb", "--help"], ["bot", "--help"], ["lsp", "--help"]],
    ids=" ".join,
)
def test_a_command_that_needs_no_model_loads_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    result, heavy = imported_by(args, tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert heavy == [], f"`ingle {' '.join(args)}` imported {heavy}"
