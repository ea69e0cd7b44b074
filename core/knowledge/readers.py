"""Readers per format: bytes of a file in, a Document of structured blocks out.

Markdown goes through markdown-it (headings, paragraphs, lists, fences with
their line ranges); reStructuredText by its underlined titles; HTML by its
h1–h6 and block elements; PDF page by page with pypdf; source code at its
top-level definitions; anything else that decodes as text by paragraphs.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import PurePosixPath

from markdown_it import MarkdownIt
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from ..errors import InvalidRequest
from .documents import Block, Document

MARKDOWN = frozenset({".md", ".markdown", ".mdx"})
RESTRUCTURED = frozenset({".rst", ".rest"})
HTML = frozenset({".html", ".htm", ".xhtml"})
PDF = frozenset({".pdf"})
CODE = frozenset(
    {".py", ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cc",
     ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".lua", ".sql"}
)  # fmt: skip
TEXT = frozenset({".txt", ".text", "", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".conf", ".csv", ".json", ".log"})
SUPPORTED = MARKDOWN | RESTRUCTURED | HTML | PDF | CODE | TEXT

_CONTENT_TYPES = {
    "text/markdown": ".md",
    "text/x-rst": ".rst",
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}

# Bounds on what one document may cost: a small file can expand (a PDF's compressed streams, shared by every
# page) into millions of characters and minutes of CPU. What is past a bound is not indexed, and the
# Document says so in a sentence (Document.cut).
MAX_DOCUMENT_CHARS = 2_000_000
"""Characters of text kept per document (a long book; about 2,000 chunks)."""
MAX_MARKUP_CHARS = 4 * MAX_DOCUMENT_CHARS
"""Characters of HTML parsed per page: markup is several times the text it holds."""
MAX_PDF_PAGES = 5_000
MAX_PDF_PAGE_CONTENT = 1_000_000
"""Bytes of a page's decoded content stream: pypdf extracts about 1 MB a second, and a page of text is ~10 KB."""
MAX_PDF_CONTENT = 16_000_000
"""Bytes of decoded content streams read per PDF, all pages together."""


class UnreadableDocument(InvalidRequest):
    """A file that is not in a format ingle reads, or that is damaged."""


def kind_of(location: str, content_type: str | None = None) -> str:
    """The file suffix that decides the reader: from a URL's content type, else from the name."""
    if content_type:
        suffix = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
        if suffix:
            return suffix
    return PurePosixPath(location.split("?")[0]).suffix.lower()


def read_document(location: str, data: bytes, kind: str | None = None) -> Document:
    """Read `data` (the bytes of `location`) into blocks; UnreadableDocument if it cannot be."""
    kind = kind if kind is not None else kind_of(location)
    title = PurePosixPath(location.rstrip("/")).name or location
    if kind in PDF:
        blocks, cut = _read_pdf(location, data)
        return Document(location, title, blocks, cut)
    text, cut = _within(location, _decode(location, data), MAX_MARKUP_CHARS if kind in HTML else MAX_DOCUMENT_CHARS)
    reader: Callable[[str], list[Block]]
    if kind in MARKDOWN:
        reader = _read_markdown
    elif kind in RESTRUCTURED:
        reader = _read_rst
    elif kind in HTML:
        parser = _HtmlBlocks()
        parser.feed(text)
        parser.close()
        return Document(location, parser.title or title, parser.finish(), cut)
    elif kind in CODE:
        reader = _read_code
    else:
        reader = _read_text
    return Document(location, title, [b for b in reader(text) if b.text.strip()], cut)


def _within(location: str, text: str, limit: int) -> tuple[str, str | None]:
    """`text` cut to `limit` characters (at a line end where there is one), and the sentence saying so."""
    if len(text) <= limit:
        return text, None
    end = text.rfind("\n", 0, limit)
    kept = text[: end if end > limit // 2 else limit]
    return kept, f"{location}: only its first {len(kept):,} of {len(text):,} characters were indexed."


def _decode(location: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableDocument(f"{location} is a binary file, not text ingle can index.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# --- plain text -------------------------------------------------------------


def _paragraphs(lines: list[str], first_line: int = 1, **fields: object) -> list[Block]:
    """Runs of non-blank lines as blocks with their line numbers."""
    blocks, start = [], None
    for index, line in enumerate([*lines, ""]):
        if line.strip() and start is None:
            start = index
        elif not line.strip() and start is not None:
            text = "\n".join(lines[start:index]).strip()
            blocks.append(Block(text, start_line=first_line + start, end_line=first_line + index - 1, **fields))  # type: ignore[arg-type]
            start = None
    return blocks


def _read_text(text: str) -> list[Block]:
    return _paragraphs(text.splitlines())


# --- Markdown ---------------------------------------------------------------


def _read_markdown(text: str) -> list[Block]:
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings: list[tuple[int, str]] = []
    blocks = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.level != 0 or token.map is None or token.nesting == -1:
            index += 1
            continue
        start, end = token.map
        if token.type == "heading_open":
            level = int(token.tag[1:])
            title = tokens[index + 1].content.strip()
            headings = [h for h in headings if h[0] < level] + [(level, title)]
        elif token.type != "hr":
            blocks.append(
                Block(
                    "\n".join(lines[start:end]).strip(),
                    tuple(h[1] for h in headings),
                    start + 1,
                    end,
                    preformatted=token.type in ("fence", "code_block"),
                )
            )
        index += 1
    return blocks


# --- reStructuredText -------------------------------------------------------

_RST_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def _read_rst(text: str) -> list[Block]:
    """Sections by underlined (optionally overlined) titles; levels in order of first use, as docutils does."""
    lines = text.splitlines()
    styles: list[tuple[str, bool]] = []
    headings: list[tuple[int, str]] = []
    blocks: list[Block] = []
    section_start = 0
    index = 0

    def close_section(end: int) -> None:
        for block in _paragraphs(lines[section_start:end], section_start + 1):
            blocks.append(Block(block.text, tuple(h[1] for h in headings), block.start_line, block.end_line))

    while index < len(lines):
        title = lines[index].strip()
        below = lines[index + 1] if index + 1 < len(lines) else ""
        match = _RST_ADORNMENT.match(below)
        if title and not _RST_ADORNMENT.match(lines[index]) and match and len(below.rstrip()) >= len(title):
            overlined = index > 0 and lines[index - 1].strip() == below.strip()
            close_section(index - 1 if overlined else index)
            style = (match.group(1), overlined)
            if style not in styles:
                styles.append(style)
            level = styles.index(style)
            headings = [h for h in headings if h[0] < level] + [(level, title)]
            index += 2
            section_start = index
            continue
        index += 1
    close_section(len(lines))
    return [b for b in blocks if not _RST_ADORNMENT.match(b.text)]


# --- source code ------------------------------------------------------------

_DEFINITION = re.compile(
    r"^(?:export\s+|pub(?:\(crate\))?\s+|public\s+|private\s+|static\s+|async\s+)*"
    r"(?:def|class|function|func|fn|impl|struct|enum|trait|interface|type|module|object|package|CREATE)\b"
)


def _read_code(text: str) -> list[Block]:
    """Regions between top-level definitions, each under the definition's first line."""
    lines = text.splitlines()
    blocks: list[Block] = []
    start, heading = 0, ()

    def close(end: int) -> None:
        body = "\n".join(lines[start:end]).strip("\n")
        if body.strip():
            blocks.append(Block(body, heading, start + 1, end, preformatted=True))

    for index, line in enumerate(lines):
        if _DEFINITION.match(line):
            close(index)
            start, heading = index, (line.strip().rstrip("{:").strip()[:120],)
    close(len(lines))
    return blocks


# --- HTML ---------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {"p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "div", "section", "article", "table", "tr", "ul",
     "ol", "dl", "figcaption", "br", "hr", "main", "header", "footer", "aside"}
)  # fmt: skip
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "nav", "head"})


class _HtmlBlocks(HTMLParser):
    """Text between block boundaries, under the h1–h6 headings seen so far."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.title = ""
        self._headings: list[tuple[int, str]] = []
        self._text: list[str] = []
        self._start: int | None = None
        self._skipping = 0
        self._heading_level: int | None = None
        self._in_title = False
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading_level = int(tag[1])
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "title":
            self._in_title = False
        elif re.fullmatch(r"h[1-6]", tag) and self._heading_level is not None:
            title = " ".join("".join(self._text).split())
            level = self._heading_level
            if title:
                self._headings = [h for h in self._headings if h[0] < level] + [(level, title)]
            self._text, self._start, self._heading_level = [], None, None
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data.strip()
            return
        if self._skipping:
            return
        if data.strip() and self._start is None:
            self._start = self.getpos()[0]
        self._text.append(data)

    def _flush(self) -> None:
        if self._heading_level is not None:
            return
        raw = "".join(self._text)
        text = raw.strip("\n") if self._pre else " ".join(raw.split())
        if text.strip() and self._start is not None:
            end = self._start + raw.strip().count("\n")
            self.blocks.append(
                Block(text, tuple(h[1] for h in self._headings), self._start, end, preformatted=bool(self._pre))
            )
        self._text, self._start = [], None

    def finish(self) -> list[Block]:
        """The blocks, once the whole page is fed."""
        self._flush()
        return self.blocks


# --- PDF ----------------------------------------------------------------------


def _read_pdf(location: str, data: bytes) -> tuple[list[Block], str | None]:
    """The blocks of each page, and a sentence if pages were left out (see the MAX_PDF_* bounds)."""
    # pypdf reports recoverable damage through logging; a damaged page still yields its text.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableDocument(f"{location} is an encrypted PDF; decrypt it before adding it.")
        blocks: list[Block] = []
        pages = len(reader.pages)
        heavy: list[int] = []
        content = characters = 0
        for number in range(1, pages + 1):
            if number > MAX_PDF_PAGES or content >= MAX_PDF_CONTENT or characters >= MAX_DOCUMENT_CHARS:
                return blocks, _pdf_cut(location, heavy, _pages(number, pages))
            page = reader.pages[number - 1]
            # Measured before extraction, which costs about a second per MB of content: decoding is cheap.
            stream = page.get_contents()
            size = len(stream.get_data()) if stream is not None else 0
            if size > MAX_PDF_PAGE_CONTENT:
                heavy.append(number)
                continue
            content += size
            text, partly = _within(location, page.extract_text() or "", MAX_DOCUMENT_CHARS - characters)
            characters += len(text)
            blocks.extend(_paragraphs(text.splitlines(), page=number))
            if partly is not None:
                later = "" if number == pages else f" and {_pages(number + 1, pages)}"
                return blocks, _pdf_cut(location, heavy, f"the end of page {number}{later}")
        return blocks, _pdf_cut(location, heavy, "")
    except UnreadableDocument:
        raise
    except (PyPdfError, Exception) as error:
        # A damaged or hostile PDF makes pypdf raise almost anything (IndexError, RecursionError, …);
        # this is the one place that calls it, so every failure becomes one sentence about the file.
        raise UnreadableDocument(f"{location} is not a readable PDF ({type(error).__name__}).") from error


def _pdf_cut(location: str, heavy: list[int], rest: str) -> str | None:
    """The sentence on the pages a PDF was indexed without, or None if it was read whole."""
    parts = []
    if heavy:
        shown = ", ".join(map(str, heavy[:10])) + (", …" if len(heavy) > 10 else "")
        parts.append(f"{_plural(len(heavy), 'page')} with over {MAX_PDF_PAGE_CONTENT:,} bytes of content ({shown})")
    if rest:
        parts.append(f"{rest} (past ingle's limits for one document)")
    return f"{location}: indexed without {' and '.join(parts)}." if parts else None


def _pages(first: int, last: int) -> str:
    return f"page {first}" if first == last else f"pages {first}–{last}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
