"""The workspace's source files as an index of definitions, and the repository context of a document.

The index is filled by one bounded scan of the workspace folders when the
editor connects (and again when they change), and kept fresh from the
documents the editor edits and saves and from its file watcher. All folders
share its bounds. For a document it answers with what the model cannot see
in the window around the cursor: the definitions, in other files of the
workspace, of the names the document uses, most used first, cut to a budget
of tokens. The answer depends on the document alone, not on the cursor, so
it stays the same prompt head while the user moves around in the file and
the engine's prompt cache keeps applying.

Python files are read with Python's parser (symbols.py) and a Python
document's imports are resolved to the files they name. Files in the
languages tags.py has a grammar for are read with tree-sitter; their imports
name packages, crates and header paths that would each need a resolver of
their own, so a name such a document uses is looked up among the
definitions of the other files of its language instead.
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
from .tags import (
    LANGUAGE_OF_SUFFIX,
    TooSlowToParse,
    grammar_for,
    import_line_numbers,
    import_statement_lines,
    language_family,
    language_of,
    read_tags,
)
from .workspace_files import read_source, source_files

log = logging.getLogger("ingle.lsp")

# Bounds on the scan: a workspace holding a virtual environment or a huge monorepo must not stall the editor.
MAX_FILES = 5000
# Memory a definition or an import name takes beyond its text (measured: 1.36 million short assignments, 311 MB).
NAME_BYTES = 250
# The definitions and imports of all files together: twice what 5,000 files of a site-packages take (29,000
# definitions, 48,000 imports: 22 MB measured). A request only ever takes a few hundred tokens of them, but which
# ones depends on the file, so every file's are held; only generated code comes near this.
MAX_SYMBOL_BYTES = 48_000_000
# Memory a definition of a file read with tree-sitter takes beyond NAME_BYTES, in `definers` (measured on 200,000
# definitions: 290 bytes each where every name is defined once, 33 where each is defined in 200 files).
LOOKUP_BYTES = 300
# A name defined in more files than this is a common word (`get`, `new`, `init`, `String`, `main`) that names a
# different thing in each: which one a document means its name cannot say, and all of them would take the budget
# from the names that can. Up to this many is one thing declared in a few places: a C header and its source, a
# TypeScript declaration file beside its code, a Go type and its methods in another file.
MAX_DEFINING_FILES = 3
# One-letter names are locals (loop counters, parameters), whatever some file defines at its top.
MIN_LOOKUP_CHARS = 2
# Names of the files the scan reads: Python's, and those of a language whose grammar is installed (see `indexes`).
SUFFIXES = (".py", *LANGUAGE_OF_SUFFIX)
# `alias.attribute`: a use of something a module (or a class) imported under `alias` defines.
_DOTTED = re.compile(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
# The same in the other languages, and Rust's and C++'s `module::name`.
_QUALIFIED = re.compile(r"\b([A-Za-z_]\w*)\s*(?:\.|::)\s*([A-Za-z_]\w*)")


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

    definers: dict[tuple[str, str], dict[str, Definition]] = field(default_factory=dict)
    """(Language family, name) to the files read with tree-sitter that define it, and its definition in each."""

    max_symbol_bytes: int = MAX_SYMBOL_BYTES
    """Memory the files' definitions and imports may take together, as `NAME_BYTES` per name plus its text (and
    `LOOKUP_BYTES` more per definition of a file read with tree-sitter)."""

    _costs: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    """Each file's share of max_symbol_bytes."""
    _symbol_bytes: int = field(default=0, init=False, repr=False)
    """The sum of _costs."""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    """The scan's thread and the event loop both update files (and the event loop reads `definers`)."""
    _reported: set[str] = field(default_factory=set, init=False, repr=False)
    """Files (and the "full" notice, as "") already said in the log to be left out, so each is said once."""

    def indexes(self, path: str) -> bool:
        """Whether files of this name are indexed: Python's, and those whose language's grammar is installed."""
        if path.endswith(".py"):
            return True
        language = language_of(path)
        return language is not None and grammar_for(language) is not None

    def update(self, path: str, source: str) -> None:
        """Index a file's text again; a file that does not parse keeps its last good definitions."""
        if not self.indexes(path):
            return
        if path not in self.files and len(self.files) >= MAX_FILES:
            return
        self.snippets.update(path, source.split("\n"))
        language = language_of(path)
        if language is not None:
            self._update_tagged(path, source, language)
            return
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
        with self._lock:
            self.files[path] = self._within_bounds(path, symbols, NAME_BYTES)
        # `src/pkg/mod.py` is imported as `pkg.mod`: shorter suffixes of the dotted name point at the file too,
        # unless another file already claimed them; the file's own full name always does.
        pieces = dotted.split(".")
        for start in range(len(pieces)):
            self.modules.setdefault(".".join(pieces[start:]), path)
        self.modules[dotted] = path

    def _update_tagged(self, path: str, source: str, language: str) -> None:
        """Index a file read with tree-sitter, its definitions by name too."""
        try:
            tagged = read_tags(path, source, language)
        except TooSlowToParse:
            self._report(path, f"not indexing {path}: it takes too long to parse")
            return
        self._reported.discard(path)
        if tagged is None or (not tagged.complete and path in self.files):
            return  # being edited: its last version without errors says more
        family = language_family(language)
        with self._lock:
            self._forget_names(path)
            kept = self._within_bounds(path, tagged.symbols, NAME_BYTES + LOOKUP_BYTES)
            self.files[path] = kept
            for definition in kept.definitions:
                self.definers.setdefault((family, definition.name), {})[path] = definition

    def _within_bounds(self, path: str, symbols: FileSymbols, name_bytes: int) -> FileSymbols:
        """As much of a file's symbols as max_symbol_bytes still holds, the file's share of it taken (with the lock
        held)."""
        held = self._costs.get(path, 0)
        kept = _within(symbols, self.max_symbol_bytes - self._symbol_bytes + held, name_bytes)
        self._costs[path] = _cost(kept, name_bytes)
        self._symbol_bytes += self._costs[path] - held
        if kept is not symbols:
            self._report("", f"the workspace index is full: {path} and later files keep only some of their names")
        return kept

    def _forget_names(self, path: str) -> None:
        """Take a file's definitions out of `definers` (with the lock held)."""
        symbols = self.files.get(path)
        language = language_of(path)
        if symbols is None or language is None:
            return
        family = language_family(language)
        for definition in symbols.definitions:
            holders = self.definers.get((family, definition.name))
            if holders is not None:
                holders.pop(path, None)
                if not holders:
                    del self.definers[(family, definition.name)]

    def _report(self, key: str, message: str) -> None:
        """Say once in the log what was left out, not on every keystroke in that file."""
        if key not in self._reported:
            self._reported.add(key)
            log.warning("%s", message)

    def remove(self, path: str) -> None:
        """Forget a deleted file."""
        with self._lock:
            self._forget_names(path)
            self.files.pop(path, None)
            self._symbol_bytes -= self._costs.pop(path, 0)
        self.snippets.remove(path)
        # A copy: the workspace scan may be adding modules from its thread meanwhile.
        for name in [name for name, owner in list(self.modules.items()) if owner == path]:
            del self.modules[name]

    def scan(
        self, root: Path, stop: threading.Event | None = None, name: Callable[[Path], str | None] | None = None
    ) -> int:
        """Index the source files under `root` (bounded); returns how many were indexed. Each goes by `name(path)`
        (by its path under `root` without it). Stops early once `stop` is set, or the index holds MAX_FILES files
        (of this or other roots). Blocking: run in a thread."""
        count = 0
        for full in source_files(root, SUFFIXES, stop):
            if count >= MAX_FILES or len(self.files) >= MAX_FILES or (stop and stop.is_set()):
                break
            path = name(full) if name else str(full.relative_to(root))
            if path is None or not self.indexes(path):
                continue
            source = read_source(full)
            if source is not None:
                self.update(path, source)
                count += 1
        return count

    def definitions_used_by(self, path: str, lines: Sequence[str]) -> list[Definition]:
        """Definitions elsewhere in the workspace of the names a document uses, most used first: those it imports
        in Python, those of its language's other files elsewhere."""
        language = language_of(path)
        if language is not None:
            return self._definitions_named_in(path, lines, language)
        return self._imported_definitions(path, lines)

    def _definitions_named_in(self, path: str, lines: Sequence[str], language: str) -> list[Definition]:
        """Definitions in other files of the document's language (family) of the names used in it outside its
        import statements, those it imports first, then most used first; not of names it defines itself, nor of
        names many files define (MAX_DEFINING_FILES)."""
        statements = set(import_line_numbers(language, lines))
        body = "\n".join(line for number, line in enumerate(lines) if number not in statements)
        uses = Counter(IDENTIFIER.findall(body))
        # What the import statements name (`import { area } from`, `use shapes::Point`, `import shapes.Circle`),
        # and what is used through a name they bring in (Go's `shapes.Area`, `geometry::area`): a name defined
        # once in the workspace and only used here as a local variable (`text`, `format`) comes after those.
        imported = set(IDENTIFIER.findall("\n".join(lines[number] for number in sorted(statements))))
        imported |= {name for qualifier, name in _QUALIFIED.findall(body) if qualifier in imported}
        symbols = self.files.get(path)
        own = {definition.name for definition in symbols.definitions} if symbols else set()
        family = language_family(language)
        found: list[tuple[bool, int, bool, Definition]] = []
        with self._lock:
            for name, count in uses.items():
                if name in own or len(name) < MIN_LOOKUP_CHARS:
                    continue
                holders = self.definers.get((family, name))
                others = [definition for where, definition in holders.items() if where != path] if holders else []
                if len(others) > MAX_DEFINING_FILES:
                    continue
                # A TypeScript file's name defined in a TypeScript file and a JavaScript one: most likely the first.
                found += [(name not in imported, count, language_of(item.path) != language, item) for item in others]
        found.sort(key=lambda item: (item[0], -item[1], item[2], item[3].path, item[3].line))
        return [definition for *_, definition in found]

    def _imported_definitions(self, path: str, lines: Sequence[str]) -> list[Definition]:
        """Definitions elsewhere in the workspace of the names a Python document imports and uses."""
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


def _cost(symbols: FileSymbols, name_bytes: int) -> int:
    """What a file's definitions and imports take of max_symbol_bytes, at `name_bytes` a name beyond its text."""
    return name_bytes * (len(symbols.definitions) + len(symbols.imports)) + sum(
        len(definition.text) for definition in symbols.definitions
    )


def _within(symbols: FileSymbols, room: int, name_bytes: int) -> FileSymbols:
    """As much of a file's symbols as `room` bytes hold: its imports first (what its own context is found by),
    then its definitions in file order."""
    if _cost(symbols, name_bytes) <= room:
        return symbols
    imports = symbols.imports[: max(0, room // name_bytes)]
    room -= name_bytes * len(imports)
    definitions: list[Definition] = []
    for definition in symbols.definitions:
        room -= name_bytes + len(definition.text)
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
    language = language_of(path)
    if not imports:
        statements = []
    elif language is not None:
        statements = import_statement_lines(language, lines)
    else:
        statements = import_lines(list(lines))
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
