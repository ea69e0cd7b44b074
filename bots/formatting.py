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
entities" — and each rendered part is at most the platform's limit, so
"message is too long" cannot happen either.
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
        return "\n\n".join(block for block in self._blocks(tokens, markdown.split("\n")) if block).strip()

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
    """Slack mrkdwn: *bold*, _italic_, ~strike~, `code`, ``` blocks, <url|text>, & < > escaped."""
    return _SLACK(markdown)


def as_markdown(markdown: str) -> str:
    """Mattermost renders Markdown itself: the text as is."""
    return markdown.strip()


_TELEGRAM = _Renderer(TELEGRAM_HTML)
_SLACK = _Renderer(SLACK_MRKDWN)


# --- splitting -------------------------------------------------------------------


def split_markdown(markdown: str, limit: int, render: Render) -> list[str]:
    """Render `markdown` as parts of at most `limit` characters each, cut between blocks, never inside one.

    Returns rendered parts (an empty list for an empty text). A code block too
    long for one message is cut between lines and each piece re-fenced.
    """
    if limit < 64:
        raise ValueError("a message limit below 64 characters leaves no room for markup")
    whole = render(markdown)
    if len(whole) <= limit:
        return [whole] if whole else []
    pieces: list[str] = []
    for block, token in _top_level_blocks(markdown):
        if len(render(block)) <= limit:
            pieces.append(block)
        elif token.type == "fence":
            pieces.extend(_split_fence(block, token, limit, render))
        else:
            pieces.extend(_split_text(block, limit, render))
    return [render(part) for part in _pack(pieces, "\n\n", _same, limit, render) if render(part)]


def preview(markdown: str, limit: int, render: Render) -> str:
    """What to show of a growing answer: all of it while it fits, else its first part."""
    whole = render(markdown)
    if len(whole) <= limit:
        return whole
    # Only the head matters; splitting a bounded prefix keeps each preview cheap.
    parts = split_markdown(markdown[: limit * 2], limit - 2, render)
    return (parts[0] + " …") if parts else ""


def _same(text: str) -> str:
    return text


def _top_level_blocks(markdown: str) -> list[tuple[str, Token]]:
    lines = markdown.split("\n")
    blocks: list[tuple[str, Token]] = []
    for token in _parser().parse(markdown):
        if token.level == 0 and token.nesting in (0, 1) and token.map:
            start, end = token.map
            blocks.append(("\n".join(lines[start:end]).strip("\n"), token))
    return blocks


def _split_fence(block: str, token: Token, limit: int, render: Render) -> list[str]:
    opener = block.split("\n", 1)[0]
    closer = token.markup

    def wrap(body: str) -> str:
        return f"{opener}\n{body}\n{closer}"

    units: list[str] = []
    for line in token.content.rstrip("\n").split("\n"):
        units.extend(_hard_split(line, limit, render, wrap))
    return [wrap(body) for body in _pack(units, "\n", wrap, limit, render)]


def _split_text(block: str, limit: int, render: Render) -> list[str]:
    units: list[str] = []
    for line in block.split("\n"):
        if len(render(line)) <= limit:
            units.append(line)
            continue
        words = [word for word in line.split(" ") if word]
        for piece in _pack(
            [u for word in words for u in _hard_split(word, limit, render, _same)], " ", _same, limit, render
        ):
            units.append(piece)
    return _pack(units, "\n", _same, limit, render)


def _hard_split(text: str, limit: int, render: Render, wrap: Callable[[str], str]) -> list[str]:
    """`text` as is if it fits, else cut into character runs that do (escaping can grow a run up to 5x)."""
    if len(render(wrap(text))) <= limit:
        return [text]
    overhead = len(render(wrap("")))
    size = max(1, (limit - overhead) // 6)
    return [text[index : index + size] for index in range(0, len(text), size)]


def _pack(units: list[str], joiner: str, wrap: Callable[[str], str], limit: int, render: Render) -> list[str]:
    """Join consecutive units into as few pieces as fit `limit` once wrapped and rendered; each unit fits alone."""
    if not units:
        return []
    overhead = len(render(wrap("")))
    groups: list[list[str]] = []
    current: list[str] = []
    size = overhead
    for unit in units:
        cost = max(len(render(wrap(unit))) - overhead, len(unit)) + len(joiner)
        if current and size + cost > limit:
            groups.append(current)
            current, size = [], overhead
        current.append(unit)
        size += cost
    groups.append(current)
    pieces: list[str] = []
    for group in groups:
        pieces.extend(_verified(group, joiner, wrap, limit, render))
    return pieces


def _verified(group: list[str], joiner: str, wrap: Callable[[str], str], limit: int, render: Render) -> list[str]:
    """The group joined, or halved until every half renders within the limit (sizes were estimates)."""
    joined = joiner.join(group)
    if len(group) == 1 or len(render(wrap(joined))) <= limit:
        return [joined]
    middle = len(group) // 2
    return _verified(group[:middle], joiner, wrap, limit, render) + _verified(
        group[middle:], joiner, wrap, limit, render
    )
