"""The command line against the mistakes and surprises an audit found: another home while a daemon
answers on the port, unbounded numbers, broken config and variables, taken names, a cut answer.

Each failure must be one sentence on stderr with exit 2 (usage) or 1 (error), never a traceback;
`ingle doctor` reports a broken config as a failed check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingle.adapters.cli import chat, main
from ingle.adapters.cli.doctor import run_checks
from ingle.adapters.cli.formatting import parse_keep_alive
from ingle.core.generation import GenerationChunk, GenerationRequest, GenerationStats

from .servers import Daemon, start_daemon
from .test_cli import assert_one_error_line, ingle, ingle_executable, write_tiny_gguf


def pulled(home: Path, gguf: Path, name: str) -> None:
    """Import GGUF into HOME as NAME, in-process."""
    result = ingle("--embedded", "pull", f"file:{gguf}", "--name", name, home=home)
    assert result.returncode == 0, result.stderr


def ingle_with(env: dict[str, str], *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`ingle ARGS` with INGLE_HOME=HOME and the variables in ENV."""
    return subprocess.run(
        [ingle_executable(), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "INGLE_HOME": str(home), **env},
        timeout=120,
    )


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


# --- 1. another home never talks to the daemon on the port ----------------------------------


@pytest.fixture
def daemon_without_socket(tmp_path: Path, tiny_gguf: Path) -> Iterator[tuple[Path, Daemon, dict[str, str]]]:
    """A daemon serving home `served` (holding victim:1) on a TCP port only, and the env that finds that port.

    It lets anyone on loopback manage models, as a desktop install for Open WebUI does.
    """
    served = tmp_path / "served"
    pulled(served, tiny_gguf, "victim:1")
    daemon = start_daemon(served, INGLE_SOCKET_PATH="", INGLE_MANAGEMENT_OVER_TCP="true")
    try:
        yield served, daemon, {"INGLE_PORT": daemon.url.rsplit(":", 1)[1], "INGLE_SOCKET_PATH": ""}
    finally:
        daemon.stop()


def daemon_models(daemon: Daemon) -> list[str]:
    return [model["name"] for model in httpx.get(f"{daemon.url}/api/tags", timeout=10).json()["models"]]


def test_rm_in_another_home_never_deletes_from_the_daemons_home(
    daemon_without_socket: tuple[Path, Daemon, dict[str, str]], tmp_path: Path
) -> None:
    _, daemon, env = daemon_without_socket
    other = tmp_path / "other"
    line = assert_one_error_line(ingle_with(env, "--home", str(other), "rm", "victim:1", home=other), 1)
    assert "victim:1" in line and "not in the store" in line
    assert daemon_models(daemon) == ["victim:1"]
    listed = ingle_with(env, "list", home=other)  # INGLE_HOME alone counts the same as --home
    assert listed.returncode == 0 and "victim" not in listed.stdout


def test_the_configured_home_still_goes_through_the_daemon_on_the_port(
    daemon_without_socket: tuple[Path, Daemon, dict[str, str]], tmp_path: Path
) -> None:
    served, _, env = daemon_without_socket
    config = tmp_path / "ingle.toml"
    config.write_text(f'home = "{served}"\n')
    through_daemon = ingle_with({**env, "INGLE_CONFIG": str(config)}, "ps", home=served)
    assert through_daemon.returncode == 0 and through_daemon.stderr == ""
    elsewhere = ingle_with({**env, "INGLE_CONFIG": str(config)}, "ps", home=tmp_path / "other")
    assert elsewhere.returncode == 0 and "No ingle daemon is running" in elsewhere.stderr


# --- 2. numbers bounded by what they mean ------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INGLE_KEEP_ALIVE", "1e300"),
        ("INGLE_KEEP_ALIVE", "nan"),
        ("INGLE_NUM_THREADS", "100000"),
        ("INGLE_NUM_BATCH", "65536"),
    ],
)
def test_an_unbounded_number_in_a_variable_is_refused(variable: str, value: str, tmp_path: Path) -> None:
    line = assert_one_error_line(ingle_with({variable: value}, "list", home=tmp_path / "home"), 2)
    assert variable in line


def test_a_keep_alive_beyond_a_year_is_a_usage_error(tmp_path: Path) -> None:
    for value in ("1e300", "nan", "999999d"):
        result = ingle("run", "tiny:1", "hi", "--keep-alive", value, home=tmp_path / "home")
        assert result.returncode == 2, (value, result.stderr)
        assert "--keep-alive" in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""
    assert parse_keep_alive("365d") == 365 * 86400 and parse_keep_alive("forever") == -1


def test_the_memory_check_counts_num_batch(default_model_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"INGLE_NUM_PARALLEL": "1", "INGLE_NUM_CTX": "256", "INGLE_MEMORY_LIMIT_MIB": "2048"}.items():
        monkeypatch.setenv(name, value)
    memory = {check.name: check for check in run_checks(default_model_home, skip_port=True)}["memory"]
    assert memory.ok, memory.detail
    monkeypatch.setenv("INGLE_NUM_BATCH", "8192")  # llama.cpp's compute buffer is then some 4.7 GB
    memory = {check.name: check for check in run_checks(default_model_home, skip_port=True)}["memory"]
    assert not memory.ok and "num_batch" in memory.detail


# --- 3. config and environment mistakes -------------------------------------------------


def broken_setups(tmp_path: Path) -> list[tuple[dict[str, str], str]]:
    """Environments that do not make settings, each with what the sentence must name."""
    not_utf8 = tmp_path / "not-utf8.toml"
    not_utf8.write_bytes(b"\xff\xfe")
    return [
        ({"INGLE_CONFIG": str(not_utf8)}, str(not_utf8)),
        ({"INGLE_CONFIG": str(tmp_path)}, str(tmp_path)),
        ({"INGLE_ALLOWED_HOSTS": "myhost.lan"}, "INGLE_ALLOWED_HOSTS"),
        ({"INGLE_UPSTREAMS": "[{"}, "INGLE_UPSTREAMS"),
        ({"INGLE_HOME": ""}, "INGLE_HOME"),
        ({"INGLE_DETERMINISTIC": "true", "INGLE_FLASH_ATTENTION": "off"}, "flash_attention"),
        ({"INGLE_KV_CACHE_TYPE": "q8_0", "INGLE_FLASH_ATTENTION": "off"}, "kv_cache_type q8_0"),
        ({"INGLE_KV_CACHE_TYPE": "q5_1"}, "INGLE_KV_CACHE_TYPE"),
    ]


def run_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ingle ARGS` with only ENV added to the test's environment, in FOLDER."""
    return subprocess.run(
        [ingle_executable(), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=folder,
        timeout=120,
    )


def test_config_and_variable_mistakes_are_one_sentence(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for env, named in broken_setups(tmp_path):
        line = assert_one_error_line(run_in(work, "list", **env), 2)
        assert named in line, (env, line)
    line = assert_one_error_line(run_in(work, "--home", "", "list"), 2)
    assert "--home" in line
    assert list(work.iterdir()) == []  # an empty home made no store in the current folder


def test_doctor_reports_config_and_variable_mistakes_as_a_failed_check(tmp_path: Path) -> None:
    for env, named in broken_setups(tmp_path):
        result = run_in(tmp_path, "doctor", "--skip-port", **env)
        assert result.returncode == 1, (env, result.stdout, result.stderr)
        assert result.stderr == "" and "Traceback" not in result.stdout
        first = result.stdout.splitlines()[0]
        assert first.startswith("✗ config: ") and named in first, (env, first)


# --- 4. taken names and their case ------------------------------------------------------


def test_cp_and_pull_refuse_a_taken_name_unless_forced(tmp_path: Path, tiny_gguf: Path) -> None:
    home = tmp_path / "home"
    pulled(home, tiny_gguf, "keep:1")
    other = write_tiny_gguf(tmp_path / "other.gguf")
    other.write_bytes(other.read_bytes() + b"\0" * 32)  # another file, another digest
    pulled(home, other, "spare:1")
    digest = ingle("show", "keep:1", home=home).stdout

    line = assert_one_error_line(ingle("cp", "spare:1", "keep:1", home=home), 2)
    assert "'keep:1' is already a model" in line and "--force" in line
    line = assert_one_error_line(ingle("pull", f"file:{other}", "--name", "keep:1", home=home), 2)
    assert "--force" in line
    assert ingle("show", "keep:1", home=home).stdout == digest  # untouched

    forced = ingle("cp", "spare:1", "keep:1", "--force", home=home)
    assert forced.returncode == 0 and forced.stderr == ""
    assert ingle("show", "keep:1", home=home).stdout != digest


def test_names_are_case_insensitive_tag_included(tmp_path: Path, tiny_gguf: Path) -> None:
    home = tmp_path / "home"
    pulled(home, tiny_gguf, "keep:1")
    copied = ingle("cp", "keep:1", "Coder:Latest", home=home)
    assert copied.returncode == 0 and copied.stdout.strip() == "copied 'keep:1' to 'coder:latest'"
    shown = ingle("show", "coder", home=home)
    assert shown.returncode == 0 and shown.stderr == ""
    assert "coder:latest" in ingle("list", home=home).stdout


# --- 5. a cut answer is not a success ----------------------------------------------------


class CutShortEngine:
    """An engine whose answer ends with done reason REASON after a few words."""

    daemon_url = None

    def __init__(self, reason: Any) -> None:
        self.reason = reason

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("The answer is")
        yield GenerationChunk("", done=True, stats=GenerationStats(done_reason=self.reason))


@pytest.mark.parametrize(("reason", "code"), [("cancel", 1), ("stop", 0), ("length", 0)])
def test_run_exits_non_zero_when_the_answer_is_cut_short(
    reason: str, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    @asynccontextmanager
    async def engine(*_: object) -> AsyncIterator[CutShortEngine]:
        yield CutShortEngine(reason)

    monkeypatch.setattr(chat, "open_engine", engine)
    monkeypatch.setattr(sys, "argv", ["ingle", "--home", str(tmp_path / "home"), "run", "tiny:1", "hi"])
    with pytest.raises(SystemExit) as exited:
        main.run()
    assert (exited.value.code or 0) == code
    out, err = capsys.readouterr()
    assert out == "The answer is\n"
    if code:
        assert len(err.strip().splitlines()) == 1 and "cut short" in err
    else:
        assert err == ""
