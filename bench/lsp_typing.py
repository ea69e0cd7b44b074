"""Typing replay: completion as someone types lines of a real file, through `ingle lsp` and llama-server.

Lines spread over a real source file are erased (their indentation kept) and
typed again, one character at a time; at each pause (after a space or a
punctuation mark) a completion is requested and timed. The same keystrokes
then go to llama-server's `/infill`, shaped the way llama.vim sends them,
with the same client-side cache llama.vim keeps. Printed for each: p50/p95
time to a suggestion, p50 of the model answers alone, the first answer on
each line (the cursor has just jumped there, so little of the prompt is
cached), the share served from cache and how fast those were, and the share
of suggestions matching what was typed next.

    .venv/bin/python bench/lsp_typing.py [--file core/engine.py] [--lines 10] [--skip-llama-server]
        [--options '{"prefixLines": 24}'] [--trace]

The default model comes from INGLE_HOME or ~/.cache/ingle-tests/home;
llama-server from --llama-server, $LLAMA_SERVER, or bench/build_llama_server.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from ingle.core.runtime.llama_model import runs_amx
from ingle.core.settings import Settings
from ingle.core.store import ModelStore
from ingle.lsp.cache import CacheKey, SuggestionCache
from ingle.lsp.prompt import Cursor

ROOT = Path(__file__).resolve().parent.parent
PAUSE_AFTER = set(" ([{.,:=")
MODEL = "qwen2.5-coder:0.5b"
# llama.vim's defaults (its first request of a position is the quick one: 250 ms of prediction).
LLAMA_VIM = {"n_prefix": 256, "n_suffix": 64, "n_predict": 128, "t_max_prompt_ms": 500, "t_max_predict_ms": 250}


@dataclass
class Run:
    """The measurements of one replay."""

    name: str
    seconds: list[float] = field(default_factory=list)
    model_seconds: list[float] = field(default_factory=list)
    cache_seconds: list[float] = field(default_factory=list)
    suggested: int = 0
    matched: int = 0
    useful: int = 0
    server_cache_ms: list[float] = field(default_factory=list)
    """Cache answers timed inside the server, without the JSON-RPC round trip."""
    evaluated_tokens: list[int] = field(default_factory=list)
    """Prompt tokens decoded per model answer, where the answer reported it."""
    line_starts: list[float] = field(default_factory=list)
    """The first answer on each line typed: the cursor has just jumped there."""

    def record(self, seconds: float, from_cache: bool, suggestion: str, typed_next: str) -> None:
        """One answer: how long it took, where it came from, and whether it was what the user typed next."""
        self.seconds.append(seconds)
        (self.cache_seconds if from_cache else self.model_seconds).append(seconds)
        first = suggestion.split("\n")[0].rstrip()
        if first.strip():
            self.suggested += 1
            if typed_next.startswith(first):
                self.matched += 1
            common = len(os.path.commonprefix([first, typed_next]))  # noqa: RUF071 - characters, not path parts
            if common >= min(4, len(typed_next)):
                self.useful += 1

    def report(self) -> list[str]:
        """The figures, one per line."""
        count = len(self.seconds)

        def ms(values: list[float], q: float) -> str:
            if not values:
                return "-"
            ordered = sorted(values)
            return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f} ms"

        lines = [
            f"{self.name}: {count} requests",
            f"  time to suggestion  p50 {ms(self.seconds, 0.5)}   p95 {ms(self.seconds, 0.95)}",
            f"  model answers       p50 {ms(self.model_seconds, 0.5)}   p95 {ms(self.model_seconds, 0.95)}"
            f"   ({len(self.model_seconds)})",
            f"  first on each line  p50 {ms(self.line_starts, 0.5)}   max {ms(self.line_starts, 1.0)}",
            f"  from cache          {len(self.cache_seconds) / max(1, count):.0%}"
            f"   p50 {ms(self.cache_seconds, 0.5)}   max {ms(self.cache_seconds, 1.0)}",
            f"  cache answers inside the server: max {max(self.server_cache_ms, default=0):.1f} ms"
            if self.server_cache_ms
            else "",
            f"  prompt tokens evaluated per model answer: median {statistics.median(self.evaluated_tokens):.0f}"
            f" ({len(self.evaluated_tokens)} reported)"
            if self.evaluated_tokens
            else "",
            f"  suggestions shown   {self.suggested / max(1, count):.0%} of requests",
            f"  matching what was typed next: {self.matched / max(1, self.suggested):.0%} of suggestions exactly, "
            f"{self.useful / max(1, self.suggested):.0%} with at least its first 4 characters right",
        ]
        return [line for line in lines if line]


@dataclass(frozen=True)
class Pause:
    """A moment in the replay: the document, the cursor, and what the user types next on the line."""

    lines: list[str]
    line: int
    character: int
    typed_next: str


def replay(source: list[str], targets: list[int]) -> list[list[Pause]]:
    """For each target line: the pauses while it is typed again from its indentation."""
    sessions = []
    for target in targets:
        full = source[target]
        indent = len(full) - len(full.lstrip())
        pauses = []
        for end in range(indent, len(full)):
            typed = full[:end]
            if end == indent or full[end - 1] in PAUSE_AFTER:
                lines = source[:target] + [typed] + source[target + 1 :]
                pauses.append(Pause(lines, target, end, full[end:]))
        sessions.append(pauses)
    return sessions


def pick_targets(source: list[str], count: int) -> list[int]:
    """Lines worth typing (code, not too short), spread evenly over the file."""
    candidates = [
        index
        for index, line in enumerate(source)
        if len(line.strip()) >= 16 and not line.strip().startswith(("#", '"""', "@")) and index > 20
    ]
    step = max(1, len(candidates) // count)
    return candidates[::step][:count]


# --- ingle over LSP --------------------------------------------------------------------


async def run_ingle(
    sessions: list[list[Pause]], path: Path, home: Path, embedded: bool, options: dict, trace: bool
) -> Run:
    """The replay through `ingle lsp` over stdio."""
    client = LanguageClient("bench", "1")
    # Status messages are for people; the bench only needs them out of the way.
    client.feature(types.WINDOW_SHOW_MESSAGE)(lambda params: None)
    client.feature(types.WINDOW_LOG_MESSAGE)(lambda params: None)
    environment = {**os.environ, "INGLE_HOME": str(home), "INGLE_NUM_THREADS": "2"}
    args = ["lsp", "--embedded"] if embedded else ["lsp"]
    await client.start_io(str(Path(sys.executable).with_name("ingle")), *args, env=environment)
    stderr_task = asyncio.create_task(_drain(client))
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=ROOT.as_uri(), initialization_options=options
        )
    )
    client.initialized(types.InitializedParams())
    uri = path.as_uri()
    version = 1
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", version, path.read_text()))
    )

    run = Run("ingle lsp")

    async def ask(pause: Pause) -> tuple[str, bool]:
        nonlocal version
        version += 1
        whole = types.Range(types.Position(0, 0), types.Position(len(pause.lines) + 10, 0))
        change = types.TextDocumentContentChangePartial(range=whole, text="\n".join(pause.lines) + "\n")
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(version=version, uri=uri), [change])
        )
        params = types.CompletionParams(types.TextDocumentIdentifier(uri), types.Position(pause.line, pause.character))
        result = await asyncio.wait_for(client.text_document_completion_async(params), 120)
        assert isinstance(result, types.CompletionList), result  # what ingle lsp answers
        if not result.items:
            return "", False
        item = result.items[0]
        data = item.data or {}
        if data.get("fromCache"):
            run.server_cache_ms.append(data["ms"])
        elif data.get("evaluatedTokens"):
            run.evaluated_tokens.append(data["evaluatedTokens"])
        edit = item.text_edit
        assert isinstance(edit, types.TextEdit), item
        word_length = pause.character - edit.range.start.character
        suggestion = edit.new_text[word_length:]
        if trace:
            source = "cache" if data.get("fromCache") else f"{data.get('evaluatedTokens', 0)} prompt tokens evaluated"
            first_line = suggestion.split("\n")[0]
            print(
                f"  line {pause.line + 1} col {pause.character}: {data.get('ms', 0):.0f} ms ({source}) "
                f"{first_line!r}, typed next {pause.typed_next!r}"
            )
        return suggestion, bool(data.get("fromCache"))

    # Warm-up: the model loads and the file's head gets evaluated once, outside the figures.
    await ask(sessions[0][0])
    run.server_cache_ms.clear()
    run.evaluated_tokens.clear()
    await _replay(run, sessions, ask)
    await client.shutdown_async(None)
    client.exit(None)
    await asyncio.wait_for(client.stop(), 30)
    stderr_task.cancel()
    return run


async def _drain(client: LanguageClient) -> None:
    server = client._server
    assert server is not None and server.stderr is not None, "the client starts the server with a stderr pipe"
    async for _ in server.stderr:
        pass


async def _replay(run: Run, sessions: list[list[Pause]], ask: Callable[[Pause], Awaitable[tuple[str, bool]]]) -> Run:
    for pauses in sessions:
        for index, pause in enumerate(pauses):
            started = time.perf_counter()
            suggestion, from_cache = await ask(pause)
            run.record(time.perf_counter() - started, from_cache, suggestion, pause.typed_next)
            if index == 0:
                run.line_starts.append(run.seconds[-1])
    return run


# --- llama-server /infill, shaped like llama.vim -------------------------------------------


def llama_vim_request(pause: Pause) -> dict:
    """The body llama.vim posts to /infill for this cursor (its fim_ctx_local and fim request)."""
    lines, line = pause.lines, pause.line
    current = lines[line]
    prefix_lines = lines[max(0, line - LLAMA_VIM["n_prefix"]) : line]
    suffix_lines = lines[line + 1 : line + 1 + LLAMA_VIM["n_suffix"]]
    indent = len(current) - len(current.lstrip())
    return {
        "input_prefix": "\n".join(prefix_lines) + "\n",
        "input_suffix": current[pause.character :] + "\n" + "\n".join(suffix_lines) + "\n",
        "input_extra": [],
        "prompt": current[: pause.character],
        "n_predict": LLAMA_VIM["n_predict"],
        "n_indent": indent,
        "top_k": 40,
        "top_p": 0.90,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": LLAMA_VIM["t_max_prompt_ms"],
        "t_max_predict_ms": LLAMA_VIM["t_max_predict_ms"],
        "response_fields": ["content", "timings/prompt_n", "timings/predicted_n", "tokens_cached"],
    }


async def run_llama_server(sessions: list[list[Pause]], binary: str, model_path: Path, path: Path) -> Run:
    """The replay against llama-server, with a llama.vim-like client cache in front."""
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            "-m",
            str(model_path),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "-t",
            "2",
            "-c",
            "8192",
            "-np",
            "1",
            "--cache-reuse",
            "256",
            *same_weights_as_ingle(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = SuggestionCache(250)
    prompt_tokens: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            await _until_healthy(http, process)

            async def ask(pause: Pause) -> tuple[str, bool]:
                key = CacheKey.of(Cursor(path.name, pause.lines, pause.line, pause.character), MODEL)
                cached = cache.get(key)
                if cached is not None:
                    return cached, True
                response = await http.post("/infill", json=llama_vim_request(pause))
                response.raise_for_status()
                body = response.json()
                prompt_tokens.append(body.get("timings/prompt_n", 0))
                content = body.get("content", "")
                cache.put(key, content)
                return content, False

            await ask(sessions[0][0])
            run = await _replay(Run("llama-server /infill (llama.vim shape)"), sessions, ask)
    finally:
        process.terminate()
        process.wait(timeout=30)
    run.evaluated_tokens = prompt_tokens[1:]
    return run


async def _until_healthy(http: httpx.AsyncClient, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode}")
        try:
            if (await http.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("llama-server did not become healthy in 120 s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def same_weights_as_ingle() -> list[str]:
    """llama-server's option that lays out the weights as ingle does: no repacking on an AMX CPU, where
    llama.cpp's AMX product crashes (ingle.core.runtime.llama_model.model_params)."""
    return ["--no-repack"] if runs_amx() else []


def find_llama_server(explicit: str | None) -> str:
    """The llama-server binary: given, from $LLAMA_SERVER, or built (once) by build_llama_server.sh."""
    if explicit or os.environ.get("LLAMA_SERVER"):
        return explicit or os.environ["LLAMA_SERVER"]
    built = subprocess.run(
        ["bash", str(ROOT / "bench" / "build_llama_server.sh")], check=True, capture_output=True, text=True
    )
    return built.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="core/engine.py", help="the source file to type (default: core/engine.py)")
    parser.add_argument("--lines", type=int, default=10, help="how many of its lines to type again")
    parser.add_argument("--llama-server", help="path of a llama-server binary")
    parser.add_argument("--skip-llama-server", action="store_true")
    parser.add_argument("--daemon", action="store_true", help="go through the daemon instead of --embedded")
    parser.add_argument("--options", type=json.loads, default={}, help="initializationOptions for ingle lsp, as JSON")
    parser.add_argument("--trace", action="store_true", help="print every answer of ingle lsp")
    options = parser.parse_args()

    home = Path(os.environ.get("INGLE_HOME") or Path("~/.cache/ingle-tests/home").expanduser())
    path = (ROOT / options.file).resolve()
    source = path.read_text().split("\n")
    sessions = replay(source, pick_targets(source, options.lines))
    print(
        f"Typing {len(sessions)} lines of {options.file} again: {sum(map(len, sessions))} pauses, "
        f"default model {MODEL}, 2 threads.\n"
    )
    ingle_run = run_ingle(sessions, path, home, not options.daemon, options.options, options.trace)
    runs = [asyncio.run(ingle_run)]
    print("\n".join(runs[0].report()), flush=True)
    if not options.skip_llama_server:
        store = ModelStore(Settings(home=home).models_dir)
        blob = store.blob_path(store.get(MODEL).digest)
        runs.append(asyncio.run(run_llama_server(sessions, find_llama_server(options.llama_server), blob, path)))
        print("\n".join(runs[1].report()))
    ingle = runs[0]
    p50 = statistics.median(ingle.seconds)
    p95 = sorted(ingle.seconds)[int(0.95 * len(ingle.seconds))]
    cache_max = max(ingle.cache_seconds, default=0.0)
    inside = max(ingle.server_cache_ms, default=0.0)
    print("\nTargets:")
    print(f"  p50 < 300 ms: {'yes' if p50 < 0.3 else 'NO'} ({p50 * 1000:.0f} ms)")
    print(f"  p95 < 1 s: {'yes' if p95 < 1.0 else 'NO'} ({p95 * 1000:.0f} ms)")
    print(
        f"  cache answers < 10 ms: {'yes' if cache_max < 0.01 else 'NO'} (slowest {cache_max * 1000:.1f} ms "
        f"with the JSON-RPC round trip, {inside:.1f} ms inside the server)"
    )
    if len(runs) > 1:
        other = statistics.median(runs[1].seconds)
        print(
            f"  p50 no slower than llama-server: {'yes' if p50 <= other else 'NO'} "
            f"({p50 * 1000:.0f} ms vs {other * 1000:.0f} ms)"
        )
        # Both sides answer about half the pauses from a cache, so the model answers are the fairer comparison.
        mine, theirs = statistics.median(ingle.model_seconds), statistics.median(runs[1].model_seconds)
        print(
            f"  model answers p50 no slower than llama-server's: {'yes' if mine <= theirs else 'NO'} "
            f"({mine * 1000:.0f} ms vs {theirs * 1000:.0f} ms)"
        )
    print(
        f"\nLoad average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(timings are only comparable on an otherwise idle machine)."
    )


if __name__ == "__main__":
    main()
