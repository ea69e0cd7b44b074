"""Completion quality on code that is not ours: lines blanked in well-known packages, each in a newly opened file.

The sources of a few packages from the package index, pinned by version
(downloaded once with pip into ~/.cache/ingle-bench/quality), are the
repositories. A fixed, seeded set of tasks (bench/data/completion_tasks.json)
blanks one line, or the first lines of a function body, at its indentation;
the file is opened in the language server as the editor would, with the
package's other files as its workspace, and a completion is asked once, a
second after the file opened (a person looks before typing). Scored against
the line(s) that were there: exact match, and edit similarity (difflib's
ratio, 0 to 1), of the suggestion once complete (ingle shows its start early
and writes the rest into its cache, where the next keystroke finds it), and
the exact match of what was shown first. The same tasks go through:

- ingle's language server in-process on the default model, once per context
  source (the window around the cursor alone; plus the file's imports; plus
  definitions from other files; plus similar code from other places; all
  three, the default), and once more with all three but a fill-in-the-middle
  prompt where the default continues the file (on a line holding only
  indentation);
- llama-server's /infill with llama.vim's request shape (256 lines before,
  64 after, n_indent, 250 ms of prediction) on the same model file;
- ingle's engine asked straight, greedy, with a prompt that ends in the
  hole's indentation as llama.vim's and Continue's do (64 lines before, 16
  after), once as it is (the engine heals the indentation's last token:
  core/runtime/indentation.py) and once with that switched off; and the same
  two as a plain completion of the 64 lines before.

Times are to the first suggestion shown in the newly opened file (for the
engine rows, to the whole answer).

With no options (`make bench-quality`) every task of the fixed set goes
through every row; the options pick a part for a quick look:

    .venv/bin/python bench/completion_quality.py                 # all 64 tasks, all eleven rows
    .venv/bin/python bench/completion_quality.py --tasks 1 --packages requests --rows window   # one hole, one row
    .venv/bin/python bench/completion_quality.py --skip 8 --rows all,llama-server   # the second half, two rows
    .venv/bin/python bench/completion_quality.py --make-tasks    # only to rebuild the task file (changes the set)

`--language typescript` (`make bench-quality-ts`) runs the same measurement on TypeScript: the `src/**/*.ts`
of a few npm packages, pinned by version (packed once with `npm pack` into ~/.cache/ingle-bench/quality/npm;
declaration files, tests and generated files left out), with their own fixed task set
(bench/data/completion_tasks_ts.json: one-line return, expression and declaration statements of function and
method bodies, and the first lines of bodies, found with tree-sitter's TypeScript grammar). The files are
opened as "typescript"; the workspace is the package's tree, so the language server indexes its other files.
Its rows default to the window alone, all context sources, and llama-server:

    .venv/bin/python bench/completion_quality.py --language typescript   # all 48 tasks, three rows
    .venv/bin/python bench/completion_quality.py --language typescript --tasks 2 --packages zod --rows all
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import difflib
import json
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest.mock import patch

import httpx
import tree_sitter_typescript
from api import free_port, model_home, serving
from lsp_typing import MODEL, Pause, find_llama_server, llama_vim_request, same_weights_as_ingle
from lsprotocol import types
from pygls.workspace import Workspace
from tree_sitter import Language, Node, Parser

from ingle.adapters.cli.engine_access import EngineChoice
from ingle.adapters.engine_api import LocalEngine
from ingle.core.engine import Engine
from ingle.core.generation import GenerationRequest, SamplingOptions
from ingle.core.runtime import prompt as prompt_module
from ingle.core.settings import Settings
from ingle.core.store import ModelStore
from ingle.lsp.server import IngleLanguageServer, create_server

ROOT = Path(__file__).resolve().parent.parent
TASKS_FILE = ROOT / "bench" / "data" / "completion_tasks.json"
CACHE = Path("~/.cache/ingle-bench/quality").expanduser()
# The repositories: pure-Python packages everyone knows, pinned so the task set never moves.
PACKAGES = {"requests": "2.32.3", "click": "8.1.7", "flask": "3.0.3", "attrs": "24.2.0"}
# The TypeScript set's repositories: npm packages whose tarballs ship their TypeScript sources.
NPM_PACKAGES = {"zod": "4.6.7", "rxjs": "7.8.2", "immer": "11.2.13"}
TS_TASKS_FILE = ROOT / "bench" / "data" / "completion_tasks_ts.json"
# Folders of a package's sources that are not its code: tests, benchmarks, and zod's message tables per locale.
TS_SKIPPED_FOLDERS = {"test", "tests", "__tests__", "benchmarks", "locales"}
SEED = 16
TASKS_PER_PACKAGE = 16
MULTI_LINE_SHARE = 0.35
# A person looks at a file they just opened for about this long before typing.
LOOK_SECONDS = 1.0
# ingle's rows: the language server's settings for each context source, and the row's name in the table.
INGLE_ROWS = {
    "window": (
        "ingle, the window at the cursor only",
        {"repositoryTokens": 0, "fileImports": False, "snippetTokens": 0},
    ),
    "imports": ("ingle, + the file's imports", {"repositoryTokens": 0, "snippetTokens": 0}),
    "definitions": ("ingle, + definitions from other files", {"fileImports": False, "snippetTokens": 0}),
    "similar": ("ingle, + similar code from other places", {"repositoryTokens": 0, "fileImports": False}),
    "all": ("ingle, all three (default)", {}),
    "fim": ("ingle, all three, fill-in-the-middle on a blank line too", {"plainAtLineStart": False}),
}
LLAMA_SERVER_ROW = "llama-server"
# The engine asked straight with a prompt ending in the indentation: whether it heals it (the default).
# Fill-in-the-middle, or a plain completion of the lines before (no suffix).
ENGINE_ROWS = {
    "healed": ("ingle's engine, FIM prompt ending in the indentation (healed)", True, True),
    "unhealed": ("ingle's engine, same, healing off", True, False),
    "plain-healed": ("ingle's engine, plain completion ending in the indentation (healed)", False, True),
    "plain-unhealed": ("ingle's engine, same, healing off", False, False),
}
ENGINE_LINES_BEFORE, ENGINE_LINES_AFTER = 64, 16
ROWS = [*INGLE_ROWS, LLAMA_SERVER_ROW, *ENGINE_ROWS]
TS_ROWS = ["window", "all", LLAMA_SERVER_ROW]
# The language id the editor sends with a file of this suffix.
LANGUAGE_IDS = {".py": "python", ".ts": "typescript"}


@dataclass(frozen=True)
class Task:
    """Lines `line` .. `line + size - 1` of a file of a package, blanked from their indentation on."""

    package: str
    path: str
    line: int
    size: int


@dataclass
class Score:
    """How one completer did on the tasks."""

    name: str
    exact: list[bool] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    multi_exact: list[bool] = field(default_factory=list)
    shown_exact: list[bool] = field(default_factory=list)
    """Exact matches of the first suggestion shown, before the rest of it was written."""
    lone_words: int = 0
    """First suggestions that were a lone word (`def`, `return`) where the line held more."""

    def add(self, task: Task, expected: list[str], shown: str, settled: str, seconds: float) -> None:
        """Score a suggestion (as first shown, and once complete) against the lines that were there."""
        want = [line.rstrip() for line in expected]
        exact = _lines(settled, task.size) == want
        self.exact.append(exact)
        if task.size > 1:
            self.multi_exact.append(exact)
        self.shown_exact.append(_lines(shown, task.size) == want)
        ratio = difflib.SequenceMatcher(None, "\n".join(_lines(settled, task.size)), "\n".join(want)).ratio()
        self.similarity.append(ratio)
        self.seconds.append(seconds)
        if re.fullmatch(r"\w+", shown.strip()) and shown.strip() != want[0].strip():
            self.lone_words += 1

    def row(self) -> str:
        """One line of the table, in the README's columns."""
        ordered = sorted(self.seconds)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        similarity = statistics.mean(self.similarity)
        return (
            f"| {self.name} | {_share(self.exact)} | {sum(self.multi_exact)} | {similarity:.2f} "
            f"| {_share(self.shown_exact)} | {statistics.median(self.seconds) * 1000:,.0f} / {p95 * 1000:,.0f} ms |"
        )


def _lines(text: str, count: int) -> list[str]:
    return [line.rstrip() for line in text.split("\n")][:count]


def _share(values: list[bool]) -> str:
    return f"{sum(values) / max(1, len(values)):.0%}"


# --- the repositories ---------------------------------------------------------------------


def fetch(package: str, version: str) -> Path:
    """The package's source tree at that version, downloaded once (a wheel holds the sources of a pure package)."""
    tree = CACHE / "src" / f"{package}-{version}"
    if tree.is_dir():
        return tree
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", str(wheels)]
        + [f"{package}=={version}"],
        check=True,
    )
    name = package.replace("-", "_")
    wheel = next(wheels.glob(f"{name}-{version}-*.whl"))
    partial = tree.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.endswith(".py") and ".dist-info/" not in member:
                archive.extract(member, partial)
    partial.rename(tree)
    return tree


def make_tasks(trees: dict[str, Path]) -> list[Task]:
    """The seeded task set: code lines inside functions, and the first lines of function bodies."""
    return _seeded_tasks(trees, ".py", _python_bodies)


def _python_bodies(source: str) -> Iterator[list[int | None]]:
    """Per function body of a Python file, each statement's row where it is one line of code (else None), docstrings
    and other bare strings left out."""
    lines = source.split("\n")
    try:
        parsed = ast.parse(source)
    except SyntaxError:
        return
    strings = _string_lines(parsed)
    for node in ast.walk(parsed):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = [statement for statement in node.body if statement.lineno - 1 not in strings]
            yield [
                statement.lineno - 1
                if statement.end_lineno == statement.lineno and _is_code(lines[statement.lineno - 1])
                else None
                for statement in body
            ]


def _seeded_tasks(
    trees: dict[str, Path], suffix: str, bodies: Callable[[str], Iterator[list[int | None]]]
) -> list[Task]:
    """Each package's share of holes, drawn with the set's seed from the function bodies of its `suffix` files."""
    rng = random.Random(SEED)
    tasks: list[Task] = []
    for package, tree in sorted(trees.items()):
        singles: list[Task] = []
        multis: list[Task] = []
        for file in sorted(tree.rglob(f"*{suffix}")):
            path = str(file.relative_to(tree))
            for rows in bodies(file.read_text()):
                singles += [Task(package, path, row, 1) for row in rows if row is not None]
                # The start of a body: two or three one-line statements in a row.
                run: list[int] = []
                for row in rows:
                    if row is None or (run and row != run[-1] + 1):
                        break
                    run.append(row)
                if len(run) >= 2:
                    multis.append(Task(package, path, run[0], min(3, len(run))))
        tasks += _chosen(rng, singles, multis)
    return tasks


def _chosen(rng: random.Random, singles: list[Task], multis: list[Task]) -> list[Task]:
    """A package's share of the set: about a third multi-line holes, the rest single lines, in file order."""
    multi_count = round(TASKS_PER_PACKAGE * MULTI_LINE_SHARE)
    chosen = rng.sample(multis, min(multi_count, len(multis)))
    chosen += rng.sample(singles, TASKS_PER_PACKAGE - len(chosen))
    return sorted(chosen, key=lambda task: (task.path, task.line))


def _string_lines(tree: ast.Module) -> set[int]:
    """0-based lines covered by docstrings and other bare string statements."""
    covered: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            covered.update(range(node.lineno - 1, node.end_lineno or node.lineno))
    return covered


def _is_code(line: str) -> bool:
    text = line.strip()
    return (
        len(text) >= 8
        and not text.startswith(("#", "@", "pass", "..."))
        and text not in ("return", "continue", "break")
    )


# --- the TypeScript repositories --------------------------------------------------------------

# Function and method bodies; an arrow function's only when it is a block.
TS_FUNCTIONS = {
    "function_declaration",
    "generator_function_declaration",
    "function_expression",
    "generator_function",
    "arrow_function",
    "method_definition",
}
TS_STATEMENTS = {"return_statement", "expression_statement", "lexical_declaration", "variable_declaration"}


def fetch_npm(package: str, version: str) -> Path:
    """The package's TypeScript sources at that version, packed once from the npm registry."""
    tree = CACHE / "src" / f"npm-{package}-{version}"
    if tree.is_dir():
        return tree
    tarballs = CACHE / "npm"
    tarballs.mkdir(parents=True, exist_ok=True)
    tarball = tarballs / f"{package.removeprefix('@').replace('/', '-')}-{version}.tgz"
    if not tarball.exists():
        subprocess.run(
            ["npm", "pack", "--silent", f"{package}@{version}", "--pack-destination", str(tarballs)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    partial = tree.with_suffix(".partial")
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            # npm puts every file under `package/`; only the sources are wanted.
            path = Path(member.name).relative_to("package") if member.name.startswith("package/") else None
            if path is None or not member.isfile() or ".." in path.parts or not _is_ts_source(path):
                continue
            content = archive.extractfile(member)
            data = content.read() if content else b""
            if re.search(rb"auto-?generated|@generated|do not edit", data[:400], re.IGNORECASE):
                continue
            (partial / path).parent.mkdir(parents=True, exist_ok=True)
            (partial / path).write_bytes(data)
    partial.rename(tree)
    return tree


def _is_ts_source(path: Path) -> bool:
    """Whether a file of the tarball is hand-written TypeScript code: not a declaration file nor a test."""
    name = path.name
    return (
        path.parts[0] == "src"
        and name.endswith(".ts")
        and not name.endswith((".d.ts", ".test.ts", ".spec.ts"))
        and not TS_SKIPPED_FOLDERS.intersection(path.parts)
    )


def make_ts_tasks(trees: dict[str, Path]) -> list[Task]:
    """The seeded TypeScript set: one-line statements of function bodies, and the first lines of bodies."""
    parser = Parser(Language(tree_sitter_typescript.language_typescript()))

    def bodies(source: str) -> Iterator[list[int | None]]:
        lines = source.split("\n")
        for body in _ts_bodies(parser.parse(source.encode()).root_node):
            statements = [node for node in body.named_children if node.type != "comment"]
            yield [
                node.start_point.row if node.type in TS_STATEMENTS and _alone_on_line(node, lines) else None
                for node in statements
            ]

    return _seeded_tasks(trees, ".ts", bodies)


def _ts_bodies(root: Node) -> list[Node]:
    """The block bodies of every function and method in a parsed file."""
    bodies: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        body = node.child_by_field_name("body") if node.type in TS_FUNCTIONS else None
        if body is not None and body.type == "statement_block":
            bodies.append(body)
        stack += node.children
    return bodies


def _alone_on_line(node: Node, lines: list[str]) -> bool:
    """Whether a statement is one line of code of its own (nothing else on its line)."""
    row = node.start_point.row
    text = node.text.decode() if node.text else ""
    return node.end_point.row == row and lines[row].strip() == text and _is_ts_code(text)


def _is_ts_code(text: str) -> bool:
    return len(text) >= 8 and not text.startswith(("//", "/*", "*"))


@dataclass(frozen=True)
class TaskSet:
    """One language's repositories, how they are fetched, and its fixed task file."""

    packages: dict[str, str]
    tasks_file: Path
    fetch: Callable[[str, str], Path]
    make_tasks: Callable[[dict[str, Path]], list[Task]]
    rows: list[str]
    """The rows run when --rows is not given."""


TASK_SETS = {
    "python": TaskSet(PACKAGES, TASKS_FILE, fetch, make_tasks, ROWS),
    "typescript": TaskSet(NPM_PACKAGES, TS_TASKS_FILE, fetch_npm, make_ts_tasks, TS_ROWS),
}


def holed(lines: list[str], task: Task) -> tuple[list[str], list[str], int]:
    """The file's lines with the hole, the lines that were there (the first without its indentation), the column."""
    first = lines[task.line]
    indent = len(first) - len(first.lstrip())
    expected = [first[indent:], *lines[task.line + 1 : task.line + task.size]]
    return lines[: task.line] + [first[:indent]] + lines[task.line + task.size :], expected, indent


# --- ingle ----------------------------------------------------------------------------------


async def run_ingle(
    name: str, options: dict, tasks: list[Task], trees: dict[str, Path], home: Path, threads: int
) -> Score:
    """Each task in a newly opened file of its package's workspace, through the language server in-process."""
    score = Score(name)
    settings = Settings(home=home, num_threads=threads)
    async with Engine(settings) as engine:
        await engine.load(MODEL)
        for package in sorted({task.package for task in tasks}):
            server = _server(engine, trees[package], options)
            server.scan_workspace()
            assert server._scan is not None
            await server._scan
            for task in [task for task in tasks if task.package == package]:
                lines = (trees[package] / task.path).read_text().split("\n")
                text, expected, column = holed(lines, task)
                uri = (trees[package] / task.path).as_uri()
                language_id = LANGUAGE_IDS[Path(task.path).suffix]
                server.workspace.put_text_document(types.TextDocumentItem(uri, language_id, 1, "\n".join(text)))
                server.opened(uri)
                await asyncio.sleep(LOOK_SECONDS)
                started = time.perf_counter()
                suggestion = await server.complete(uri, types.Position(task.line, column))
                seconds = time.perf_counter() - started
                shown = settled = suggestion.text if suggestion else ""
                if uri in server.finishing:
                    # The start was shown at once; the rest follows into the cache, where the next ask finds it.
                    await server.finishing[uri].task
                    again = await server.complete(uri, types.Position(task.line, column))
                    settled = again.text if again else shown
                score.add(task, expected, shown, settled, seconds)
                _progress(score, task, settled, shown)
                server.forget(uri)
                server.workspace.remove_text_document(uri)
            for uri in list(server.warming):
                server.forget(uri)
    return score


def _server(engine: Engine, tree: Path, options: dict) -> IngleLanguageServer:
    server = create_server(engine.settings, EngineChoice(embedded=True), api=LocalEngine(engine))
    server.protocol._workspace = Workspace(tree.as_uri())
    server.protocol.client_capabilities = types.ClientCapabilities()
    server.configure({"startDaemon": False, **options})
    return server


# --- ingle's engine, a prompt ending in the indentation --------------------------------------


async def run_engine(
    name: str, fim: bool, heal: bool, tasks: list[Task], trees: dict[str, Path], home: Path, threads: int
) -> Score:
    """Each task as one greedy request whose prompt ends in the hole's indentation: fill-in-the-middle, or a
    plain (raw) completion of the lines before."""
    score = Score(name)
    # Off, the whole indentation stays in the prompt, as before the healing was built.
    healing = nullcontext() if heal else patch.object(prompt_module, "heal_indentation", lambda _, text: (text, ""))
    with healing:
        async with Engine(Settings(home=home, num_threads=threads)) as engine:
            await engine.load(MODEL)
            for task in tasks:
                lines = (trees[task.package] / task.path).read_text().split("\n")
                text, expected, _ = holed(lines, task)
                before = text[max(0, task.line - ENGINE_LINES_BEFORE) : task.line + 1]  # ends in the indentation
                after = text[task.line + 1 : task.line + 1 + ENGINE_LINES_AFTER]
                request = GenerationRequest(
                    model=MODEL,
                    prompt="\n".join(before),
                    suffix="\n" + "".join(line + "\n" for line in after) if fim else None,
                    raw=not fim,
                    filename=task.path,
                    options=SamplingOptions(temperature=0, max_tokens=48),
                )
                started = time.perf_counter()
                answer = "".join([chunk.text async for chunk in engine.generate(request)])
                score.add(task, expected, answer, answer, time.perf_counter() - started)
                _progress(score, task, answer, answer)
    return score


# --- llama-server, llama.vim's shape ----------------------------------------------------------


async def run_llama_server(
    binary: str, model_path: Path, tasks: list[Task], trees: dict[str, Path], threads: int
) -> Score:
    """Each task as llama.vim's first request at that cursor (no ring chunks: the editor just started)."""
    score = Score("llama-server `/infill`, llama.vim's shape")
    port = free_port()
    # As lsp_typing.py runs it: one slot, cache reuse on.
    command = [binary, "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads)]
    command += ["-c", "8192", "-np", "1", "--cache-reuse", "256", *same_weights_as_ingle()]
    async with (
        serving("llama-server", command, dict(os.environ), port) as url,
        httpx.AsyncClient(base_url=url, timeout=300) as http,
    ):
        for task in tasks:
            lines = (trees[task.package] / task.path).read_text().split("\n")
            text, expected, column = holed(lines, task)
            body = llama_vim_request(Pause(text, task.line, column, ""))
            started = time.perf_counter()
            response = await http.post("/infill", json=body)
            response.raise_for_status()
            content = response.json().get("content", "")
            score.add(task, expected, content, content, time.perf_counter() - started)
            _progress(score, task, content, content)
    return score


def _rank_in_package(tasks: list[Task], index: int) -> int:
    return sum(task.package == tasks[index].package for task in tasks[:index])


def _progress(score: Score, task: Task, suggestion: str, shown: str) -> None:
    mark = "=" if score.exact[-1] else "~"
    first, shown_first = suggestion.split("\n")[0], shown.split("\n")[0]
    where = f"{task.path}:{task.line + 1}"
    print(
        f"  {mark} {score.similarity[-1]:.2f} {score.seconds[-1]:6.1f} s  {where}  {first!r} (shown {shown_first!r})",
        flush=True,
    )


# --- main ---------------------------------------------------------------------------------------


def _names(allowed: list[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated choice out of `allowed`, in the order given."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), not {text!r}")
        return names

    return parse


def _count(text: str) -> int:
    """An argparse type: a count of tasks, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"give a whole number of tasks, not {text!r}")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--language", choices=list(TASK_SETS), default="python", help="the task set: holes in which language's code"
    )
    parser.add_argument(
        "--rows",
        type=_names(ROWS),
        help=f"the completers to run (default: all, {','.join(ROWS)}; for typescript {','.join(TS_ROWS)})",
    )
    parser.add_argument("--tasks", type=_count, help=f"only the first N tasks of each package (of {TASKS_PER_PACKAGE})")
    parser.add_argument("--skip", type=_count, default=0, help="skip the first N tasks of each package")
    every_package = [*PACKAGES, *NPM_PACKAGES]
    parser.add_argument("--packages", type=_names(every_package), help="only these packages' tasks (of the language)")
    parser.add_argument("--llama-server", help="path of a llama-server binary")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for ingle and llama-server alike")
    parser.add_argument("--make-tasks", action="store_true", help="rebuild the task file (it is meant to stay fixed)")
    arguments = parser.parse_args()
    logging.getLogger("pygls").setLevel(logging.CRITICAL)  # no editor is attached to show its messages

    task_set = TASK_SETS[arguments.language]
    rows = arguments.rows or task_set.rows
    packages = arguments.packages or list(task_set.packages)
    if not set(packages) <= set(task_set.packages):
        parser.error(f"--packages: the {arguments.language} set's are {', '.join(task_set.packages)}")
    trees = {package: task_set.fetch(package, version) for package, version in task_set.packages.items()}
    tasks_file = task_set.tasks_file
    if arguments.make_tasks or not tasks_file.exists():
        tasks_file.parent.mkdir(parents=True, exist_ok=True)
        tasks = task_set.make_tasks(trees)
        listed = {"packages": task_set.packages, "tasks": [asdict(t) for t in tasks]}
        tasks_file.write_text(json.dumps(listed, indent=1) + "\n")
    every = [Task(**task) for task in json.loads(tasks_file.read_text())["tasks"]]
    first = arguments.skip
    last = first + arguments.tasks if arguments.tasks is not None else len(every)
    tasks = [
        task
        for index, task in enumerate(every)
        if task.package in packages and first <= _rank_in_package(every, index) < last
    ]
    if not tasks:
        parser.error("--tasks, --skip and --packages leave no task to run")
    multi = sum(task.size > 1 for task in tasks)
    part = "the whole fixed set" if len(tasks) == len(every) else f"part of the fixed set of {len(every)}"
    pinned = ", ".join(f"{package} {version}" for package, version in task_set.packages.items())
    print(f"{len(tasks)} tasks ({multi} of 2-3 lines; {part}) in {pinned}.\n")

    home = Path(os.environ["INGLE_HOME"]) if os.environ.get("INGLE_HOME") else model_home()
    scores = []
    for row in rows:
        if row == LLAMA_SERVER_ROW:
            store = ModelStore(Settings(home=home).models_dir)
            blob = store.blob_path(store.get(MODEL).digest)
            binary = find_llama_server(arguments.llama_server)
            scores.append(asyncio.run(run_llama_server(binary, blob, tasks, trees, arguments.threads)))
        elif row in ENGINE_ROWS:
            name, fim, heal = ENGINE_ROWS[row]
            scores.append(asyncio.run(run_engine(name, fim, heal, tasks, trees, home, arguments.threads)))
        else:
            name, options = INGLE_ROWS[row]
            scores.append(asyncio.run(run_ingle(name, options, tasks, trees, home, arguments.threads)))
        print(scores[-1].row(), flush=True)

    print(
        f"\n| completer | exact match | of the {multi} multi-line | edit similarity | exact as first shown "
        "| first suggestion p50 / p95 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for score in scores:
        print(score.row())
    lone = "; ".join(f"{score.name}: {score.lone_words}" for score in scores)
    print(f"\nFirst suggestions that were a lone word where the line held more: {lone}.")
    print(
        f"Load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(timings are only comparable on an otherwise idle machine)."
    )


if __name__ == "__main__":
    main()
