"""Code like the code at the cursor, from elsewhere in the workspace: what is found, what it costs, when it changes."""

from __future__ import annotations

from ingle.core.generation import ContextChunk
from ingle.lsp.prompt import Anchors, Cursor, build_prompt
from ingle.lsp.settings import CompletionSettings
from ingle.lsp.snippets import SnippetIndex

HOOKS = '''\
class Hooks:
    def __init__(self):
        self.before = []
        self.after = []

    def before_request(self, f):
        """Run f before each request."""
        self._check_setup_finished("before_request")
        self.before.append(f)
        return f

    def teardown(self, f):
        """Run f at the end."""
        self.closing.append(f)
        return f
'''

# The user writes a sibling of before_request in another file: the lines above the cursor read like its start.
WRITING = (
    '''\
from hooks import Hooks


class MoreHooks(Hooks):
    def after_request(self, f):
        """Run f after each request."""
'''
    + "        \n"
)


def index_with(**files: str) -> SnippetIndex:
    index = SnippetIndex()
    for path, text in files.items():
        index.update(path, text.split("\n"))
    return index


def test_the_code_that_reads_like_the_cursors_comes_with_what_followed_it() -> None:
    index = index_with(**{"hooks.py": HOOKS, "more.py": WRITING})
    lines = WRITING.split("\n")
    found = index.similar("more.py", lines, 6, token_budget=160)
    assert [chunk.filename for chunk in found][:1] == ["hooks.py"]
    # The end of the similar lines, then the lines after them: what the model is about to write here.
    assert '        self._check_setup_finished("before_request")' in found[0].text.split("\n")
    assert "        self.before.append(f)" in found[0].text.split("\n")


def test_code_of_another_language_is_not_offered_however_alike() -> None:
    index = index_with(**{"hooks.ts": HOOKS, "more.py": WRITING})
    lines = WRITING.split("\n")
    assert index.similar("more.py", lines, 6, token_budget=160) == [], "TypeScript is not what a Python file needs"
    index.update("hooks.py", HOOKS.split("\n"))
    assert [chunk.filename for chunk in index.similar("more.py", lines, 6, token_budget=160)][:1] == ["hooks.py"]
    anywhere = {chunk.filename for chunk in index.similar("notes.txt", lines, 6, token_budget=400)}
    assert "hooks.ts" in anywhere, "a document in no known language takes code from any file"


def test_nothing_from_the_cursors_own_neighbourhood_and_nothing_past_the_budget() -> None:
    index = index_with(**{"more.py": WRITING})
    lines = WRITING.split("\n")
    assert index.similar("more.py", lines, 6, token_budget=160) == []  # only the query's own lines are alike
    index.update("hooks.py", HOOKS.split("\n"))
    assert index.similar("more.py", lines, 6, token_budget=0) == []
    assert index.similar("more.py", lines, 6, token_budget=10) == []  # no chunk fits in 35 characters
    index.remove("hooks.py")
    assert index.similar("more.py", lines, 6, token_budget=160) == []


def test_found_again_only_when_the_prompt_start_moves() -> None:
    lines = [f"value_{number} = compute({number})" for number in range(200)]
    asked: list[int] = []

    def similar(cursor: Cursor) -> list[ContextChunk]:
        asked.append(cursor.line)
        return [ContextChunk(text=f"# like line {cursor.line}\n", filename="other.py")]

    anchors, settings = Anchors(), CompletionSettings()
    first = build_prompt(Cursor("a.py", lines, 100, 0), anchors, [], settings, None, similar)
    typing = build_prompt(Cursor("a.py", lines, 101, 0), anchors, [], settings, None, similar)
    assert asked == [100] and first.chunks[0] == typing.chunks[0]  # typing on keeps the prompt head
    jumped = build_prompt(Cursor("a.py", lines, 20, 0), anchors, [], settings, None, similar)
    assert asked == [100, 20] and jumped.chunks[0].text == "# like line 20\n"


def test_a_workspace_past_the_line_limit_keeps_the_files_it_saw_first() -> None:
    index = SnippetIndex(max_lines=30)
    index.update("hooks.py", HOOKS.split("\n"))  # 16 lines
    index.update("more.py", WRITING.split("\n"))  # 8: 24 in all, and another 16 would pass 30
    index.update("copy.py", HOOKS.split("\n"))
    lines = WRITING.split("\n")
    assert {chunk.filename for chunk in index.similar("more.py", lines, 6, token_budget=400)} == {"hooks.py"}
    index.update("hooks.py", HOOKS.split("\n"))  # a file already held is indexed again
    index.remove("hooks.py")
    index.update("copy.py", HOOKS.split("\n"))  # and its room is free again
    assert {chunk.filename for chunk in index.similar("more.py", lines, 6, token_budget=400)} == {"copy.py"}
