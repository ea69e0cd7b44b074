"""What a Python source file defines and imports, read with Python's own parser (`ast`).

`ast` is exact for Python and needs no grammar package; a file that does not
parse (it is being edited) keeps what its last good version defined. A
definition is kept as the text a model needs to call it: a function's
signature and the first line of its docstring, a class's header with its
methods' signatures, a module constant's assignment.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from .documents import split_lines

# Longest definition kept: a long constant (a table, a big literal) would eat the budget on its own.
MAX_DEFINITION_CHARS = 1200
# Definitions, and imports, kept of one file. The biggest modules of a site-packages define fewer (lsprotocol's
# types.py 772, llama_cpp.py 609); a file past this is generated (a table of 90,000 constants), and a completion
# takes a few hundred tokens of context, a dozen names, so its first thousand names are plenty.
MAX_FILE_NAMES = 1000
# Statements the import block is made of; a file's imports are the lines these cover.
_IMPORT_LINE = re.compile(r"^(from\s+\S+\s+import\b|import\s+\S)")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters per token of source code with the default model's tokenizer, for context budgets (measured: 3.3-3.8).
CHARS_PER_TOKEN = 3.5


# Slots: a workspace holds tens of thousands of these, and a per-instance dict would double their memory.
@dataclass(frozen=True, slots=True)
class Definition:
    """A top-level name a file defines, with the text that shows how to use it."""

    name: str
    path: str
    """The file, relative to the workspace root."""
    line: int
    """0-based line of the definition (its decorators excluded)."""
    text: str


@dataclass(frozen=True, slots=True)
class ImportedName:
    """A name bound by an import: `from module import name as alias` or `import module as alias`."""

    alias: str
    module: str
    name: str | None
    """The imported attribute; None when the module itself is bound."""


@dataclass(frozen=True, slots=True)
class FileSymbols:
    """The definitions and imports of one file."""

    definitions: tuple[Definition, ...]
    imports: tuple[ImportedName, ...]


def read_symbols(path: str, source: str, module: str) -> FileSymbols | None:
    """The file's top-level definitions and its imports (MAX_FILE_NAMES of each at most); None if it does not
    parse.

    `module` is the file's dotted module name, to resolve relative imports.
    Raises RecursionError or MemoryError where the source nests deeper than
    Python's parser goes (a generated sum of thousands of terms).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    lines = split_lines(source)
    definitions: list[Definition] = []
    imports: list[ImportedName] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            if len(imports) < MAX_FILE_NAMES:
                imports += _imported_names(node, module)
        elif len(definitions) < MAX_FILE_NAMES:
            definitions += _defined_names(node, path, lines)
    return FileSymbols(tuple(definitions[:MAX_FILE_NAMES]), tuple(imports[:MAX_FILE_NAMES]))


def _defined_names(node: ast.stmt, path: str, lines: list[str]) -> list[Definition]:
    """What a top-level statement defines: a function, a class, or the names an assignment binds."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return [Definition(node.name, path, node.lineno - 1, _function_text(node, lines, ""))]
    if isinstance(node, ast.ClassDef):
        return [Definition(node.name, path, node.lineno - 1, _class_text(node, lines))]
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        text = clip_definition("\n".join(lines[node.lineno - 1 : (node.end_lineno or node.lineno)]))
        return [
            Definition(target.id, path, node.lineno - 1, text) for target in targets if isinstance(target, ast.Name)
        ]
    return []


def _imported_names(node: ast.Import | ast.ImportFrom, module: str) -> list[ImportedName]:
    """The names an import statement binds; `module` resolves a relative one."""
    if isinstance(node, ast.Import):
        return [
            ImportedName(a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0], None)
            for a in node.names
        ]
    base = _absolute(module, node.module or "", node.level)
    return [ImportedName(a.asname or a.name, base, a.name) for a in node.names if a.name != "*"]


def import_lines(lines: list[str]) -> list[str]:
    """The file's import statements at the top level (continuation lines of a parenthesised import included)."""
    found: list[str] = []
    open_parenthesis = False
    for line in lines:
        if open_parenthesis:
            found.append(line)
            open_parenthesis = ")" not in line
        elif _IMPORT_LINE.match(line):
            found.append(line)
            open_parenthesis = "(" in line and ")" not in line
    return found


def _function_text(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], indent: str) -> str:
    """The signature lines (up to the body) and the docstring's first line."""
    first_body = node.body[0]
    header = [line for line in lines[node.lineno - 1 : first_body.lineno - 1] if line.strip()]
    if first_body.lineno == node.lineno:  # `def f(): return 1` on one line
        header = [lines[node.lineno - 1]]
    docstring = ast.get_docstring(node)
    body_indent = indent + "    "
    if docstring:
        header.append(f'{body_indent}"""{split_lines(docstring.strip())[0]}"""')
    elif first_body.lineno != node.lineno:
        header.append(f"{body_indent}...")
    return clip_definition("\n".join(header))


def _class_text(node: ast.ClassDef, lines: list[str]) -> str:
    """The class header, its docstring's first line, class attributes and method signatures."""
    body_start = node.body[0].lineno
    parts = [line for line in lines[node.lineno - 1 : body_start - 1] if line.strip()] or [lines[node.lineno - 1]]
    docstring = ast.get_docstring(node)
    if docstring:
        parts.append(f'    """{split_lines(docstring.strip())[0]}"""')
    for member in node.body:
        if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
            parts.append(_function_text(member, lines, "    "))
        elif isinstance(member, ast.AnnAssign | ast.Assign):
            parts.append("\n".join(lines[member.lineno - 1 : (member.end_lineno or member.lineno)]))
    return clip_definition("\n".join(parts))


def clip_definition(text: str) -> str:
    """A definition's text cut to MAX_DEFINITION_CHARS, at a line break where one comes before."""
    if len(text) <= MAX_DEFINITION_CHARS:
        return text
    return text[
        : text.rfind("\n", 0, MAX_DEFINITION_CHARS) if "\n" in text[:MAX_DEFINITION_CHARS] else MAX_DEFINITION_CHARS
    ]


def _absolute(module: str, name: str, level: int) -> str:
    """The absolute module a (possibly relative) `from` import names, seen from `module`."""
    if level == 0:
        return name
    package = module.split(".")[:-level] if module else []
    return ".".join([*package, name] if name else package)
