"""`ingle serve` under systemd: the sd_notify protocol, SIGHUP reload, graceful SIGTERM, journal logging.

The daemon runs as a real subprocess with `$NOTIFY_SOCKET` pointing at a
datagram socket this test listens on, exactly as systemd would set it up.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ingle.adapters.config_reload import reload_settings
from ingle.adapters.logging_setup import (
    JournalFormatter,
    configure_logging,
    journal_attached,
)
from ingle.adapters.systemd import SystemdNotifier
from ingle.core.settings import Settings, load_settings

INGLE = str(Path(sys.executable).parent / "ingle")
START_TIMEOUT = 60.0


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket collecting `KEY=value` messages."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = START_TIMEOUT) -> dict[str, str]:
        """The first message (seen before or arriving within `timeout`) that sets `key` (to `value`)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.messages[seen:]:
                if key in message and (value is None or message[key] == value):
                    self.messages.remove(message)
                    return message
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))


@contextmanager
def notify_listener(abstract: bool = True) -> Iterator[NotifyListener]:
    """A listening socket: abstract (`@name`) by default, else a short filesystem path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    folder = None
    try:
        if abstract:
            name = f"ingle-test-{os.getpid()}-{secrets.token_hex(4)}"
            sock.bind(b"\0" + name.encode())
            address = "@" + name
        else:
            # sun_path holds 108 bytes; pytest's tmp_path can be longer.
            folder = tempfile.mkdtemp(prefix="ingle-notify-", dir="/tmp")
            address = os.path.join(folder, "notify")
            sock.bind(address)
        yield NotifyListener(sock, address)
    finally:
        sock.close()
        if folder:
            for entry in Path(folder).iterdir():
                entry.unlink()
            os.rmdir(folder)


# --- the notifier on its own --------------------------------------------------


@pytest.mark.parametrize("abstract", [True, False])
def test_notifier_sends_datagrams_to_path_and_abstract_sockets(abstract: bool) -> None:
    with notify_listener(abstract) as listener:
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": listener.address})
        assert notifier.enabled
        assert notifier.ready("listening on\nhttp://127.0.0.1:1")
        assert notifier.watchdog()
        assert notifier.stopping()
        ready = listener.wait_for("READY", "1", timeout=5)
        assert ready["STATUS"] == "listening on http://127.0.0.1:1"  # one line, never a second assignment
        listener.wait_for("WATCHDOG", "1", timeout=5)
        listener.wait_for("STOPPING", "1", timeout=5)
        notifier.close()


def test_reloading_carries_the_monotonic_time() -> None:
    with notify_listener() as listener:
        notifier = SystemdNotifier(listener.address)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading("reloading")
        message = listener.wait_for("RELOADING", "1", timeout=5)
        assert before <= int(message["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval is None


def test_a_vanished_socket_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier("/nonexistent/notify")
    assert notifier.ready() is False
    assert "could not notify systemd" in caplog.text


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str], interval: float | None) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@x", **environ})
    assert notifier.watchdog_interval == interval


# --- journal logging ------------------------------------------------------------


def test_journal_lines_are_key_value_with_a_syslog_priority() -> None:
    record = logging.LogRecord("ingle.serve", logging.WARNING, __file__, 1, 'model "%s" is slow', ("a b",), None)
    record.model = "qwen2.5-coder:0.5b"
    line = JournalFormatter().format(record)
    assert line == '<4>level=warning logger=ingle.serve msg="model \\"a b\\" is slow" model=qwen2.5-coder:0.5b'


def test_a_traceback_keeps_the_priority_on_every_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("ingle", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    lines = JournalFormatter().format(record).splitlines()
    assert lines[0] == "<3>level=error logger=ingle msg=failed"
    assert len(lines) > 2 and all(line.startswith("<3>  ") for line in lines[1:])


def test_journal_format_only_when_stderr_is_the_announced_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    with open(tmp_path / "journal", "w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
        assert not journal_attached(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert journal_attached(stream)
        try:
            configure_logging(0, Console(file=stream), stream)
            logging.getLogger("ingle.test").info("hello %s", "journal")
        finally:
            logging.basicConfig(force=True)
    assert (tmp_path / "journal").read_text() == '<6>level=info logger=ingle.test msg="hello journal"\n'


# --- reload ---------------------------------------------------------------------------


def test_reload_applies_live_fields_and_names_the_rest(tmp_path: Path) -> None:
    current = Settings(home=tmp_path, keep_alive=300, port=11435)
    fresh = Settings(home=tmp_path, keep_alive=-1, port=8080, num_ctx=2048)
    result = reload_settings(current, lambda: fresh)
    assert sorted(result.applied) == ["keep_alive", "num_ctx"]
    assert result.needs_restart == ["port"]
    assert current.keep_alive == -1 and current.port == 11435
    assert "restart to apply port" in result.summary()


def test_a_broken_config_changes_nothing(tmp_path: Path) -> None:
    current = Settings(home=tmp_path, keep_alive=300)
    result = reload_settings(current, lambda: Settings(home=tmp_path, keep_alive="forever"))  # pyright: ignore[reportArgumentType]
    assert result.error and "keep_alive" in result.error
    assert current.keep_alive == 300


def test_a_config_file_that_is_not_text_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    current = Settings(home=tmp_path, keep_alive=300)
    config = tmp_path / "ingle.toml"
    config.write_bytes("keep_alive = 60\n".encode("utf-16"))  # saved as UTF-16 by an editor
    monkeypatch.setenv("INGLE_CONFIG", str(config))
    result = reload_settings(current, lambda: load_settings(home=tmp_path))
    assert result.error and "not UTF-8" in result.error
    assert current.keep_alive == 300


# --- the daemon -------------------------------------------------------------------


def serve_env(home: Path, listener: NotifyListener, config: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment systemd would give `ingle serve`, plus a throwaway home."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("INGLE_", "NOTIFY_", "WATCHDOG_"))}
    env.update(
        INGLE_HOME=str(home),
        INGLE_CONFIG=str(config or home / "no-config.toml"),
        NOTIFY_SOCKET=listener.address,
        **extra,
    )
    return env


@contextmanager
def running_serve(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`ingle serve` on a free loopback port, no unix socket; killed if the test leaves it running."""
    process = subprocess.Popen(
        [INGLE, "serve", "--host", "127.0.0.1", "--port", "0", "--socket", ""],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def base_url(process: subprocess.Popen[str]) -> str:
    """The URL `ingle serve` printed first ("Listening on http://127.0.0.1:PORT")."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("Listening on http://"), line
    return line.split()[-1]


def test_serve_notifies_ready_watchdog_reload_and_stopping(tmp_path: Path) -> None:
    config = tmp_path / "ingle.toml"
    config.write_text("keep_alive = 300\n")
    with notify_listener() as listener:
        env = serve_env(tmp_path / "home", listener, config, WATCHDOG_USEC="200000")
        with running_serve(env) as process:
            ready = listener.wait_for("READY", "1")
            assert "listening" in ready.get("STATUS", "")
            # READY means the port is bound: the API answers right away.
            url = base_url(process)
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            listener.wait_for("WATCHDOG", "1", timeout=10)
            listener.wait_for("WATCHDOG", "1", timeout=10)  # repeatedly, every WATCHDOG_USEC/2

            config.write_text("keep_alive = -1\nrequest_timeout = 30\n")
            process.send_signal(signal.SIGHUP)
            listener.wait_for("RELOADING", "1", timeout=10)
            after_reload = listener.wait_for("READY", "1", timeout=10)
            assert "applied keep_alive" in after_reload["STATUS"]
            assert "restart to apply request_timeout" in after_reload["STATUS"]

            process.send_signal(signal.SIGTERM)
            listener.wait_for("STOPPING", "1", timeout=10)
            assert process.wait(timeout=30) == 0


@pytest.mark.slow
def test_sigterm_during_a_stream_lets_it_finish(default_model_home: Path) -> None:
    with notify_listener() as listener:
        env = serve_env(default_model_home, listener, INGLE_NUM_THREADS="2", INGLE_NUM_CTX="2048")
        with running_serve(env) as process:
            listener.wait_for("READY", "1")
            url = base_url(process)
            request = {
                "model": "qwen2.5-coder:0.5b",
                "prompt": "Count from 1 to 200, separated by commas.",
                "stream": True,
                "options": {"num_predict": 96, "temperature": 0},
            }
            lines: list[dict] = []
            with httpx.stream("POST", f"{url}/api/generate", json=request, timeout=120) as response:
                assert response.status_code == 200
                chunks = response.iter_lines()
                lines.append(json.loads(next(chunks)))
                process.send_signal(signal.SIGTERM)
                listener.wait_for("STOPPING", "1", timeout=10)
                lines.extend(json.loads(line) for line in chunks if line)
            # The client saw the stream's own end, not a reset: the last line says done.
            assert lines[-1]["done"] is True
            assert len(lines) > 2
            assert not any(line.get("done") for line in lines[:-1])
            assert process.wait(timeout=60) == 0
            # Stopped listening: a new connection is refused.
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/health", timeout=5)
