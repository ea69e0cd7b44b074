"""How fast `ingle` answers the commands that need no model: wall time and peak memory, median of N runs.

Printed beside two references measured in the same run: the bare interpreter
(the floor no Python CLI can beat) and importing the whole program (what every
command paid before the command line loaded its libraries lazily).

    .venv/bin/python bench/cli_startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

INGLE = str(Path(sys.executable).with_name("ingle"))

CASES: list[tuple[str, list[str]]] = [
    ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
    ("ingle --version", [INGLE, "--version"]),
    ("ingle --help", [INGLE, "--help"]),
    ("ingle list (no daemon)", [INGLE, "list"]),
    ("import everything (before)", [sys.executable, "-c", "import ingle.adapters.http.server, ingle.lsp.server"]),
]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Seconds and peak resident KiB of one run, its output discarded."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execve(argv[0], argv, env)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (the median is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        # An empty home and a port nothing listens on: `list` reads the store in-process.
        env = {**os.environ, "INGLE_HOME": home, "INGLE_PORT": "1", "INGLE_SOCKET_PATH": ""}
        print(
            f"{'command':<30} {'median s':>9} {'peak MiB':>9}   ({args.runs} runs each, load {os.getloadavg()[0]:.2f})"
        )
        for label, argv in CASES:
            runs = [run_once(argv, env) for _ in range(args.runs)]
            seconds = statistics.median(run[0] for run in runs)
            mib = statistics.median(run[1] for run in runs) / 1024
            print(f"{label:<30} {seconds:>9.3f} {mib:>9.1f}")


if __name__ == "__main__":
    main()
