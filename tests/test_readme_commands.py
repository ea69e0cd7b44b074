"""The README's commands work as written, and through the daemon they print nothing on stderr.

The commands come from README.md itself (the Quick start and the examples
column of the command-line table), so the README cannot drift from the
program: a new example there is run here. They run as the venv's `ingle`
against a real `ingle serve` over a home holding the default model, which is
what a new user has after `make run`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DEFAULT_MODEL, link_home
from .servers import Daemon, start_daemon
from .test_cli import ingle_executable

ROOT = Path(__file__).resolve().parent.parent

# Quick start lines that cannot run inside the test suite, and why. Keep this list tiny.
NOT_RUNNABLE = {
    "git clone <this repository> ingle": "the tests run in that clone",
    "cd ingle": "the tests run in that clone",
    "make test": "it is the test suite this test belongs to",
}


def section(markdown: str, title: str) -> str:
    """The text of the `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def quick_start_commands(markdown: str) -> list[str]:
    """The shell block's commands (comments dropped), then the `ingle` commands quoted in the prose."""
    text = section(markdown, "Quick start")
    block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert block, "the Quick start has no sh block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    quoted = re.findall(r"`(\.venv/bin/ingle [^`]+)`", text)
    return [command for command in commands if command] + quoted


def table_examples(markdown: str) -> list[str]:
    """The example column of the command-line table."""
    examples = []
    for line in section(markdown, "Command line").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`ingle "):
            examples.append(cells[2].strip("`"))
    return examples


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, with `$(BIN)/` dropped."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, f"the Makefile has no {target} target"
    return [line.strip().replace("$(BIN)/", "") for line in match.group(1).splitlines()]


README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def served_home(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Daemon]]:
    """A home with the default model and `ingle serve` over it, as `make run` leaves them; one per
    module, so that each example does not load the model again."""
    folder = tmp_path_factory.mktemp("readme")
    home = link_home(default_model_cache, folder / "home")
    daemon = start_daemon(home, INGLE_CONFIG=str(folder / "no-config.toml"))
    try:
        yield home, daemon
    finally:
        daemon.stop()


def run_as_written(
    command: str, home: Path, daemon: Daemon, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a README command with the venv's `ingle`, against DAEMON (its socket in HOME, else its port)."""
    words = shlex.split(command)
    assert words[0] in ("ingle", ".venv/bin/ingle"), command
    port = daemon.url.rsplit(":", 1)[1]
    environment = {**os.environ, "INGLE_HOME": str(home), "INGLE_PORT": port}
    return subprocess.run(
        [ingle_executable(), *words[1:]],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def assert_quiet_success(result: subprocess.CompletedProcess[str], command: str) -> None:
    assert result.returncode == 0, (command, result.stderr)
    assert result.stderr == "", (command, result.stderr)
    assert result.stdout.strip(), command


@pytest.mark.slow
def test_quick_start_works_as_written(default_model_home: Path) -> None:
    commands = quick_start_commands(README)
    assert "make run" in commands and any(" run " in command for command in commands)
    assert set(NOT_RUNNABLE) <= set(commands), "NOT_RUNNABLE lists a command the Quick start no longer has"
    # `make run` serves until stopped: run its recipe, with the daemon on a free port for the test.
    assert make_recipe("run") == ["ingle pull default", "ingle serve"]
    pulled = subprocess.run(
        [ingle_executable(), "pull", "default"],
        env={**os.environ, "INGLE_HOME": str(default_model_home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_quiet_success(pulled, "ingle pull default")
    daemon = start_daemon(default_model_home)
    try:
        for command in commands:
            if command not in NOT_RUNNABLE and command != "make run":
                assert_quiet_success(run_as_written(command, default_model_home, daemon), command)
    finally:
        daemon.stop()


def test_the_command_line_table_has_its_examples() -> None:
    assert len(table_examples(README)) >= 7 and "ingle ps" in table_examples(README)


@pytest.mark.slow
@pytest.mark.parametrize("command", table_examples(README))
def test_command_line_example_works_as_written_and_quietly(served_home: tuple[Path, Daemon], command: str) -> None:
    home, daemon = served_home
    words = shlex.split(command)
    if words[1] == "rm":
        # The example removes a model of its own: give it one first.
        for name in words[2:]:
            assert_quiet_success(run_as_written(f"ingle cp {DEFAULT_MODEL} {name}", home, daemon), "ingle cp")
    assert_quiet_success(run_as_written(command, home, daemon), command)
    assert "Unclosed" not in daemon.log


@pytest.mark.slow
def test_a_piped_prompt_through_the_daemon_is_quiet(served_home: tuple[Path, Daemon]) -> None:
    home, daemon = served_home
    piped = run_as_written(f"ingle run {DEFAULT_MODEL} --max-tokens 8", home, daemon, stdin="Say hi")
    assert_quiet_success(piped, "piped ingle run")
