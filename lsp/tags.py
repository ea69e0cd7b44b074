"""What a source file in a language other than Python defines and imports, read with its tree-sitter grammar.

Each grammar package on PyPI ships `queries/tags.scm`, the query GitHub's code
navigation finds definitions with (`@definition.function` on a definition,
`@name` on its name). The index runs the same query, plus a few patterns of
its own for what a caller needs and tags.scm leaves out (TypeScript's type
aliases and enums, constants, C's macros, Rust's impl blocks, Java's enums).
As symbols.py does for Python, a definition is kept as the text that shows
how to use it: a function's signature up to its body, a class's, struct's or
interface's header with its members' signatures (a Go method or a Rust impl
block goes with its type), a constant's declaration; each led by the first
line of its doc comment. Only top-level definitions (and those in namespaces
and include guards) count: members show in their type, locals nowhere.

tree-sitter parses any text, marking what it could not read. A file with
errors still yields what it defines, and whether it had errors: the index
keeps a file's last good definitions while it is being edited.

Grammars are loaded on first use, once per process; a grammar package that is
not installed leaves its language out of the index (said once in the log).
Nothing is downloaded: tree-sitter-language-pack's grammars would be, at run
time. The import statements a file starts with are read from its lines.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tree_sitter import Language, Node, Parser, Query, QueryCursor, Tree

from .symbols import MAX_DEFINITION_CHARS, MAX_FILE_NAMES, Definition, FileSymbols, clip_definition

log = logging.getLogger("ingle.lsp")

# A hand-written file of MAX_FILE_BYTES parses in a fifth of a second (measured on 2 cores); a megabyte of noise
# takes tree-sitter's error recovery two seconds. Past this the file is left out rather than hold up the editor.
PARSE_SECONDS = 1.0
# Definitions sit a few levels below the file at most: an include guard, `extern "C"`, two namespaces and a
# declarator are 7. Query matches starting deeper are locals, or a generated file's nesting, not worth the time.
MAX_START_DEPTH = 12
# Nodes between a definition and the statement the file (or a namespace) holds it in: `export const f = () => ...`
# is 2, a member of `export const api = {...}` 4. Deeper, it is a local of some callback (`describe(() => ...)`).
MAX_WRAPPERS = 4
# A member without a body (a field, an enum case, a signature) longer than this many lines is left out of its
# type's outline: a field holding a nested object literal is not how a caller uses the type.
MAX_MEMBER_LINES = 2
# Lines an import statement may continue over: an unterminated one must not take the rest of the file.
MAX_IMPORT_LINES = 100
# Comment lines looked at for a definition's summary.
MAX_COMMENT_LINES = 50
# Bytes handed to the parser per read.
_READ_CHUNK = 65536

# Kinds of tags.scm's `@definition.KIND` (and our own) by how their text is made.
_CALLABLE_KINDS = frozenset({"function", "method", "macro"})
_TYPE_KINDS = frozenset({"class", "interface", "type", "enum", "struct", "trait", "union", "implementation"})
# When a node matches several patterns (Rust's `fn` in an impl is a method and a function; JavaScript's
# `const f = () => 1` a function and a constant), the more specific kind wins.
_KIND_RANK = {"constant": 0, "function": 1, "method": 2}
# Nodes whose body holds top-level definitions: the file's own root, C's conditional blocks (include guards), and
# the bodies of namespaces, `extern "C"` blocks, Rust modules and TypeScript namespaces.
_CONDITIONAL_BLOCKS = frozenset({"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef"})
_NAMESPACE_BODIES = frozenset(
    {
        ("declaration_list", "namespace_definition"),
        ("declaration_list", "linkage_specification"),
        ("declaration_list", "mod_item"),
        ("statement_block", "internal_module"),
        ("statement_block", "module"),
    }
)
# JavaScript's object literal members: the statement around one is the whole object.
_OBJECT_MEMBERS = frozenset({"pair", "method_definition"})
_COMMENT_MARKERS = re.compile(r"^\s*(?:/\*+!?|\*+/?|//[/!]?)\s*|\s*\*+/\s*$")

# What tags.scm leaves out, per language: names callers use that are not functions or classes.
_JS_CONSTANTS = """
(program (lexical_declaration (variable_declarator name: (identifier) @name) @definition.constant))
(program (variable_declaration (variable_declarator name: (identifier) @name) @definition.constant))
(export_statement
  declaration: (lexical_declaration (variable_declarator name: (identifier) @name) @definition.constant))
"""
_TS_TYPES = """
(type_alias_declaration name: (type_identifier) @name) @definition.type
(enum_declaration name: (identifier) @name) @definition.enum
"""
_GO_VALUES = """
(const_spec name: (identifier) @name) @definition.constant
(var_spec name: (identifier) @name) @definition.constant
"""
_RUST_ITEMS = """
(const_item name: (identifier) @name) @definition.constant
(static_item name: (identifier) @name) @definition.constant
(impl_item type: (type_identifier) @name) @definition.implementation
(impl_item type: (generic_type type: (type_identifier) @name)) @definition.implementation
"""
_JAVA_TYPES = """
(enum_declaration name: (identifier) @name) @definition.enum
(record_declaration name: (identifier) @name) @definition.class
"""
_C_MACROS = """
(preproc_def name: (identifier) @name value: (_)) @definition.constant
(preproc_function_def name: (identifier) @name) @definition.macro
"""


@dataclass(frozen=True)
class GrammarPackage:
    """Where a language's grammar and tags query come from."""

    module: str
    """The grammar package's import name, e.g. `tree_sitter_go`."""
    function: str = "language"
    """The package's function that returns the grammar."""
    tags_also_from: tuple[str, ...] = ()
    """Packages whose tags.scm applies too (TypeScript's holds only what it adds to JavaScript's)."""
    extra_tags: str = ""
    """Our own patterns, in tags.scm's terms."""


GRAMMARS: dict[str, GrammarPackage] = {
    "javascript": GrammarPackage("tree_sitter_javascript", extra_tags=_JS_CONSTANTS),
    "typescript": GrammarPackage(
        "tree_sitter_typescript", "language_typescript", ("tree_sitter_javascript",), _JS_CONSTANTS + _TS_TYPES
    ),
    "tsx": GrammarPackage(
        "tree_sitter_typescript", "language_tsx", ("tree_sitter_javascript",), _JS_CONSTANTS + _TS_TYPES
    ),
    "go": GrammarPackage("tree_sitter_go", extra_tags=_GO_VALUES),
    "rust": GrammarPackage("tree_sitter_rust", extra_tags=_RUST_ITEMS),
    "java": GrammarPackage("tree_sitter_java", extra_tags=_JAVA_TYPES),
    "c": GrammarPackage("tree_sitter_c", extra_tags=_C_MACROS),
    "cpp": GrammarPackage("tree_sitter_cpp", extra_tags=_C_MACROS),
}
"""The languages indexed, each where its grammar package is installed."""

LANGUAGE_OF_SUFFIX = {
    **dict.fromkeys((".js", ".jsx", ".mjs", ".cjs"), "javascript"),
    **dict.fromkeys((".ts", ".mts", ".cts"), "typescript"),
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    # `.h` as C, unless its text is C++'s (see `_CPP_HEADER`): both use the same name for their headers.
    **dict.fromkeys((".c", ".h"), "c"),
    **dict.fromkeys((".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx"), "cpp"),
}
# What only C++ writes: a class, namespace or template, an access label, a scoped name (`std::vector`). C's grammar
# reads such a header wrongly (a constructor's `: arch(arch) {}` as a function `arch`).
_CPP_HEADER = re.compile(
    r"^\s*(?:class|namespace|template)\b|^\s*(?:public|private|protected)\s*:|\w::\w", re.MULTILINE
)
# Languages whose files use each other's definitions: TypeScript imports JavaScript, C++ includes C headers.
_FAMILY = {"typescript": "javascript", "tsx": "javascript", "cpp": "c"}


class TooSlowToParse(Exception):
    """The file took longer than PARSE_SECONDS to parse (generated noise, or a megabyte of one expression)."""


@dataclass(frozen=True)
class Grammar:
    """A loaded grammar and its definitions query."""

    language: Language
    query: Query


@dataclass(frozen=True)
class TaggedFile:
    """What a file defines, and whether all of it parsed."""

    symbols: FileSymbols
    complete: bool
    """False when tree-sitter marked errors: a file being edited, whose last good definitions are better."""


def language_of(path: str) -> str | None:
    """The language indexed with a grammar that a file's name says it is in; None for Python and the rest."""
    dot = path.rfind(".")
    return LANGUAGE_OF_SUFFIX.get(path[dot:].lower()) if dot >= 0 else None


def language_family(language: str) -> str:
    """The languages whose files can use each other's definitions, by the name of one of them."""
    return _FAMILY.get(language, language)


def family_of(path: str) -> str | None:
    """The language family of a file the index reads, by its name: "python", or a family of the languages here
    (`language_family`); None for the rest."""
    if path.endswith(".py"):
        return "python"
    language = language_of(path)
    return language_family(language) if language is not None else None


def grammar_for(language: str) -> Grammar | None:
    """The language's grammar, loaded on first use; None if its package is not installed or does not load."""
    return load_grammar(GRAMMARS[language])


@functools.cache
def load_grammar(package: GrammarPackage) -> Grammar | None:
    """A grammar package's grammar and tags query, once per process (compiling TypeScript's takes 50 ms)."""
    try:
        module = importlib.import_module(package.module)
        language = Language(getattr(module, package.function)())
        sources = [module.TAGS_QUERY]
        for other in package.tags_also_from:
            try:
                sources.append(importlib.import_module(other).TAGS_QUERY)
            except ImportError:
                log.info("reading %s without the tags of %s: it is not installed", package.module, other)
        query_source = "\n".join([*sources, package.extra_tags])
        query = Query(language, query_source)
    except ImportError:
        log.info("not indexing the files of %s: it is not installed", package.module)
        return None
    except (AttributeError, ValueError, OSError) as error:  # an incompatible grammar version, a query it rejects
        log.warning("not indexing the files of %s: %s", package.module, error)
        return None
    # Only definitions are read: the patterns for references (calls, `new`, type uses) would match all over a file.
    encoded = query_source.encode()
    for index in range(query.pattern_count):
        if b"@definition." not in encoded[query.start_byte_for_pattern(index) : query.end_byte_for_pattern(index)]:
            query.disable_pattern(index)
    return Grammar(language, query)


def read_tags(path: str, source: str, language: str) -> TaggedFile | None:
    """The file's top-level definitions (MAX_FILE_NAMES at most); None if the language's grammar is not installed.

    Raises TooSlowToParse past PARSE_SECONDS.
    """
    if language == "c" and path.endswith(".h") and _CPP_HEADER.search(source) and grammar_for("cpp") is not None:
        language = "cpp"
    grammar = grammar_for(language)
    if grammar is None:
        return None
    # Rows as LSP counts lines (tree-sitter breaks only at "\n"); the text the editor sends may hold "\r\n".
    data = source.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8", errors="replace")
    tree = _parse(grammar.language, data)
    cursor = QueryCursor(grammar.query)
    cursor.set_max_start_depth(MAX_START_DEPTH)
    # By node: a node several patterns match keeps the most specific kind.
    tagged: dict[int, tuple[str, Node, Node]] = {}
    for _, captures in cursor.matches(tree.root_node):
        kind = next((name.removeprefix("definition.") for name in captures if name.startswith("definition.")), None)
        if kind is None or not captures.get("name"):
            continue
        node = captures[f"definition.{kind}"][0]
        held = tagged.get(node.id)
        if held is None or _KIND_RANK.get(kind, 0) > _KIND_RANK.get(held[0], 0):
            tagged[node.id] = (kind, node, captures["name"][0])
    holders = {node_id for node_id, (kind, _, _) in tagged.items() if kind != "module"}
    # Per name, in file order: the line and the texts of its definitions (a Go type and its methods, C's
    # prototype and its body, TypeScript's overloads make one definition).
    found: dict[str, tuple[int, list[str]]] = {}
    for kind, node, name_node in sorted(tagged.values(), key=lambda item: item[1].start_byte):
        statement = _statement(node, holders)
        if statement is None or kind == "module":
            continue
        name = _text(data, name_node.start_byte, name_node.end_byte)
        owner = _owner(kind, node, name, data)
        key = owner or name
        if key not in found:
            if len(found) >= MAX_FILE_NAMES:
                continue
            found[key] = (name_node.start_point.row, [])
        texts = found[key][1]
        if sum(len(text) for text in texts) < MAX_DEFINITION_CHARS:
            text = _definition_text(kind, node, statement, data)
            if text not in texts:
                texts.append(text)
    definitions = tuple(
        Definition(name, path, line, clip_definition("\n".join(texts))) for name, (line, texts) in found.items()
    )
    return TaggedFile(FileSymbols(definitions, ()), not tree.root_node.has_error)


def _parse(language: Language, data: bytes) -> Tree:
    """The syntax tree of `data`, given up on (TooSlowToParse) past PARSE_SECONDS."""
    deadline = time.monotonic() + PARSE_SECONDS
    parser = Parser(language)
    try:
        # Only a parse that reads through a callback takes a progress callback to stop it. Neither callback may
        # raise: py-tree-sitter reads a failed call's result without checking it.
        timed = parser.parse(
            lambda byte, _point: data[byte : byte + _READ_CHUNK],
            progress_callback=lambda _offset, _has_error: time.monotonic() > deadline,
        )
    except ValueError as error:  # what py-tree-sitter raises when the progress callback stops the parse
        raise TooSlowToParse from error
    # That tree does not hold its text, and a query's text predicates (`#not-eq? @name "constructor"`) crash the
    # process on it (py-tree-sitter 0.26.1). Parsed again from the bytes with that tree as the old one, nothing has
    # changed and every node is reused: a tenth of the first parse's time.
    return parser.parse(data, timed)


def _is_namespace_body(node: Node) -> bool:
    """Whether definitions directly in `node` are top-level ones."""
    parent = node.parent
    return parent is None or node.type in _CONDITIONAL_BLOCKS or (node.type, parent.type) in _NAMESPACE_BODIES


def _statement(node: Node, holders: set[int]) -> Node | None:
    """The statement that holds a definition directly in the file (or a namespace); None for a member of another
    definition (shown in that one's text), a function passed to a call, or a local (MAX_WRAPPERS deep or more)."""
    current = node
    for _ in range(MAX_WRAPPERS + 1):
        parent = current.parent
        if parent is None:
            return None
        if _is_namespace_body(parent):
            return current
        # A member, or a callback (`app.get("/", function handler() {...})`): no name other files call it by.
        if parent.id in holders or parent.type == "arguments":
            return None
        current = parent
    return None


def _owner(kind: str, node: Node, name: str, data: bytes) -> str | None:
    """The type a Go method or a Rust impl block belongs to: their text goes with that type's."""
    if kind == "implementation":
        return name
    receiver = node.child_by_field_name("receiver") if kind == "method" else None
    if receiver is None:
        return None
    # `(s *Server)`, `(s Server[T])`: the receiver's first type name, a few nodes in.
    pending = [receiver]
    for _ in range(32):
        if not pending:
            break
        current = pending.pop(0)
        if current.type == "type_identifier":
            return _text(data, current.start_byte, current.end_byte)
        pending += current.named_children
    return None


def _definition_text(kind: str, node: Node, statement: Node, data: bytes) -> str:
    """How a definition reads to a caller, led by its doc comment's first line."""
    source, keyword = _source(node, statement)
    body = _body(node, statement)
    start = source.start_byte
    if kind in _CALLABLE_KINDS and body is not None:
        text = _signature(data, start, body)
    elif kind in _TYPE_KINDS and body is not None and body.start_point.row < body.end_point.row:
        text = _type_outline(data, start, body)
    else:
        text = _text(data, start, source.end_byte)
    indent = "" if keyword else _indent(data, start)
    text = indent + keyword + text.rstrip()
    summary = _summary(source, data, indent)
    return clip_definition(text if summary is None else f"{summary}\n{text}")


def _source(node: Node, statement: Node) -> tuple[Node, str]:
    """The node a definition's text is cut from, and the keyword to put before it: its whole statement, unless that
    declares several names (`const (A = 1; B = 2)`, `let a = 1, b = 2`: its own part, after the keyword) or is an
    object literal (`export default { render() {...} }`: its own member)."""
    if node.type in _OBJECT_MEMBERS:
        return node, ""
    parent = node.parent
    if parent is not None and node != statement:
        grouped = any(
            other is not None and other.type == node.type
            for other in (node.prev_named_sibling, node.next_named_sibling)
        )
        keyword = parent.child(0)
        if grouped and keyword is not None and not keyword.is_named and keyword.text:
            return node, keyword.text.decode("utf-8", errors="replace") + " "
    return statement, ""


def _body(node: Node, statement: Node) -> Node | None:
    """The body of a definition, of the function it is bound to (`const f = () => {...}`), or of the statement
    around its declarator (C's `int f(void) {...}`); None for a declaration without one."""
    current = node
    while True:
        body = current.child_by_field_name("body")
        if body is not None:
            return body
        value = current.child_by_field_name("value") or current.child_by_field_name("right")
        body = value.child_by_field_name("body") if value is not None else None
        if body is not None:
            return body
        parent = current.parent
        if current == statement or parent is None:
            return None
        current = parent


def _signature(data: bytes, start: int, body: Node) -> str:
    """A function's text up to its body, which `{ ... }` (or `...` after an arrow) stands for."""
    header = _text(data, start, body.start_byte).rstrip()
    return header + (" { ... }" if data[body.start_byte : body.start_byte + 1] == b"{" else " ...")


def _type_outline(data: bytes, start: int, body: Node) -> str:
    """A type's header, its members' signatures (fields, cases, methods without their bodies) and its end."""
    opening = body.start_byte + 1 if data[body.start_byte : body.start_byte + 1] == b"{" else body.start_byte
    parts = [_text(data, start, opening).rstrip()]
    size = len(parts[0])
    shown_row = body.start_point.row
    for member in _named_children(body):
        if size > MAX_DEFINITION_CHARS:
            break
        # A member on a line already shown: the header's, or a previous member's (`int x; int y;`).
        if member.start_point.row <= shown_row or _is_comment(member) or _is_attribute(member):
            continue
        text = _member_text(member, data)
        if text is not None:
            parts.append(text)
            size += len(text) + 1
            shown_row = member.end_point.row
    line_start = data.rfind(b"\n", 0, body.end_byte) + 1
    parts.append(_text(data, line_start, body.end_byte))
    return "\n".join(parts)


def _named_children(node: Node) -> Iterator[Node]:
    """A node's named children one by one (`named_child(i)` walks from the first each time; a generated type can
    have a hundred thousand members)."""
    cursor = node.walk()
    if not cursor.goto_first_child():
        return
    while True:
        child = cursor.node
        if child is not None and child.is_named:
            yield child
        if not cursor.goto_next_sibling():
            return


def _member_text(member: Node, data: bytes) -> str | None:
    """A member as a type's outline shows it: a method's signature, or a short member's lines; None for a long
    member without a body."""
    summary = _summary(member, data, _indent(data, member.start_byte))
    body = _body(member, member)
    if body is not None:
        text = _indent(data, member.start_byte) + _signature(data, member.start_byte, body)
    elif member.end_point.row - member.start_point.row < MAX_MEMBER_LINES:
        # To the end of its last line: the `;` or `,` after it, which the node leaves out.
        line_end = data.find(b"\n", member.end_byte)
        text = _indent(data, member.start_byte) + _text(
            data, member.start_byte, len(data) if line_end < 0 else line_end
        )
    else:
        return None
    return text.rstrip() if summary is None else f"{summary}\n{text.rstrip()}"


def _summary(node: Node, data: bytes, indent: str) -> str | None:
    """The first line of the doc comment right above a definition (past its attributes), as a `//` comment."""
    above = node.prev_named_sibling
    first_row = node.start_point.row
    while above is not None and _is_attribute(above) and _last_row(above) == first_row - 1:
        first_row = above.start_point.row
        above = above.prev_named_sibling
    if above is None or not _is_comment(above) or _last_row(above) != first_row - 1:
        return None
    # A block of line comments is one node per line: go back to its first.
    first = above
    for _ in range(MAX_COMMENT_LINES):
        previous = first.prev_named_sibling
        if previous is None or not _is_comment(previous) or _last_row(previous) != first.start_point.row - 1:
            break
        first = previous
    for line in _text(data, first.start_byte, above.end_byte).split("\n")[:MAX_COMMENT_LINES]:
        stripped = _COMMENT_MARKERS.sub("", line).strip()
        if stripped:
            return f"{indent}// {stripped[: MAX_DEFINITION_CHARS // 4]}"
    return None


def _last_row(node: Node) -> int:
    """The last line a node has text on (Rust's line comments end at the start of the next line)."""
    end = node.end_point
    return end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row


def _is_comment(node: Node) -> bool:
    return "comment" in node.type


def _is_attribute(node: Node) -> bool:
    """Rust's `#[derive(...)]`, TypeScript's decorators, Java's annotations: left out, as Python's decorators."""
    return node.type in ("attribute_item", "inner_attribute_item", "decorator") or node.type.endswith("annotation")


def _indent(data: bytes, start: int) -> str:
    """The whitespace before `start` on its line ("" where code comes first)."""
    line_start = data.rfind(b"\n", 0, start) + 1
    prefix = data[line_start:start]
    return prefix.decode("utf-8", errors="replace") if not prefix.strip() else ""


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("utf-8", errors="replace")


# --- import statements, read from lines --------------------------------------------------------

# The first line of an import statement, per family (where the statement ends: `_import_ended`).
_IMPORT_STARTS: dict[str, re.Pattern[str]] = {
    # `import x from "y"` (and `import {` over several lines), `export ... from "y"`, `const x = require("y")`.
    "javascript": re.compile(r"^(import[\s{*'\"]|export\s.*\bfrom\s*['\"]|(const|let|var)\s.*=\s*require\()"),
    "go": re.compile(r"^import[\s(]"),
    # `use a::{b, c};` over several lines, `extern crate x;`, and `mod x;`, which brings a file in.
    "rust": re.compile(r"^(pub(\([^)]*\))?\s+)?(use\s|extern\s+crate\s|mod\s+\w+\s*;)"),
    "java": re.compile(r"^import\s"),
    "c": re.compile(r"^#\s*include\b"),
}


def _import_ended(family: str, first: str, line: str) -> bool:
    """Whether `line` ends the import statement that began with `first`."""
    if family == "javascript":  # at the module's name: `} from "./shapes";`
        return not first.startswith("import") or bool(re.search(r"['\";]", line))
    if family == "go":  # `import (` ... `)`
        return not re.match(r"import\s*\(", first) or line.rstrip().endswith(")")
    if family in ("rust", "java"):
        return ";" in line
    return True


def import_line_numbers(language: str, lines: Sequence[str]) -> list[int]:
    """The numbers of the lines the file's top-level import statements take (continuation lines included)."""
    family = language_family(language)
    starts = _IMPORT_STARTS.get(family)
    if starts is None:
        return []
    numbers: list[int] = []
    first: str | None = None  # the first line of the statement under way
    taken = 0
    for number, line in enumerate(lines):
        if first is None and starts.match(line):
            first, taken = line, 0
        elif first is None:
            continue
        numbers.append(number)
        taken += 1
        if _import_ended(family, first, line) or taken >= MAX_IMPORT_LINES:
            first = None
    return numbers


def import_statement_lines(language: str, lines: Sequence[str]) -> list[str]:
    """The file's top-level import statements, as lines."""
    return [lines[number] for number in import_line_numbers(language, lines)]
