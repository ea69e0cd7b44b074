"""Markdown from the model, converted to each platform's markup and split to fit its messages.

Models answer in Markdown. markdown-it-py parses it (no hand-rolled Markdown
parser here) and a small renderer walks the tokens, writing Telegram HTML
(every text escaped, only the tags Telegram accepts), Slack mrkdwn, or
leaving Markdown as it is for Mattermost.

Splitting happens on the Markdown, never on the rendered text: the answer is
cut between top-level blocks, an oversized code block is cut between lines and
each piece gets its own opening and closing fence, and every piece is
rendered on its own. So no part can end inside an HTML entity or a tag, and
no part leaves a code block open — the two causes of Telegram's "can't parse
entities" — and each rendered part is at most the platform's limit, measured
in the unit the platform counts (Telegram counts UTF-16 code units, so an
emoji is two), so "message is too long" cannot happen either. Splitting never
changes the text: a word or code line too long for one message is cut, never
broken up with inserted spaces or newlines.

Model output is data, never a notification: `@channel`, `@all`, `@here` and
Slack's `<!here>`-style mentions get a zero-width joiner after their first
character, which shows the same but is no mention to Slack or Mattermost
(Telegram has no mass mentions).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

Render = Callable[[str], str]
"""Markdown in, the platform's markup out."""

Measure = Callable[[str], int]
"""A message's length in the unit its platform counts."""

ZERO_WIDTH_JOINER = "\u200d"

# `@here`-style words not glued to a letter or digit before or after (Mattermost's rule for a mention), and
# Slack's special mentions `<!here>`, `<!channel>`, `<!everyone>` and user groups `<!subteam^ID>`.
_MASS_MENTION = re.compile(
    r"(?<![^\W_])@(?=(?:here|channel|all|everyone)(?![^\W_]))|<(?=!(?:here|channel|everyone|subteam\^))",
    re.IGNORECASE,
)


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts a message: a character beyond U+FFFF (most emoji) is two."""
    return len(text.encode("utf-16-le")) // 2


def neutralise_mass_mentions(text: str) -> str:
    """`text` with every mass mention (`@channel`, `<!here>`, …) broken by an invisible joiner, so none notifies."""
    return _MASS_MENTION.sub(lambda match: match.group(0) + ZERO_WIDTH_JOINER, text)


_LANGUAGE = re.compile(r"^[\w+#.-]{1,32}$")


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["strikethrough", "table"])


@dataclass(frozen=True)
class _Dialect:
    """How one platform writes each construct; every callable gets already-escaped inner text unless noted."""

    escape: Callable[[str], str]
    bold: tuple[str, str]
    italic: tuple[str, str]
    strike: tuple[str, str]
    code: Callable[[str], str]
    """Inline code, given raw (unescaped) text."""
    pre: Callable[[str, str], str]
    """A code block, given raw text and its language ('' if none)."""
    link: Callable[[str, str], str]
    """Given rendered link text and the raw URL."""
    quote: Callable[[str], str]
    visible: Callable[[str], str] = lambda markup: markup
    """The text a reader sees of rendered markup (an empty result means the message shows nothing)."""


def _telegram_visible(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", "", markup))


def _telegram_pre(code: str, language: str) -> str:
    body = html.escape(code, quote=False)
    if language and _LANGUAGE.match(language):
        return f'<pre><code class="language-{html.escape(language)}">{body}</code></pre>'
    return f"<pre>{body}</pre>"


def _telegram_link(text: str, url: str) -> str:
    if not url.lower().startswith(("http://", "https://", "tg://", "mailto:")):
        return text
    return f'<a href="{html.escape(url, quote=True)}">{text}</a>'


TELEGRAM_HTML = _Dialect(
    escape=lambda text: html.escape(text, quote=False),
    bold=("<b>", "</b>"),
    italic=("<i>", "</i>"),
    strike=("<s>", "</s>"),
    code=lambda text: f"<code>{html.escape(text, quote=False)}</code>",
    pre=_telegram_pre,
    link=_telegram_link,
    quote=lambda inner: f"<blockquote>{inner}</blockquote>",
    visible=_telegram_visible,
)


def _slack_escape(text: str) -> str:
    # Slack wants exactly these three escaped in mrkdwn text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(text: str, url: str) -> str:
    if not url.lower().startswith(("http://", "https://", "mailto:")):
        return text
    return (
        f"<{_slack_escape(url)}|{text.replace('|', '¦')}>" if text != _slack_escape(url) else f"<{_slack_escape(url)}>"
    )


SLACK_MRKDWN = _Dialect(
    escape=_slack_escape,
    bold=("*", "*"),
    italic=("_", "_"),
    strike=("~", "~"),
    code=lambda text: f"`{_slack_escape(text)}`",
    pre=lambda code, language: f"```\n{_slack_escape(code)}\n```",
    link=_slack_link,
    quote=lambda inner: "\n".join(f"> {line}" for line in inner.split("\n")),
)


class _Renderer:
    """Walks markdown-it tokens and writes one dialect."""

    def __init__(self, dialect: _Dialect) -> None:
        self.dialect = dialect
        self.parser = _parser()

    def __call__(self, markdown: str) -> str:
        tokens = self.parser.parse(markdown)
        rendered = "\n\n".join(block for block in self._blocks(tokens, markdown.split("\n")) if block).strip()
        # Markup around nothing (an empty heading or link) shows nothing, and platforms refuse empty messages.
        return rendered if self.dialect.visible(rendered).strip() else ""

    def _blocks(self, tokens: list[Token], lines: list[str]) -> list[str]:
        blocks: list[str] = []
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token.nesting == 1:
                end = _closing(tokens, index)
                blocks.append(self._container(token, tokens[index + 1 : end], lines))
                index = end + 1
            else:
                blocks.append(self._leaf(token))
                index += 1
        return blocks

    def _container(self, token: Token, inner: list[Token], lines: list[str]) -> str:
        d = self.dialect
        kind = token.type
        if kind == "paragraph_open":
            return "".join(self._leaf(child) for child in inner)
        if kind == "heading_open":
            return d.bold[0] + "".join(self._leaf(child) for child in inner) + d.bold[1]
        if kind == "blockquote_open":
            return d.quote("\n\n".join(block for block in self._blocks(inner, lines) if block))
        if kind in ("bullet_list_open", "ordered_list_open"):
            return self._list(token, inner, lines)
        if kind == "table_open" and token.map:
            # Chat platforms have no tables; a monospaced block keeps the columns readable.
            return d.pre("\n".join(lines[token.map[0] : token.map[1]]), "")
        return "\n".join(block for block in self._blocks(inner, lines) if block)

    def _list(self, token: Token, inner: list[Token], lines: list[str]) -> str:
        ordered = token.type == "ordered_list_open"
        number = int(token.attrGet("start") or 1) if ordered else 0
        items: list[str] = []
        index = 0
        while index < len(inner):
            end = _closing(inner, index)
            body = "\n".join(block for block in self._blocks(inner[index + 1 : end], lines) if block)
            marker = f"{number}. " if ordered else "• "
            indent = " " * len(marker)
            items.append(marker + body.replace("\n", "\n" + indent))
            number += 1
            index = end + 1
        return "\n".join(items)

    def _leaf(self, token: Token) -> str:
        d = self.dialect
        kind = token.type
        if kind == "inline":
            return self._inline(token.children or [])
        if kind == "fence":
            language = token.info.split()[0] if token.info.strip() else ""
            return d.pre(token.content.rstrip("\n"), language)
        if kind == "code_block":
            return d.pre(token.content.rstrip("\n"), "")
        if kind == "hr":
            return "———"
        if kind == "html_block":
            return d.escape(token.content.rstrip("\n"))
        return ""

    def _inline(self, children: list[Token]) -> str:
        d = self.dialect
        out: list[str] = []
        links: list[tuple[int, str]] = []
        for child in children:
            kind = child.type
            if kind == "text":
                out.append(d.escape(child.content))
            elif kind in ("softbreak", "hardbreak"):
                out.append("\n")
            elif kind == "code_inline":
                out.append(d.code(child.content))
            elif kind in ("strong_open", "strong_close"):
                out.append(d.bold[kind.endswith("close")])
            elif kind in ("em_open", "em_close"):
                out.append(d.italic[kind.endswith("close")])
            elif kind in ("s_open", "s_close"):
                out.append(d.strike[kind.endswith("close")])
            elif kind == "link_open":
                links.append((len(out), str(child.attrGet("href") or "")))
            elif kind == "link_close" and links:
                start, url = links.pop()
                text = "".join(out[start:])
                del out[start:]
                out.append(d.link(text, url))
            elif kind == "image":
                out.append(d.escape(child.content or str(child.attrGet("src") or "")))
            elif kind == "html_inline":
                out.append(d.escape(child.content))
        return "".join(out)


def _closing(tokens: list[Token], start: int) -> int:
    """Index of the token that closes the one opened at `start`."""
    depth = 0
    for index in range(start, len(tokens)):
        depth += tokens[index].nesting
        if depth == 0:
            return index
    return len(tokens) - 1


def to_telegram_html(markdown: str) -> str:
    """Telegram HTML (parse_mode=HTML): text escaped, only tags Telegram accepts."""
    return _TELEGRAM(markdown)


def to_slack_mrkdwn(markdown: str) -> str:
    """Slack mrkdwn: *bold*, _italic_, ~strike~, `code`, ``` blocks, <url|text>, & < > escaped, no mass mentions."""
    return neutralise_mass_mentions(_SLACK(markdown))


def as_markdown(markdown: str) -> str:
    """Markdown for platforms that render it themselves (Mattermost, Slack's streams): as is, but no mass mentions."""
    return neutralise_mass_mentions(markdown.strip())


_TELEGRAM = _Renderer(TELEGRAM_HTML)
_SLACK = _Renderer(SLACK_MRKDWN)


# --- splitting -------------------------------------------------------------------


def split_markdown(markdown: str, limit: int, render: Render, measure: Measure = len) -> list[str]:
    """Render `markdown` as parts of at most `limit` (by `measure`) each, cut between blocks where possible.

    Returns rendered parts (an empty list for a text that shows nothing). A
    code block too long for one message is cut between lines and each piece
    re-fenced; a line or word too long is cut where it must be. The parts,
    read in order, hold the text exactly: nothing is inserted at a cut.
    """
    if limit < 64:
        raise ValueError("a message limit below 64 characters leaves no room for markup")
    return _Splitter(limit, render, measure).split(markdown)


def preview(markdown: str, limit: int, render: Render, measure: Measure = len) -> str:
    """What to show of a growing answer: all of it while it fits, else its first part."""
    whole = render(markdown)
    if measure(whole) <= limit:
        return whole
    # Only the head matters; splitting a bounded prefix keeps each preview cheap.
    parts = split_markdown(markdown[: limit * 2], limit - 2, render, measure)
    return (parts[0] + " …") if parts else ""


def _same(text: str) -> str:
    return text


_RUNS = re.compile(r"\S+\s*|\s+")
"""A line as words with the spaces after them (leading spaces a run of their own): joined, the line itself."""


@dataclass(frozen=True)
class _Splitter:
    """Cuts Markdown into pieces that each render within `limit`, as measured by `measure`."""

    limit: int
    render: Render
    measure: Measure

    def split(self, markdown: str) -> list[str]:
        whole = self.render(markdown)
        if self.measure(whole) <= self.limit:
            return [whole] if whole else []
        pieces: list[str] = []
        fitting: list[str] = []
        """Consecutive blocks that fit whole, to be packed into as few parts as fit."""
        for block, token in _top_level_blocks(markdown):
            if self._size(block) <= self.limit:
                fitting.append(block)
                continue
            # A block cut into parts stands alone, so no joiner ever lands between the pieces of a cut word.
            pieces.extend(self._pack(fitting, "\n\n"))
            fitting = []
            pieces.extend(self._split_fence(block, token) if token.type == "fence" else self._split_text(block))
        pieces.extend(self._pack(fitting, "\n\n"))
        return [rendered for piece in pieces if (rendered := self.render(piece))]

    def _size(self, markdown: str, wrap: Callable[[str], str] = _same) -> int:
        return self.measure(self.render(wrap(markdown)))

    def _split_fence(self, block: str, token: Token) -> list[str]:
        opener = block.split("\n", 1)[0]
        closer = token.markup

        def wrap(body: str) -> str:
            code = body.removesuffix("\n")  # a piece that ends a line keeps its newline until it is fenced
            return f"{opener}\n{code}\n{closer}"

        # Each line keeps its newline, so pieces join back into the code exactly.
        units: list[str] = []
        for line in token.content.rstrip("\n").split("\n"):
            units.extend(self._hard_split(line + "\n", wrap))
        return [wrap(body) for body in self._pack(units, "", wrap)]

    def _split_text(self, block: str) -> list[str]:
        units: list[str] = []
        for line in block.split("\n"):
            if self._size(line) <= self.limit:
                units.append(line + "\n")
                continue
            for run in _RUNS.findall(line + "\n"):
                units.extend(self._hard_split(run, _same))
        return self._pack(units, "")

    def _hard_split(self, text: str, wrap: Callable[[str], str]) -> list[str]:
        """`text` as is if it fits, else cut into character runs that do (escaping can grow a run up to 5x)."""
        if self._size(text, wrap) <= self.limit:
            return [text]
        size = max(1, (self.limit - self._size("", wrap)) // 6)
        return [text[index : index + size] for index in range(0, len(text), size)]

    def _pack(self, units: list[str], joiner: str, wrap: Callable[[str], str] = _same) -> list[str]:
        """Join consecutive units into as few pieces as fit once wrapped and rendered; each unit fits alone."""
        if not units:
            return []
        overhead = self._size("", wrap)
        groups: list[list[str]] = []
        current: list[str] = []
        size = overhead
        for unit in units:
            cost = max(self._size(unit, wrap) - overhead, self.measure(unit)) + self.measure(joiner)
            if current and size + cost > self.limit:
                groups.append(current)
                current, size = [], overhead
            current.append(unit)
            size += cost
        groups.append(current)
        pieces: list[str] = []
        for group in groups:
            pieces.extend(self._verified(group, joiner, wrap))
        return pieces

    def _verified(self, group: list[str], joiner: str, wrap: Callable[[str], str]) -> list[str]:
        """The group joined, or halved until every half renders within the limit (sizes were estimates)."""
        joined = joiner.join(group)
        if len(group) == 1 or self._size(joined, wrap) <= self.limit:
            return [joined]
        middle = len(group) // 2
        return self._verified(group[:middle], joiner, wrap) + self._verified(group[middle:], joiner, wrap)


def _top_level_blocks(markdown: str) -> list[tuple[str, Token]]:
    lines = markdown.split("\n")
    blocks: list[tuple[str, Token]] = []
    for token in _parser().parse(markdown):
        if token.level == 0 and token.nesting in (0, 1) and token.map:
            start, end = token.map
            blocks.append(("\n".join(lines[start:end]).strip("\n"), token))
    return blocks
