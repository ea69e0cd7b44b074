"""Where log lines go and what they look like: the journal under systemd, a terminal otherwise.

Under systemd, stderr is a stream to journald, which stamps each line with the
time, unit and PID itself. There, each record is one `key=value` line with a
syslog priority prefix (`<3>` error … `<7>` debug) that journald turns into the
entry's PRIORITY, so `journalctl -u ingle -p warning` and
`journalctl -u ingle | grep 'logger=ingle.serve'` both work. Anywhere else the
lines are for a person at a terminal.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler

# syslog(3) priorities journald understands as a `<N>` line prefix (SyslogLevelPrefix=yes, the default).
_PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_BARE_VALUE = re.compile(r"^[\w.:/@+,-]+$")


def journal_attached(stream: TextIO) -> bool:
    """True when `stream` is the journald stream systemd announced in `$JOURNAL_STREAM` (`device:inode`).

    Comparing device and inode, as systemd.exec(5) advises, keeps a child whose
    stderr was redirected to a file or terminal from writing journal syntax there.
    """
    announced = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = announced.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return info.st_dev == int(device) and info.st_ino == int(inode)


def _priority(levelno: int) -> int:
    for level in sorted(_PRIORITIES, reverse=True):
        if levelno >= level:
            return _PRIORITIES[level]
    return 7


def format_value(value: object) -> str:
    """A value as it appears after `key=`: bare when it is one word, else double-quoted with escapes."""
    text = str(value)
    if text and _BARE_VALUE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class JournalFormatter(logging.Formatter):
    """`<6>level=info logger=ingle.serve msg="…" key=value` — one line per record, no timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        fields: dict[str, object] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                fields[key] = value
        line = prefix + " ".join(f"{key}={format_value(value)}" for key, value in fields.items())
        detail = ""
        if record.exc_info:
            detail = self.formatException(record.exc_info)
        elif record.stack_info:
            detail = self.formatStack(record.stack_info)
        # A traceback keeps its lines (readable in `journalctl`), each with the record's priority
        # so that `-p err` shows the whole of it.
        return "\n".join([line, *(f"{prefix}  {part}" for part in detail.splitlines())])


def configure_logging(verbosity: int, console: Console, stream: TextIO | None = None) -> None:
    """Set up the root logger once per process: journal lines under systemd, rich lines otherwise.

    `verbosity` 0 logs warnings, 1 ingle's info, 2 and more debug (llama.cpp's own log too).
    """
    target = sys.stderr if stream is None else stream
    if journal_attached(target):
        configure_journal_logging(verbosity, target)
        return
    handler = RichHandler(console=console, show_time=False, show_path=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    _install(handler, verbosity)


def configure_journal_logging(verbosity: int, stream: TextIO | None = None) -> None:
    """Journal lines on `stream` (stderr): for callers that already know they run under systemd."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JournalFormatter())
    # A service's log is read later, not watched: info at least, so starts, stops and reloads show.
    _install(handler, max(verbosity, 1))


def _install(handler: logging.Handler, verbosity: int) -> None:
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # Only our own loggers get chatty; asyncio's and httpx's debug lines are noise here,
    # and llama.cpp's load log (at DEBUG) is hundreds of lines, so it waits for -vv.
    levels = {0: logging.WARNING, 1: logging.INFO}
    logging.getLogger("ingle").setLevel(levels.get(verbosity, logging.DEBUG))
