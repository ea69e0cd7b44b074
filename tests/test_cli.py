"""The `ingle` command line, run as the real console script in subprocesses.

Each test gets its own home. Errors must be one sentence on stderr with the
right exit code (1 error, 2 usage) and never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from ingle.adapters.cli.chat import split_model_and_prompt
from ingle.adapters.cli.formatting import (
    human_size,
    parameter_count,
    parse_keep_alive,
    relative_time,
    short_digest,
)
from ingle.adapters.engine_api import LocalEngine
from ingle.core.engine import Engine
from ingle.core.settings import Settings

DEFAULT_MODEL = "qwen2.5-coder:0.5b"


def ingle_executable() -> str:
    """The console script installed next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "ingle"
    if beside.exists():
        return str(beside)
    found = shutil.which("ingle")
    if found is None:
        pytest.fail("the `ingle` console script is not installed; run `make install`")
    return found


def ingle(
    *args: str, home: Path, stdin: str | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `ingle ARGS` with INGLE_HOME=home; stdin is empty unless given, as in CI."""
    environment = {**os.environ, "INGLE_HOME": str(home), **env}
    return subprocess.run(
        [ingle_executable(), *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with CODE and said why in one `Error:` line, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def write_tiny_gguf(path: Path, template: str = "{% for m in messages %}{{ m.content }}\n{% endfor %}") -> Path:
    """A valid, tiny GGUF file: enough metadata for the store, one small tensor."""
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_license("MIT")
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty INGLE_HOME."""
    return tmp_path / "home"


# --- help --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "purpose"),
    [
        ([], "Run open LLMs on your own hardware"),
        (["pull"], "Download or import a model"),
        (["list"], "List the models in the local store"),
        (["show"], "Show a model's details"),
        (["rm"], "Remove one or more models"),
        (["cp"], "Copy a model to a new name"),
        (["ps"], "loaded in memory"),
        (["run"], "Chat with a model"),
    ],
)
def test_help_explains_each_command(command: list[str], purpose: str, home: Path) -> None:
    result = ingle(*command, "--help", home=home, COLUMNS="200")
    assert result.returncode == 0, result.stderr
    assert purpose in result.stdout
    if command:
        assert "Example" in result.stdout


def test_version(home: Path) -> None:
    result = ingle("--version", home=home)
    assert result.returncode == 0
    assert result.stdout.startswith("ingle 0.")


# --- errors ------------------------------------------------------------------


def test_show_unknown_model_is_one_line(home: Path) -> None:
    line = assert_one_error_line(ingle("show", "nope", home=home), 1)
    assert "nope" in line


def test_unusable_home_is_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    line = assert_one_error_line(ingle("list", home=not_a_folder), 1)
    assert "writable folder" in line


def test_rm_refuses_a_path_as_name(home: Path) -> None:
    line = assert_one_error_line(ingle("rm", "../../etc/passwd", home=home), 2)
    assert "not a valid model name" in line


def test_pull_of_missing_file_says_so(home: Path) -> None:
    line = assert_one_error_line(ingle("pull", "file:/nonexistent", home=home), 1)
    assert "/nonexistent" in line


def test_pull_refuses_bad_name_before_fetching(home: Path, tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert_one_error_line(ingle("pull", f"file:{gguf}", "--name", "../x", home=home), 2)
    assert not (home / "models" / "blobs").exists() or not any((home / "models" / "blobs").iterdir())


def test_run_unknown_model_with_a_tag_is_one_line(home: Path) -> None:
    # A first word with a tag is a model even when it is not stored: a typo must not reach another model.
    line = assert_one_error_line(ingle("run", "nope:1b", "hello", home=home), 1)
    assert "nope:1b" in line and "ingle pull" in line


@pytest.mark.parametrize(
    ("words", "model", "prompt"),
    [
        ([], DEFAULT_MODEL, None),
        (["Write a haiku about the sea"], DEFAULT_MODEL, "Write a haiku about the sea"),
        (["hello", "there"], DEFAULT_MODEL, "hello there"),
        (["Note:", "be", "brief"], DEFAULT_MODEL, "Note: be brief"),
        (["coder", "Say", "hi"], "coder", "Say hi"),
        (["coder"], "coder", None),
        ([DEFAULT_MODEL, "hi"], DEFAULT_MODEL, "hi"),
        (["llama3:8b", "hi"], "llama3:8b", "hi"),
    ],
)
async def test_run_takes_the_first_word_as_model_only_when_it_names_one(
    tmp_path: Path, words: list[str], model: str, prompt: str | None
) -> None:
    async with Engine(Settings(home=tmp_path / "home")) as engine:
        await engine.pull(f"file:{write_tiny_gguf(tmp_path / 'tiny.gguf')}", name="coder")
        assert await split_model_and_prompt(LocalEngine(engine), DEFAULT_MODEL, words) == (model, prompt)


def test_run_without_any_prompt_is_a_usage_error(home: Path) -> None:
    assert_one_error_line(ingle("run", "nope:1b", home=home, stdin=""), 2)
    assert_one_error_line(ingle("run", home=home, stdin=""), 2)
    assert not (home / "models" / "blobs").exists() or not any((home / "models" / "blobs").iterdir())


def test_bad_setting_is_a_usage_error(home: Path) -> None:
    line = assert_one_error_line(ingle("list", home=home, INGLE_PORT="99999"), 2)
    assert "port" in line


def test_bad_option_value_exits_2(home: Path) -> None:
    result = ingle("run", "nope", "hi", "--keep-alive", "soon", home=home)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


# --- model management --------------------------------------------------------


def test_list_on_an_empty_home(home: Path) -> None:
    result = ingle("list", home=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NAME", "DIGEST", "SIZE", "MODIFIED"]
    assert "ingle pull default" in result.stderr


def test_ps_without_loaded_models(home: Path) -> None:
    result = ingle("ps", home=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NAME", "SIZE", "MEMORY", "CONTEXT", "PARALLEL", "UNTIL"]


def test_pull_list_show_cp_rm_round_trip(home: Path, tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny-Q8_0.gguf")

    pulled = ingle("--home", str(home), "pull", f"file:{gguf}", home=tmp_path / "unused")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == "tiny:q8_0"
    assert pulled.stderr == ""  # progress is for terminals; the name on stdout says it is done

    listed = ingle("list", home=home)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert row[0] == "tiny:q8_0"
    assert len(row[1]) == 12 and all(c in "0123456789abcdef" for c in row[1])
    assert row[2:4] == [str(gguf.stat().st_size), "B"]

    shown = ingle("show", "tiny:q8_0", home=home)
    assert shown.returncode == 0, shown.stderr
    for expected in ("architecture", "llama", "context length", "128", "fill-in-the-middle", "MIT", "m.content"):
        assert expected in shown.stdout
    template = ingle("show", "tiny:q8_0", "--template", home=home)
    assert template.stdout == "{% for m in messages %}{{ m.content }}\n{% endfor %}\n"

    copied = ingle("cp", "tiny:q8_0", "other", home=home)
    assert copied.returncode == 0, copied.stderr
    names = [line.split()[0] for line in ingle("list", home=home).stdout.splitlines()[1:]]
    assert names == ["other:latest", "tiny:q8_0"]

    removed = ingle("rm", "tiny:q8_0", "other", home=home)
    assert removed.returncode == 0, removed.stderr
    assert ingle("list", home=home).stdout.split() == ["NAME", "DIGEST", "SIZE", "MODIFIED"]
    assert_one_error_line(ingle("show", "other", home=home), 1)


def test_show_prints_a_template_as_it_is_written_and_no_terminal_controls(home: Path, tmp_path: Path) -> None:
    # An ESC sequence in a GGUF's template cleared the terminal; Llama 2's [INST] ... [/INST] stays as written.
    template = "{% for m in messages %}[INST] {{ m.content }} [/INST]\x1b[2J{% endfor %}"
    gguf = write_tiny_gguf(tmp_path / "inst.gguf", template)
    assert ingle("pull", f"file:{gguf}", "--name", "inst", home=home).returncode == 0
    shown = ingle("show", "inst", home=home)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    assert "[INST] {{ m.content }} [/INST]\\x1b[2J" in shown.stdout and "\x1b" not in shown.stdout


def test_a_damaged_manifest_is_reported_alone_and_rm_removes_it(home: Path, tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    for name in ("good", "mistyped", "garbled"):
        assert ingle("pull", f"file:{gguf}", "--name", name, home=home).returncode == 0
    other = write_tiny_gguf(tmp_path / "other.gguf")
    other.write_bytes(other.read_bytes() + b"another file")  # a second blob, to see it collected
    assert ingle("pull", f"file:{other}", "--name", "second", home=home).returncode == 0
    manifests = home / "models" / "manifests"
    mistyped = manifests / "mistyped" / "latest.json"
    mistyped.write_text(mistyped.read_text().replace(f'"size": {gguf.stat().st_size}', '"size": "big"'))
    (manifests / "garbled" / "latest.json").write_text('{"name": "garbled:lat')

    listed = ingle("list", home=home)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["good:latest", "second:latest"]
    for name in ("mistyped", "garbled"):
        assert f"ingle rm {name}:latest" in " ".join(listed.stderr.split())

    assert ingle("rm", "second", home=home).returncode == 0
    blobs = home / "models" / "blobs"
    assert len(list(blobs.iterdir())) == 2  # nothing is collected while a manifest cannot say what it uses
    removed = ingle("rm", "mistyped", "garbled", home=home)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.split("\n")[:2] == ["deleted 'mistyped'", "deleted 'garbled'"]
    assert len(list(blobs.iterdir())) == 1  # the store collects again
    assert ingle("list", home=home).stdout.split()[4] == "good:latest"


# --- the real model ----------------------------------------------------------


@pytest.mark.slow
def test_run_answers_a_prompt(default_model_home: Path) -> None:
    result = ingle(
        "run", DEFAULT_MODEL, "Say hi", "--max-tokens", "8", "--seed", "1", home=default_model_home, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_run_reads_the_prompt_from_stdin(default_model_home: Path) -> None:
    result = ingle(
        "run", "--max-tokens", "8", "--seed", "1", "--temperature", "0",
        home=default_model_home, stdin="What is 2+2? Answer with the number only.", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4" in result.stdout


@pytest.mark.slow
def test_run_raw_completion(default_model_home: Path) -> None:
    result = ingle(
        "run", DEFAULT_MODEL, "--raw", "def add(a, b):\n    return", "--max-tokens", "6", "--temperature", "0",
        home=default_model_home, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "a" in result.stdout and "b" in result.stdout


# --- formatting --------------------------------------------------------------


def test_sizes_and_counts() -> None:
    assert human_size(576) == "576 B"
    assert human_size(491_400_064) == "468.6 MiB"
    assert human_size(5 * 1024**3) == "5.0 GiB"
    assert parameter_count(494_032_768) == "494M"
    assert parameter_count(1_543_714_304) == "1.5B"
    assert parameter_count(7_000_000_000) == "7B"
    assert parameter_count(None) == "unknown"
    assert short_digest("sha256-" + "ab" * 32) == "abababababab"


def test_relative_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert relative_time(now - timedelta(seconds=5), now) == "just now"
    assert relative_time(now - timedelta(minutes=3), now) == "3 minutes ago"
    assert relative_time(now + timedelta(minutes=4), now) == "4 minutes from now"
    assert relative_time(now - timedelta(hours=1), now) == "1 hour ago"
    assert relative_time(now - timedelta(days=15), now) == "2 weeks ago"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("90", 90.0), ("0", 0.0), ("forever", -1.0), ("-1", -1.0), ("500ms", 0.5)],
)
def test_keep_alive_durations(text: str, seconds: float) -> None:
    assert parse_keep_alive(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5x", "m5", ""])
def test_keep_alive_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_keep_alive(text)
