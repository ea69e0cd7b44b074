"""Repository context in languages other than Python: definitions read with tree-sitter's tags queries, found by
the names a document uses; import statements; bounds on generated files and missing grammars."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types

from ingle.lsp import tags
from ingle.lsp.prompt import Anchors, build_prompt
from ingle.lsp.repository import MAX_DEFINING_FILES, RepositoryIndex, file_context
from ingle.lsp.server import IngleLanguageServer
from ingle.lsp.symbols import MAX_DEFINITION_CHARS, MAX_FILE_NAMES
from ingle.lsp.tags import GRAMMARS, PARSE_SECONDS, GrammarPackage, import_statement_lines, read_tags

from .test_lsp_repository import scanned, server_on_workspace

SHAPES_TS = """import { hypot } from "./math";

/**
 * The area of a circle.
 * @param radius in metres
 */
export function area(radius: number): number {
  return Math.PI * radius ** 2;
}

export const perimeter = (radius: number): number => 2 * Math.PI * radius;

export const UNIT = "m";

export class Point {
  constructor(public x: number, public y: number) {}

  /** How far apart two points are. */
  distance(other: Point): number {
    return hypot(this.x - other.x, this.y - other.y);
  }
}

export interface Shape {
  area(): number;
  name: string;
}

app.get("/", function handleRoot(request: Request) {
  return request;
});

function internalHelper(): void {
  describe("x", () => {
    const nestedLocal = () => 1;
  });
}
"""

REPORT_TS = """import {
  area,
  perimeter,
  Point,
} from "./shapes";

export function describeCircle(radius: number): string {
  const total = area(radius) + area(radius * 2);
  const origin = new Point(0, 0);
  return `${total} ${origin.x}`;
}
"""


def ts_workspace(root: Path) -> RepositoryIndex:
    (root / "src").mkdir()
    (root / "src" / "shapes.ts").write_text(SHAPES_TS)
    (root / "src" / "report.ts").write_text(REPORT_TS)
    (root / "node_modules" / "lib").mkdir(parents=True)
    (root / "node_modules" / "lib" / "index.ts").write_text("export function area(): number { return 0; }\n")
    index = RepositoryIndex()
    assert index.scan(root) == 2, "node_modules is skipped"
    return index


def names(index: RepositoryIndex, path: str, source: str) -> list[str]:
    return [definition.name for definition in index.definitions_used_by(path, source.split("\n"))]


def test_a_typescript_file_gets_the_signatures_of_what_another_file_defines(tmp_path: Path) -> None:
    index = ts_workspace(tmp_path)
    used = index.definitions_used_by("src/report.ts", REPORT_TS.split("\n"))
    # area is used twice, Point once; perimeter is only imported (import lines are not uses); describeCircle is the
    # report's own.
    assert [definition.name for definition in used] == ["area", "Point"]
    assert all(definition.path == "src/shapes.ts" for definition in used)
    area, point = used
    assert area.text == "// The area of a circle.\nexport function area(radius: number): number { ... }"
    assert point.text == (
        "export class Point {\n"
        "  constructor(public x: number, public y: number) { ... }\n"
        "  // How far apart two points are.\n"
        "  distance(other: Point): number { ... }\n"
        "}"
    )
    defined = {definition.name: definition for definition in index.files["src/shapes.ts"].definitions}
    assert list(defined) == ["area", "perimeter", "UNIT", "Point", "Shape", "internalHelper"], "no locals, no members"
    assert defined["perimeter"].text == "export const perimeter = (radius: number): number => ..."
    assert defined["UNIT"].text == 'export const UNIT = "m";'
    assert defined["Shape"].text == "export interface Shape {\n  area(): number;\n  name: string;\n}"
    assert defined["area"].line == 6


def test_javascript_object_members_and_tsx_components_are_definitions_too(tmp_path: Path) -> None:
    (tmp_path / "api.js").write_text(
        "module.exports = {\n  // Fetch a user by id.\n  fetchUser(id) {\n    return db.get(id);\n  },\n"
        "  saveUser: (user) => db.put(user),\n};\n"
    )
    (tmp_path / "Badge.tsx").write_text(
        "export function Badge({ label }: { label: string }) {\n  return <span>{label}</span>;\n}\n"
    )
    document = "const user = fetchUser(1);\nsaveUser(user);\nconst view = <Badge label={user.name} />;\n"
    index = RepositoryIndex()
    index.scan(tmp_path)
    used = {
        definition.name: definition.text for definition in index.definitions_used_by("app.tsx", document.split("\n"))
    }
    assert used == {
        "Badge": "export function Badge({ label }: { label: string }) { ... }",
        "fetchUser": "  // Fetch a user by id.\n  fetchUser(id) { ... }",
        "saveUser": "  saveUser: (user) => ...",
    }


def test_the_file_imports_are_given_per_language(tmp_path: Path) -> None:
    index = ts_workspace(tmp_path)
    context = file_context(index, "src/report.ts", REPORT_TS.split("\n"), token_budget=1000, imports=True)
    assert [chunk.filename for chunk in context] == ["src/shapes.ts", "src/report.ts"]
    assert context[1].text == 'import {\n  area,\n  perimeter,\n  Point,\n} from "./shapes";\n'
    go = 'package main\n\nimport "fmt"\nimport (\n\t"os"\n\n\t"example.com/shapes"\n)\n\nfunc main() {}\n'
    assert import_statement_lines("go", go.split("\n")) == [
        'import "fmt"',
        "import (",
        '\t"os"',
        "",
        '\t"example.com/shapes"',
        ")",
    ]
    rust = (
        "use std::fmt;\nuse crate::shapes::{\n    Point,\n    area,\n};\nmod shapes;\n\nfn main() {\n    use x::y;\n}\n"
    )
    assert import_statement_lines("rust", rust.split("\n")) == [
        "use std::fmt;",
        "use crate::shapes::{",
        "    Point,",
        "    area,",
        "};",
        "mod shapes;",
    ]
    java = "package shapes;\n\nimport java.util.List;\nimport static java.lang.Math.PI;\n\nclass A {}\n"
    assert import_statement_lines("java", java.split("\n")) == [
        "import java.util.List;",
        "import static java.lang.Math.PI;",
    ]
    c = '#include <stdio.h>\n#  include "shapes.h"\nint main(void) { return 0; }\n'
    assert import_statement_lines("c", c.split("\n")) == ["#include <stdio.h>", '#  include "shapes.h"']
    javascript = 'const fs = require("fs");\nimport x from "./x";\nexport { a } from "./a";\nconst y = 1;\n'
    assert import_statement_lines("javascript", javascript.split("\n")) == javascript.split("\n")[:3]


GEOMETRY_GO = """package shapes

import "math"

// Point is a place in the plane.
type Point struct {
\tX, Y float64
}

// Scale is how many units a metre is.
const Scale = 2.0

const (
\t// MinRadius is the smallest circle drawn.
\tMinRadius = 0.5
\tMaxRadius = 100.0
)

// Area is the area of a circle.
func Area(radius float64) float64 {
\treturn math.Pi * radius * radius
}
"""

DISTANCE_GO = """package shapes

import "math"

// Distance is how far apart two points are.
func (p *Point) Distance(q Point) float64 {
\treturn math.Hypot(p.X-q.X, p.Y-q.Y)
}
"""

MAIN_GO = """package main

import "example.com/shapes"

func main() {
\tp := shapes.Point{X: 1, Y: 2}
\tprintln(shapes.Area(2), p.Distance(shapes.Point{}), shapes.Scale)
}
"""


def test_go_a_type_comes_with_its_methods_from_each_file(tmp_path: Path) -> None:
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "geometry.go").write_text(GEOMETRY_GO)
    (tmp_path / "shapes" / "distance.go").write_text(DISTANCE_GO)
    (tmp_path / "main.go").write_text(MAIN_GO)
    (tmp_path / "vendor" / "x").mkdir(parents=True)
    (tmp_path / "vendor" / "x" / "x.go").write_text("package x\n\nfunc Area() {}\n")
    index = RepositoryIndex()
    assert index.scan(tmp_path) == 3, "vendor is skipped"
    used = index.definitions_used_by("main.go", MAIN_GO.split("\n"))
    # Point twice (the type, and its methods in distance.go); Area, Scale once. Distance is a method, not a name
    # of the package's: it comes with Point.
    assert [(definition.name, definition.path) for definition in used] == [
        ("Point", "shapes/distance.go"),
        ("Point", "shapes/geometry.go"),
        ("Scale", "shapes/geometry.go"),
        ("Area", "shapes/geometry.go"),
    ]
    texts = {(definition.name, definition.path): definition.text for definition in used}
    assert texts[("Point", "shapes/distance.go")] == (
        "// Distance is how far apart two points are.\nfunc (p *Point) Distance(q Point) float64 { ... }"
    )
    assert (
        texts[("Point", "shapes/geometry.go")]
        == "// Point is a place in the plane.\ntype Point struct {\n\tX, Y float64\n}"
    )
    defined = {definition.name: definition.text for definition in index.files["shapes/geometry.go"].definitions}
    assert defined["MinRadius"] == "// MinRadius is the smallest circle drawn.\nconst MinRadius = 0.5"
    assert defined["MaxRadius"] == "const MaxRadius = 100.0"
    assert texts[("Area", "shapes/geometry.go")] == (
        "// Area is the area of a circle.\nfunc Area(radius float64) float64 { ... }"
    )


SHAPES_RS = """use std::fmt;

/// A place in the plane.
#[derive(Debug, Clone)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    /// A point at the origin.
    pub fn origin() -> Self {
        Point { x: 0.0, y: 0.0 }
    }
}

pub trait Shape {
    fn area(&self) -> f64;
}

pub const SCALE: f64 = 2.0;

mod tests {
    fn helper_in_tests() {}
}
"""


def test_rust_a_struct_comes_with_its_impl_blocks_and_a_trait_with_its_signatures(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "shapes.rs").write_text(SHAPES_RS)
    main = (
        "use crate::shapes::{Point, Shape};\n\nfn main() {\n    let p = Point::origin();\n    let s: &dyn Shape;\n}\n"
    )
    (tmp_path / "src" / "main.rs").write_text(main)
    (tmp_path / "target" / "debug").mkdir(parents=True)
    (tmp_path / "target" / "debug" / "build.rs").write_text("pub struct Point;\n")
    index = RepositoryIndex()
    assert index.scan(tmp_path) == 2, "Cargo's target is skipped"
    used = {
        definition.name: definition.text for definition in index.definitions_used_by("src/main.rs", main.split("\n"))
    }
    assert used == {
        "Point": "// A place in the plane.\npub struct Point {\n    pub x: f64,\n    pub y: f64,\n}\n"
        "impl Point {\n    // A point at the origin.\n    pub fn origin() -> Self { ... }\n}",
        "Shape": "pub trait Shape {\n    fn area(&self) -> f64;\n}",
    }
    assert "helper_in_tests" in names(index, "src/other.rs", "helper_in_tests()"), "a module's items are top-level"


CIRCLE_JAVA = """package shapes;

import java.util.List;

/** A circle of some radius. */
public class Circle {
    private final double radius;

    public Circle(double radius) {
        this.radius = radius;
    }

    public double area() {
        return Math.PI * radius * radius;
    }
}
"""


def test_java_a_class_comes_with_its_fields_and_method_signatures(tmp_path: Path) -> None:
    (tmp_path / "Circle.java").write_text(CIRCLE_JAVA)
    (tmp_path / "Color.java").write_text("package shapes;\n\npublic enum Color {\n    RED,\n    GREEN,\n}\n")
    main = "class Main {\n    void run() {\n        Circle c = new Circle(2);\n        Color k = Color.RED;\n    }\n}\n"
    index = RepositoryIndex()
    index.scan(tmp_path)
    used = {definition.name: definition.text for definition in index.definitions_used_by("Main.java", main.split("\n"))}
    assert used == {
        "Circle": "// A circle of some radius.\npublic class Circle {\n    private final double radius;\n"
        "    public Circle(double radius) { ... }\n    public double area() { ... }\n}",
        "Color": "public enum Color {\n    RED,\n    GREEN,\n}",
    }


def test_c_a_header_and_its_source_both_count(tmp_path: Path) -> None:
    (tmp_path / "shapes.h").write_text(
        "#ifndef SHAPES_H\n#define SHAPES_H\n\n#define MAX_POINTS 64\n\n"
        "/* A place in the plane. */\nstruct point {\n    double x;\n    double y;\n};\n\n"
        "double area(double radius);\n\n#endif\n"
    )
    (tmp_path / "shapes.c").write_text(
        '#include "shapes.h"\n\ndouble area(double radius) {\n    return 3.14 * radius * radius;\n}\n'
    )
    main = '#include "shapes.h"\n\nint main(void) {\n    struct point p;\n    return area(MAX_POINTS);\n}\n'
    index = RepositoryIndex()
    index.scan(tmp_path)
    used = [
        (definition.name, definition.path, definition.text)
        for definition in index.definitions_used_by("main.cpp", main.split("\n"))
    ]
    assert used == [
        ("area", "shapes.c", "double area(double radius) { ... }"),
        ("MAX_POINTS", "shapes.h", "#define MAX_POINTS 64"),
        ("point", "shapes.h", "// A place in the plane.\nstruct point {\n    double x;\n    double y;\n}"),
        ("area", "shapes.h", "double area(double radius);"),
    ], "C++ uses C's definitions (each used once: by file, then line); SHAPES_H, an include guard, is none"


def test_a_cpp_header_named_h_is_read_as_cpp() -> None:
    header = (
        "#pragma once\n\nclass Graph : public Base {\npublic:\n"
        "    Graph(const Params & params, const Arch arch) : params(params), arch(arch) {}\n"
        "    void build(int layer);\n\n    const Arch arch;\n};\n"
    )
    tagged = read_tags("graph.h", header, "c")
    assert tagged is not None and tagged.complete
    assert [(definition.name, definition.text) for definition in tagged.symbols.definitions] == [
        (
            "Graph",
            "class Graph : public Base {\npublic:\n    Graph(const Params & params, const Arch arch) : params(params), "
            "arch(arch) { ... }\n    void build(int layer);\n    const Arch arch;\n}",
        )
    ], "C's grammar would read the constructor's `arch(arch) {}` as a function"


def test_names_the_imports_bring_in_come_before_names_only_used(tmp_path: Path) -> None:
    (tmp_path / "shapes.ts").write_text(SHAPES_TS)
    (tmp_path / "strings.js").write_text("export function text(value) { return String(value); }\n")
    (tmp_path / "geometry.rs").write_text("pub fn circumference(radius: f64) -> f64 { radius }\n")
    (tmp_path / "format.rs").write_text("pub fn text(value: f64) -> String { value.to_string() }\n")
    document = 'import { area } from "./shapes";\n\nlet text = "";\ntext += text + text + String(area(2));\n'
    index = RepositoryIndex()
    index.scan(tmp_path)
    # text is used four times, but as the document's own variable; area, once, is what it imports.
    assert names(index, "report.ts", document) == ["area", "text"]
    # Used through a module the imports name (Go's `shapes.Area`, Rust's `geometry::circumference`).
    rust = "use crate::geometry;\n\nfn main() {\n    let text = 1.0;\n    geometry::circumference(text + text);\n}\n"
    assert names(index, "main.rs", rust) == ["circumference", "text"]


def test_names_many_files_define_are_left_out_and_the_same_language_comes_first(tmp_path: Path) -> None:
    for number in range(MAX_DEFINING_FILES + 1):
        (tmp_path / f"store_{number}.ts").write_text(
            f"export function get(key: string): number {{ return {number}; }}\n"
        )
    for number in range(MAX_DEFINING_FILES):
        (tmp_path / f"codec_{number}.ts").write_text(
            f"export function decode(text: string): number {{ return {number}; }}\n"
        )
    (tmp_path / "legacy.js").write_text("export function render(node) { return node; }\n")
    (tmp_path / "modern.ts").write_text("export function render(node: Node): Node { return node; }\n")
    (tmp_path / "helpers.py").write_text("def render(node):\n    return node\n")
    (tmp_path / "helpers.go").write_text("package helpers\n\nfunc render(node int) int { return node }\n")
    document = "const value = get('a') + decode('b');\nrender(value);\n"
    index = RepositoryIndex()
    index.scan(tmp_path)
    used = index.definitions_used_by("main.ts", document.split("\n"))
    # get is defined in 4 files: left out; decode in 3: kept. render: TypeScript's first, then JavaScript's; not
    # Python's or Go's, whose files a TypeScript file does not use.
    assert [(definition.name, definition.path) for definition in used] == [
        ("decode", "codec_0.ts"),
        ("decode", "codec_1.ts"),
        ("decode", "codec_2.ts"),
        ("render", "modern.ts"),
        ("render", "legacy.js"),
    ]
    # A name the document defines itself is its own: the other files' definitions of it are not what it calls.
    own = "export function decode(x: string) { return 1; }\ndecode('c');\n"
    index.update("main.ts", own)
    assert names(index, "main.ts", own) == []


def test_a_file_that_does_not_parse_keeps_its_previous_definitions(tmp_path: Path) -> None:
    index = ts_workspace(tmp_path)
    broken = SHAPES_TS.replace("export function area(radius: number): number {", "export function area(radius: ")
    index.update("src/shapes.ts", broken)
    assert names(index, "src/report.ts", REPORT_TS) == ["area", "Point"]
    index.update("src/shapes.ts", SHAPES_TS.replace("function area(", "function surface("))
    assert names(index, "src/report.ts", REPORT_TS) == ["Point"], "a renamed definition is gone once it parses again"
    assert ("javascript", "area") not in index.definers
    index.remove("src/shapes.ts")
    assert names(index, "src/report.ts", REPORT_TS) == []
    assert not any("src/shapes.ts" in holders for holders in index.definers.values())
    # A file never seen without errors gives what tree-sitter could read of it.
    index.update("src/fresh.ts", "export function fresh(a: number): number { return a }\nexport function (((\n")
    assert [definition.name for definition in index.files["src/fresh.ts"].definitions] == ["fresh"]


def test_line_breaks_of_an_editor_are_read_as_lsp_counts_them() -> None:
    source = SHAPES_TS.replace("\n", "\r\n")
    tagged = read_tags("shapes.ts", source, "typescript")
    assert tagged is not None and tagged.complete
    area = tagged.symbols.definitions[0]
    assert area.line == 6 and "\r" not in area.text


# --- bounds -----------------------------------------------------------------------------------


def test_generated_files_huge_or_deeply_nested_are_bounded_in_time_and_names(tmp_path: Path) -> None:
    # Just under MAX_FILE_BYTES each: nesting a recursive parser would overflow on, thousands of functions, and
    # noise that tree-sitter's error recovery takes long over.
    (tmp_path / "nested.ts").write_text("export const TABLE = " + "[" * 400_000 + "]" * 400_000 + ";\n")
    (tmp_path / "calls.js").write_text("export const v = " + "f(" * 300_000 + ")" * 300_000 + ";\n")
    (tmp_path / "blocks.rs").write_text("pub fn blocks() { " + "{" * 400_000 + "}" * 400_000 + " }\n")
    (tmp_path / "sum.c").write_text("int sum(void) { return " + "(" * 400_000 + "1" + ")" * 400_000 + "; }\n")
    (tmp_path / "many.ts").write_text(
        "".join(f"export function f{number}(a: number): number {{ return a; }}\n" for number in range(20_000))[:990_000]
    )
    noise = "".join("{}()[]<>;:,.=+-*/&|!?'\"ab 12\n"[(number * 7919) % 29] for number in range(990_000))
    (tmp_path / "noise.ts").write_text(noise)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "shapes.ts").write_text(SHAPES_TS)
    index = RepositoryIndex()
    started = time.monotonic()
    index.scan(tmp_path)
    # Each file within PARSE_SECONDS (or given up on), with generous room for a busy machine.
    assert time.monotonic() - started < 7 * (PARSE_SECONDS + 2)
    assert len(index.files["many.ts"].definitions) == MAX_FILE_NAMES
    for path, name in [("nested.ts", "TABLE"), ("calls.js", "v"), ("blocks.rs", "blocks"), ("sum.c", "sum")]:
        assert [definition.name for definition in index.files[path].definitions] == [name]
        assert len(index.files[path].definitions[0].text) <= MAX_DEFINITION_CHARS
    assert names(index, "src/report.ts", REPORT_TS) == ["area", "Point"], "the other files are still indexed"


def test_a_file_too_slow_to_parse_is_left_out_said_once_and_keeps_what_it_had(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = RepositoryIndex()
    index.update("src/shapes.ts", SHAPES_TS)
    monkeypatch.setattr(tags, "PARSE_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, logger="ingle.lsp"):
        for _ in range(2):
            index.update("src/shapes.ts", SHAPES_TS.replace("function area(", "function surface("))
            index.update("src/generated.ts", SHAPES_TS.replace("function area(", "function volume("))
    assert names(index, "src/report.ts", REPORT_TS) == ["area", "Point"]
    assert "src/generated.ts" not in index.files
    assert [record.getMessage() for record in caplog.records] == [
        "not indexing src/shapes.ts: it takes too long to parse",
        "not indexing src/generated.ts: it takes too long to parse",
    ]


def test_a_missing_grammar_leaves_its_language_out_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"tree_sitter_not_installed_{tmp_path.name}"  # loads are cached per process: a name of its own
    monkeypatch.setitem(GRAMMARS, "go", GrammarPackage(missing))
    (tmp_path / "shapes.go").write_text(GEOMETRY_GO)
    (tmp_path / "shapes.ts").write_text(SHAPES_TS)
    with caplog.at_level(logging.INFO, logger="ingle.lsp"):
        for _ in range(2):
            index = RepositoryIndex()
            assert index.scan(tmp_path) == 1
            index.update("main.go", MAIN_GO)
            assert sorted(index.files) == ["shapes.ts"]
            assert index.snippets.similar("x.go", GEOMETRY_GO.split("\n"), 10, 400) == []
    assert len([record for record in caplog.records if missing in record.getMessage()]) == 1


def test_the_index_by_name_keeps_to_the_byte_budget(tmp_path: Path) -> None:
    functions = "".join(
        f"export function helper_{number}(value: number): number {{ return value; }}\n" for number in range(40)
    )
    # 40 definitions of 55 characters: 24 kB by the index's measure.
    index = RepositoryIndex(max_symbol_bytes=30_000)
    index.update("helpers.ts", functions)
    index.update("late.ts", functions.replace("helper_", "late_"))
    kept = len(index.files["late.ts"].definitions)
    assert len(index.files["helpers.ts"].definitions) == 40 and kept < 40
    assert sum(len(holders) for holders in index.definers.values()) == 40 + kept
    index.remove("helpers.ts")
    index.update("late.ts", functions.replace("helper_", "late_"))
    assert len(index.files["late.ts"].definitions) == 40, "a removed file's room is free again"
    assert sum(len(holders) for holders in index.definers.values()) == 40


# --- in the language server ---------------------------------------------------------------------


def open_typescript(server: IngleLanguageServer, path: Path, text: str) -> str:
    uri = path.as_uri()
    server.workspace.put_text_document(types.TextDocumentItem(uri, "typescript", 1, text))
    server.opened(uri)
    return uri


async def test_the_language_server_puts_another_typescript_files_definitions_in_the_prompt(tmp_path: Path) -> None:
    ts_workspace(tmp_path)
    server = server_on_workspace(tmp_path)
    server.configure({"warmOnOpen": False, "repositoryTokens": 512})
    await scanned(server)
    # Edited in the editor, not yet saved: the open document's text is what counts.
    edited = REPORT_TS.replace("return `", "const far = origin.distance(new Point(1, 1));\n  return `")
    uri = open_typescript(server, tmp_path / "src" / "report.ts", edited)
    cursor = server.cursor_at(uri, types.Position(line=edited.count("\n") - 1, character=1))
    assert cursor is not None
    prompt = build_prompt(cursor, Anchors(), [], server.options, server.repository_for(uri), server.similar_code)
    assert [chunk.filename for chunk in prompt.chunks[:2]] == ["src/shapes.ts", "src/report.ts"]
    definitions, imports = prompt.chunks[0].text, prompt.chunks[1].text
    assert "export function area(radius: number): number { ... }" in definitions
    assert "  distance(other: Point): number { ... }" in definitions
    assert "Math.PI" not in definitions, "signatures, not bodies"
    assert imports.startswith("import {\n  area,")


async def test_a_typescript_file_changed_on_disk_is_indexed_again(tmp_path: Path) -> None:
    ts_workspace(tmp_path)
    server = server_on_workspace(tmp_path)
    await scanned(server)
    shapes = tmp_path / "src" / "shapes.ts"
    shapes.write_text(SHAPES_TS.replace("export function area(", "export function surface("))
    await server.file_changed(shapes.as_uri(), deleted=False)  # what the editor's file watcher reports
    assert names(server.index, "src/report.ts", REPORT_TS) == ["Point"]
    shapes.unlink()
    await server.file_changed(shapes.as_uri(), deleted=True)
    assert names(server.index, "src/report.ts", REPORT_TS) == []


# py-tree-sitter has crashed the process on some uses (see tags._parse): mangled sources of every language, read in a
# child process, so that a crash fails this test instead of ending the test run.
_MANGLE = """
import random, sys
from ingle.lsp.tags import TooSlowToParse, read_tags
chance = random.Random(7)
pieces = ["{", "}", "(", ")", '"', "`", "/*", "*/", "<", ">", "\\x00", "#if 0\\n", "::", "=>", "\\n\\n", "\\\\"]
for name, language, text in SOURCES:
    for _ in range(60):
        at = chance.randrange(len(text) + 1)
        mangled = text[:at] + "".join(chance.choice(pieces) for _ in range(chance.randint(1, 4))) + text[at:]
        for variant in (mangled, mangled[: chance.randrange(len(mangled) + 1)]):
            try:
                read_tags(name, variant, language)
            except TooSlowToParse:
                pass
print("read them all")
"""


def test_mangled_sources_of_every_language_are_read_without_a_crash() -> None:
    sources = [
        ("a.ts", "typescript", SHAPES_TS + REPORT_TS),
        ("a.tsx", "tsx", SHAPES_TS),
        ("a.js", "javascript", REPORT_TS.replace(": number", "").replace(": string", "")),
        ("a.go", "go", GEOMETRY_GO + DISTANCE_GO + MAIN_GO),
        ("a.rs", "rust", SHAPES_RS),
        ("a.java", "java", CIRCLE_JAVA),
        ("a.h", "c", "#ifndef A_H\n#define A_H\n#define SQUARE(x) ((x) * (x))\nint area(int w, int h);\n#endif\n"),
        ("a.cpp", "cpp", "namespace geo {\nclass Box {\n public:\n  int area() const { return w * h; }\n};\n}\n"),
    ]
    program = f"SOURCES = {sources!r}\n{_MANGLE}"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "read them all" in done.stdout, (done.returncode, done.stderr[-2000:])
