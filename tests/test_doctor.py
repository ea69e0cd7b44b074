"""`ingle doctor`: each check finds what it should, and says what to do in a sentence."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingle.adapters.cli import doctor
from ingle.adapters.cli.doctor import Check, run_checks
from ingle.core.runtime import llama_model, reference_kernels

INGLE = str(Path(sys.executable).parent / "ingle")


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(monkeypatch: pytest.MonkeyPatch, path: Path, text: str) -> None:
    path.write_text(text)
    monkeypatch.setenv("INGLE_CONFIG", str(path))


def test_a_fresh_machine_is_told_to_pull_the_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGLE_PORT", str(free_port()))
    checks = by_name(run_checks(tmp_path / "home"))
    assert checks["config"].ok and "no file" in checks["config"].detail
    assert checks["model store"].ok and "created on first use" in checks["model store"].detail
    assert checks["disk"].ok
    assert not checks["default model"].ok
    assert "ingle pull default" in checks["default model"].detail
    assert checks["llama.cpp"].ok and "build" in checks["llama.cpp"].detail
    assert checks["port"].ok and "is free" in checks["port"].detail
    assert checks["security"].ok
    assert not (tmp_path / "home").exists()  # looking creates nothing


def test_it_says_when_speculative_guesses_can_tip_a_greedy_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGLE_PORT", str(free_port()))
    # A CPU where llama.cpp repacks the weights (x86 without AMX, ARM): its kernels for them have no
    # reference version.
    monkeypatch.setattr(llama_model, "runs_amx", lambda: False)
    runtime = by_name(run_checks(tmp_path / "home"))["llama.cpp"]
    assert runtime.ok and "repacks the weights" in runtime.detail and "deterministic = true" in runtime.detail
    monkeypatch.setenv("INGLE_DETERMINISTIC", "true")  # which keeps them unpacked
    assert "repacks" not in by_name(run_checks(tmp_path / "home"))["llama.cpp"].detail
    # A llama-cpp-python build whose CPU device is laid out otherwise than the pinned one's.
    monkeypatch.setattr(reference_kernels, "_cpu_device", lambda: None)
    runtime = by_name(run_checks(tmp_path / "home"))["llama.cpp"]
    assert not runtime.ok and "reference kernels" in runtime.detail and "deterministic = false" in runtime.detail
    monkeypatch.setenv("INGLE_DETERMINISTIC", "false")
    runtime = by_name(run_checks(tmp_path / "home"))["llama.cpp"]
    assert runtime.ok and "can tip a greedy answer" in runtime.detail


@pytest.mark.slow
def test_a_ready_machine_passes_every_check(default_model_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGLE_HOME", str(default_model_home))
    monkeypatch.setenv("INGLE_PORT", str(free_port()))
    result = subprocess.run([INGLE, "doctor"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout
    assert result.stdout.count("✓") == 8
    assert "All checks passed." in result.stdout


def test_the_command_exits_1_and_says_what_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGLE_HOME", str(tmp_path / "home"))
    result = subprocess.run([INGLE, "doctor", "--skip-port"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ default model: qwen2.5-coder:0.5b is not in the store; get it with `ingle pull default`." in result.stdout
    assert "1 check failed." in result.stdout


def test_a_broken_config_is_a_failed_check_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(monkeypatch, tmp_path / "ingle.toml", "keep_alive = 'forever'\n")
    result = subprocess.run([INGLE, "doctor"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "✗ config: 'keep_alive' is invalid" in result.stdout
    assert "skipped until the config file parses" in result.stdout


def test_unparsable_toml_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(monkeypatch, tmp_path / "ingle.toml", "keep_alive = \n")
    checks = run_checks(tmp_path / "home")
    assert not checks[0].ok and "cannot be read" in checks[0].detail


def test_listening_beyond_loopback_needs_an_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGLE_HOST", "0.0.0.0")
    checks = by_name(run_checks(tmp_path / "home", skip_port=True))
    assert not checks["security"].ok and "api_key" in checks["security"].detail
    monkeypatch.setenv("INGLE_API_KEY", "secret")
    assert by_name(run_checks(tmp_path / "home", skip_port=True))["security"].ok


def test_a_port_taken_by_something_else_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        monkeypatch.setenv("INGLE_PORT", str(squatter.getsockname()[1]))
        check = by_name(run_checks(tmp_path / "home"))["port"]
    assert not check.ok and "taken by another program" in check.detail


@contextmanager
def health_server() -> Iterator[int]:
    """A loopback HTTP server answering /health like ingle does."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok"}).encode()
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_port_with_ingle_answering_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with health_server() as port:
        monkeypatch.setenv("INGLE_PORT", str(port))
        check = by_name(run_checks(tmp_path / "home"))["port"]
    assert check.ok and "already answering" in check.detail


def test_store_problems_are_listed(tmp_path: Path) -> None:
    manifests = tmp_path / "home" / "models" / "manifests" / "broken"
    manifests.mkdir(parents=True)
    (tmp_path / "home" / "models" / "blobs").mkdir()
    (tmp_path / "home" / "models" / "partial").mkdir()
    (manifests / "latest.json").write_text("{not json")
    check = by_name(run_checks(tmp_path / "home", skip_port=True))["model store"]
    assert not check.ok
    assert "damaged" in check.detail and "ingle rm" in check.detail


def test_an_unwritable_store_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: Path(path) != models)
    check = by_name(run_checks(tmp_path / "home", skip_port=True))["model store"]
    assert not check.ok and "not readable and writable" in check.detail


def test_a_full_disk_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10 * 1024 * 1024})())
    check = by_name(run_checks(tmp_path / "home", skip_port=True))["disk"]
    assert not check.ok and "10 MiB free" in check.detail


@pytest.mark.slow
def test_a_model_too_big_for_memory_fails(default_model_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGLE_MEMORY_LIMIT_MIB", "256")
    checks = by_name(run_checks(default_model_home, skip_port=True))
    assert checks["default model"].ok
    assert not checks["memory"].ok
    assert "lower num_ctx or num_parallel" in checks["memory"].detail


BOT_SECTIONS = """
[bots.telegram]
allowed_users = ["1"]

[bots.slack]
bot_token = "xoxb-secret"
app_token = "xapp-secret"
timezone = "Mars/Olympus_Mons"

[bots.irc]
token = "irc-secret"

[bots.mattermost]
url = "https://chat.example.com"
token = "mm-secret"
"""


def test_bot_sections_are_checked_like_the_bots_read_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(monkeypatch, tmp_path / "ingle.toml", BOT_SECTIONS)
    checks = by_name(run_checks(tmp_path / "home", skip_port=True))

    assert not checks["bots.telegram"].ok
    assert checks["bots.telegram"].detail == "The [bots.telegram] section needs 'token' (or INGLE_TELEGRAM_TOKEN)."
    assert not checks["bots.slack"].ok and "'timezone' is invalid" in checks["bots.slack"].detail
    assert not checks["bots.irc"].ok and "there is no 'irc' bot" in checks["bots.irc"].detail
    assert checks["bots.mattermost"].ok and "answers nobody" in checks["bots.mattermost"].detail
    assert not any("secret" in check.detail for check in checks.values()), "no token is ever echoed"


def test_the_command_fails_on_a_bad_bot_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(monkeypatch, tmp_path / "ingle.toml", "[bots.irc]\ntoken = 'x'\n")
    monkeypatch.setenv("INGLE_HOME", str(tmp_path / "home"))
    result = subprocess.run([INGLE, "doctor", "--skip-port"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "✗ bots.irc: there is no 'irc' bot; rename the section to one of [bots.telegram]" in result.stdout
    assert result.stderr == ""
