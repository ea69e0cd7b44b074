"""The workspace's Python files as an index of definitions, and the repository context of a document.

The index is filled by one bounded scan of the workspace folders when the
editor connects (and again when they change), and kept fresh from the
documents the editor edits and saves and from its file watcher. All folders
share its bounds. For a document it answers with what the model cannot see
in the window around the cursor: the definitions, in other files of the
workspace, of the names the document imports and uses, most used first, cut
to a budget of tokens. The answer depends on the document alone, not on the
cursor, so it stays the same prompt head while the user moves around in the
file and the engine's prompt cache keeps applying.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingle.core.generation import ContextChunk

from .snippets import SnippetIndex
from .symbols import CHARS_PER_TOKEN, IDENTIFIER, Definition, FileSymbols, import_lines, read_symbols
from .workspace_files import python_files, read_source

log = logging.getLogger("ingle.lsp")

# Bounds on the scan: a workspace holding a virtual environment or a huge monorepo must not stall the editor.
MAX_FILES = 5000
# Memory a definition or an import name takes beyond its text (measured: 1.36 million short assignments, 311 MB).
NAME_BYTES = 250
# The definitions and imports of all files together: twice what 5,000 files of a site-packages take (29,000
# definitions, 48,000 imports: 22 MB measured). A request only ever takes a few hundred tokens of them, but which
# ones depends on the file, so every file's are held; only generated code comes near this.
MAX_SYMBOL_BYTES = 48_000_000
# `alias.attribute`: a use of something a module (or a class) imported under `alias` defines.
_DOTTED = re.compile(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)")


def module_name(path: str) -> tuple[str, str]:
    """A file's dotted module name, and the name relative imports are resolved from.

    `pkg/mod.py` is `pkg.mod` for both; `pkg/__init__.py` is `pkg`, but its
    `from . import x` means `pkg.x`, so it resolves as `pkg.__init__`.
    """
    parts = list(Path(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts)
    dotted = ".".join(parts)
    return dotted, dotted


@dataclass
class RepositoryIndex:
    """Definitions of every indexed file, by module, kept fresh as files change."""

    files: dict[str, FileSymbols] = field(default_factory=dict)
    """By name: the path in its workspace folder (see workspace_folders.py)."""
    modules: dict[str, str] = field(default_factory=dict)
    """Dotted module name (and each shorter suffix of it, for `src/` layouts) to path."""

    snippets: SnippetIndex = field(default_factory=SnippetIndex)
    """The same files' lines, for code like the code at the cursor."""

    max_symbol_bytes: int = MAX_SYMBOL_BYTES
    """Memory the files' definitions and imports may take together, as `NAME_BYTES` per name plus its text."""

    _costs: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    """Each file's share of max_symbol_bytes."""
    _symbol_bytes: int = field(default=0, init=False, repr=False)
    """The sum of _costs."""
    _cost_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    """The scan's thread and the event loop both update files."""
    _reported: set[str] = field(default_factory=set, init=False, repr=False)
    """Files (and the "full" notice, as "") already said in the log to be left out, so each is said once."""

    def update(self, path: str, source: str) -> None:
        """Index a file's text again; a file that does not parse keeps its last good definitions."""
        if not path.endswith(".py"):
            return
        if path not in self.files and len(self.files) >= MAX_FILES:
            return
        self.snippets.update(path, source.split("\n"))
        dotted, relative_base = module_name(path)
        try:
            symbols = read_symbols(path, source, relative_base)
        except (RecursionError, MemoryError):
            # Python's parser gives up on deep nesting (generated code: a sum of 5,000 terms): this file has no
            # definitions for us, the others still do.
            self._report(path, f"not indexing {path}: nested too deeply for Python's parser")
            return
        self._reported.discard(path)
        if symbols is None:
            return
        with self._cost_lock:
            held = self._costs.get(path, 0)
            kept = _within(symbols, self.max_symbol_bytes - self._symbol_bytes + held)
            self._costs[path] = _cost(kept)
            self._symbol_bytes += self._costs[path] - held
        if kept is not symbols:
            self._report("", f"the workspace index is full: {path} and later files keep only some of their names")
        self.files[path] = kept
        # `src/pkg/mod.py` is imported as `pkg.mod`: shorter suffixes of the dotted name point at the file too,
        # unless another file already claimed them; the file's own full name always does.
        pieces = dotted.split(".")
        for start in range(len(pieces)):
            self.modules.setdefault(".".join(pieces[start:]), path)
        self.modules[dotted] = path

    def _report(self, key: str, message: str) -> None:
        """Say once in the log what was left out, not on every keystroke in that file."""
        if key not in self._reported:
            self._reported.add(key)
            log.warning("%s", message)

    def remove(self, path: str) -> None:
        """Forget a deleted file."""
        self.files.pop(path, None)
        with self._cost_lock:
            self._symbol_bytes -= self._costs.pop(path, 0)
        self.snippets.remove(path)
        # A copy: the workspace scan may be adding modules from its thread meanwhile.
        for name in [name for name, owner in list(self.modules.items()) if owner == path]:
            del self.modules[name]

    def scan(
        self, root: Path, stop: threading.Event | None = None, name: Callable[[Path], str | None] | None = None
    ) -> int:
        """Index the Python files under `root` (bounded); returns how many were indexed. Each goes by `name(path)`
        (by its path under `root` without it). Stops early once `stop` is set, or the index holds MAX_FILES files
        (of this or other roots). Blocking: run in a thread."""
        count = 0
        for full in python_files(root, stop):
            if count >= MAX_FILES or len(self.files) >= MAX_FILES or (stop and stop.is_set()):
                break
            path = name(full) if name else str(full.relative_to(root))
            if path is None:
                continue
            source = read_source(full)
            if source is not None:
                self.update(path, source)
                count += 1
        return count

    def definitions_used_by(self, path: str, lines: Sequence[str]) -> list[Definition]:
        """Definitions elsewhere in the workspace of the names a document imports and uses, most used first."""
        symbols = self.files.get(path)
        if symbols is None:
            return []
        uses = Counter(IDENTIFIER.findall("\n".join(line for line in lines if not _is_import(line))))
        attribute_uses = Counter(_attribute_uses(lines))
        found: dict[tuple[str, str], tuple[int, Definition]] = {}
        for imported in symbols.imports:
            if imported.name is not None:
                # `from module import name`: the name itself, or a submodule imported by name (whose uses are
                # `name.attribute`).
                definition = self._definition(imported.module, imported.name)
                if definition is not None and uses[imported.alias]:
                    found[(definition.path, definition.name)] = (uses[imported.alias], definition)
                    continue
                target = f"{imported.module}.{imported.name}"
            else:
                target = imported.module
            for (alias, attribute), count in attribute_uses.items():
                if alias == imported.alias:
                    definition = self._definition(target, attribute)
                    if definition is not None:
                        found[(definition.path, definition.name)] = (count, definition)
        ranked = sorted(found.values(), key=lambda pair: (-pair[0], pair[1].path, pair[1].line))
        return [definition for _, definition in ranked if definition.path != path]

    def _definition(self, module: str, name: str) -> Definition | None:
        # `ingle.core.store` for `core/store.py`: a package mapped to another folder name is found by its tail,
        # of two names at least (a lone `json` must not find some `tools/json.py`).
        pieces = module.split(".")
        tails = [".".join(pieces[start:]) for start in range(max(1, len(pieces) - 1))]
        path = next((self.modules[tail] for tail in tails if tail in self.modules), None)
        symbols = self.files.get(path) if path else None
        if symbols is None:
            return None
        return next((definition for definition in symbols.definitions if definition.name == name), None)


def _cost(symbols: FileSymbols) -> int:
    """What a file's definitions and imports take of max_symbol_bytes."""
    return NAME_BYTES * (len(symbols.definitions) + len(symbols.imports)) + sum(
        len(definition.text) for definition in symbols.definitions
    )


def _within(symbols: FileSymbols, room: int) -> FileSymbols:
    """As much of a file's symbols as `room` bytes hold: its imports first (what its own context is found by),
    then its definitions in file order."""
    if _cost(symbols) <= room:
        return symbols
    imports = symbols.imports[: max(0, room // NAME_BYTES)]
    room -= NAME_BYTES * len(imports)
    definitions: list[Definition] = []
    for definition in symbols.definitions:
        room -= NAME_BYTES + len(definition.text)
        if room < 0:
            break
        definitions.append(definition)
    return FileSymbols(tuple(definitions), imports)


def _is_import(line: str) -> bool:
    stripped = line.lstrip()
    return stripped.startswith(("import ", "from "))


def _attribute_uses(lines: Sequence[str]) -> list[tuple[str, str]]:
    """`alias.attribute` pairs used in the text (outside import lines)."""
    found: list[tuple[str, str]] = []
    for line in lines:
        if not _is_import(line):
            found += [(alias, attribute) for alias, attribute in _DOTTED.findall(line)]
    return found


def file_context(
    index: RepositoryIndex, path: str, lines: Sequence[str], token_budget: int, imports: bool
) -> list[ContextChunk]:
    """A document's repository context: definitions it uses from other files, then its own imports.

    The imports are given even where the window at the cursor holds them too:
    leaving them out near the top of the file would change the prompt head.
    """
    chunks = repository_chunks(index.definitions_used_by(path, lines), token_budget) if token_budget else []
    statements = import_lines(list(lines)) if imports else []
    if statements:
        chunks.append(ContextChunk(text="\n".join(statements) + "\n", filename=path))
    return chunks


def repository_chunks(definitions: list[Definition], token_budget: int) -> list[ContextChunk]:
    """The definitions that fit in the budget (most used first), as one chunk per file in a stable order.

    Files are ordered by path and definitions by line, so the same set of
    definitions always makes the same prompt text.
    """
    budget = token_budget * CHARS_PER_TOKEN
    chosen: list[Definition] = []
    for definition in definitions:
        cost = len(definition.text) + len(definition.path) + 2
        if cost <= budget:
            chosen.append(definition)
            budget -= cost
    by_file: dict[str, list[Definition]] = {}
    for definition in sorted(chosen, key=lambda item: (item.path, item.line)):
        by_file.setdefault(definition.path, []).append(definition)
    return [
        ContextChunk(text="\n\n".join(item.text for item in items) + "\n", filename=path)
        for path, items in by_file.items()
    ]
