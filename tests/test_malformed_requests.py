"""Malformed HTTP requests to a real `ingle serve`: each gets an answer and one access-log line, never a traceback.

The requests go over raw sockets, because HTTP client libraries refuse to
send them. The daemon runs as a process on an empty home, as an operator runs it.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .servers import start_daemon

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT = 2
"""The daemon's request_timeout: how long it waits for the rest of a truncated body."""
BAD_UTF8_BODY = b'{"model": "\xff\xfe"}'
DEEP_BODY = b'{"model": "m", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
MALFORMED = {
    "a NUL byte in a header": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Probe: a\x00b\r\n\r\n",
    "a header line without a colon": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColonHere\r\n\r\n",
    "an over-long header": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    "a bad HTTP version": b"GET /health HTTP/9.x\r\nHost: 127.0.0.1\r\n\r\n",
    "a bad chunk size": b"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "bad percent-encoding in the path": b"GET /api/%zz%ff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bad percent-encoding in the query": b"GET /api/tags?name=%ff%zz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "a line break in a path parameter": b"DELETE /v1/responses/a%0D%0Ab HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bad UTF-8 in a JSON body": (
        b"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BAD_UTF8_BODY), BAD_UTF8_BODY)
    ),
    "JSON nested 5,000 deep": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(DEEP_BODY), DEEP_BODY)
    ),
    "a body shorter than its Content-Length": (
        b'POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"model":'
    ),
}
ACCESS_LINE = re.compile(r'"[A-Z]+ \S+ HTTP/1\.[01]" (\d{3}) \d+ "-" "-"$', re.MULTILINE)
"""An access-log line of a request without a User-Agent: these raw ones, not the readiness poll's."""


def status_of(port: int, request: bytes) -> int:
    """Send REQUEST on a fresh connection and return the status of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT + 30) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    assert status_line.startswith("HTTP/1."), f"no HTTP answer: {answer[:200]!r}"
    return int(status_line.split()[1])


def test_malformed_requests_get_an_answer_and_one_log_line_each(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path / "home", "--socket", "", INGLE_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT))
    try:
        port = urlsplit(daemon.url).port
        assert port is not None
        statuses = {name: status_of(port, request) for name, request in MALFORMED.items()}
    finally:
        assert daemon.stop() == 0
    log = daemon.log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert all(status < 500 or status == 504 for status in statuses.values()), statuses
    assert statuses["a NUL byte in a header"] == 400
    assert statuses["bad UTF-8 in a JSON body"] == 400
    assert statuses["JSON nested 5,000 deep"] == 400  # was a 500: the parser's RecursionError
    assert statuses["a line break in a path parameter"] == 404  # was a 500: the id went into the status line
    logged = sorted(int(match.group(1)) for match in ACCESS_LINE.finditer(log))
    assert logged == sorted(statuses.values()), log
