"""`ingle lsp` over stdio on odd and hostile input: position encodings, line breaks LSP does not count,
documents it never saw, lone surrogates, huge lines and positions past the end. Each answers, none errs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from .conftest import link_home
from .test_lsp_protocol import (
    ANSWER_SECONDS,
    EditorClient,
    completion,
    make_client,
    open_document,
    start,
    stop,
)

pytestmark = pytest.mark.slow

ADD = "def add(a, b):\n    return \n"
# Whole answers however busy the machine, and no context from the other tests' documents (but see the surrogate test):
# they are near copies of each other, and similar code from them would change the answers.
ISOLATED = {"answerWithinMs": None, "contextChunks": 0, "snippetTokens": 0}
# A word with letters of two and three UTF-8 bytes, after an emoji (two UTF-16 units, four UTF-8 bytes).
GROESSE = 'größe_value = 10\nlabel = "😀"\nprint("😀", größe'


@pytest.fixture(scope="module")
def lsp_home(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home with the default model for this module's servers."""
    return link_home(default_model_cache, tmp_path_factory.mktemp("lsp-hostile") / "home")


@pytest.fixture(scope="module", params=["utf-8", "utf-16"])
async def editor(
    request: pytest.FixtureRequest, lsp_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EditorClient]:
    """`ingle lsp --embedded` with the client offering only this position encoding."""
    encoding: str = request.param
    client = make_client()
    workspace = tmp_path_factory.mktemp("workspace")
    await start(client, lsp_home, workspace, "lsp", "--embedded", options=ISOLATED, encodings=[encoding])
    assert client.position_encoding == encoding
    client.workspace_path = workspace
    yield client
    await stop(client)


def units(text: str, encoding: str) -> int:
    """The length of `text` in the client's position units."""
    return len(text.encode("utf-16-le")) // 2 if encoding == "utf-16" else len(text.encode())


def code_points(line: str, character: int, encoding: str) -> int:
    """The index into `line` of a position's character given in the client's units (what an editor does)."""
    counted = 0
    for index, char in enumerate(line):
        if counted >= character:
            return index
        counted += units(char, encoding)
    return len(line)


def accepted(text: str, item: types.CompletionItem, encoding: str) -> str:
    """The document after the editor applies a completion item's edit."""
    edit = item.text_edit
    assert isinstance(edit, types.TextEdit), edit
    lines = text.split("\n")
    line = lines[edit.range.start.line]
    assert edit.range.end.line == edit.range.start.line, edit
    start = code_points(line, edit.range.start.character, encoding)
    end = code_points(line, edit.range.end.character, encoding)
    lines[edit.range.start.line] = line[:start] + edit.new_text + line[end:]
    return "\n".join(lines)


async def inline(editor: EditorClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    """A textDocument/inlineCompletion request, bounded."""
    params = types.InlineCompletionParams(
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(line, character),
    )
    result = await asyncio.wait_for(editor.text_document_inline_completion_async(params), ANSWER_SECONDS)
    assert isinstance(result, types.InlineCompletionList), result
    return result


def insert(editor: EditorClient, uri: str, line: int, character: int, text: str) -> None:
    """An incremental didChange inserting `text` at a position."""
    editor.version += 1
    at = types.Position(line, character)
    editor.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version=editor.version + 1, uri=uri),
            [types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)],
        )
    )


async def logged(editor: EditorClient, needle: str) -> list[str]:
    """The server's stderr once a line holding `needle` arrived (bounded)."""
    async with asyncio.timeout(ANSWER_SECONDS):
        while not any(needle in line for line in editor.stderr):
            await asyncio.sleep(0.05)
    return editor.stderr


async def test_accepting_replaces_the_word_in_the_negotiated_encoding(editor: EditorClient) -> None:
    encoding = editor.position_encoding
    uri = open_document(editor, editor.workspace_path / f"groesse-{encoding}.py", GROESSE)
    line = GROESSE.split("\n")[2]
    result = await completion(editor, uri, 2, units(line, encoding))
    assert result.items, "the model completes the name"
    item = result.items[0]
    assert item.text_edit is not None and item.text_edit.new_text.startswith("größe")
    after = accepted(GROESSE, item, encoding).split("\n")[2]
    assert after == 'print("😀", ' + item.text_edit.new_text, after
    # Ghost text goes at the cursor, counted the same way.
    ghost = await inline(editor, uri, 2, units(line, encoding))
    assert [entry.range and entry.range.start.character for entry in ghost.items] == [units(line, encoding)]


async def test_form_feed_and_line_separators_do_not_shift_lines(editor: EditorClient) -> None:
    # Python and LSP break lines only at \n, \r\n and \r; str.splitlines also breaks at these.
    text = "# a\x0c b\u2028 c\x85 d\x1c e\n\n" + ADD
    uri = open_document(editor, editor.workspace_path / f"breaks-{editor.position_encoding}.py", text)
    assert [item.text_edit.new_text for item in (await completion(editor, uri, 3, 11)).items] == ["a + b"]
    # Edits after those characters land where the editor put them: accepting, then a new function below.
    insert(editor, uri, 3, 11, "a + b")
    insert(editor, uri, 4, 0, "\ndef mul(a, b):\n    return ")
    assert [item.text_edit.new_text for item in (await completion(editor, uri, 6, 11)).items] == ["a * b"]


async def test_a_document_never_opened_or_closed_gets_an_empty_answer(editor: EditorClient) -> None:
    never = (editor.workspace_path / "never-opened.py").as_uri()
    assert not (await completion(editor, never, 1, 11)).items
    assert not (await inline(editor, never, 1, 11)).items
    # On disk but not open: the editor's text is what counts, not the file's.
    on_disk = editor.workspace_path / "on-disk.py"
    on_disk.write_text(ADD)
    uri = open_document(editor, on_disk, ADD)
    editor.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
    assert not (await completion(editor, uri, 1, 11)).items
    # Edits and saves of a document that is not open are ignored too.
    insert(editor, never, 0, 0, "x = 1\n")
    editor.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(never)))
    lines = await logged(editor, "never-opened.py")
    assert not any("Traceback" in line for line in lines), "".join(lines)


async def test_a_lone_surrogate_in_an_open_document_does_not_stop_completion(editor: EditorClient) -> None:
    encoding = editor.position_encoding
    # JSON can carry "\ud800" on its own; Python decodes it into a string that UTF-8 cannot encode.
    text = "BROKEN = '\ud800'\n" + ADD
    broken = open_document(editor, editor.workspace_path / f"surrogate-{encoding}.py", text)
    assert [item.text_edit.new_text for item in (await completion(editor, broken, 2, 11)).items] == ["a + b"]
    # Edited, it goes into the context of the other documents' prompts: they are answered (the suggestion itself
    # depends on that context).
    settings = types.DidChangeConfigurationParams(settings={"contextChunks": 2})
    editor.workspace_did_change_configuration(settings)
    insert(editor, broken, 0, 0, "'\udc00'\n")
    other = open_document(editor, editor.workspace_path / f"beside-surrogate-{encoding}.py", ADD)
    await completion(editor, other, 1, 11)
    editor.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=ISOLATED))


async def test_positions_past_the_end_and_unknown_uri_schemes(editor: EditorClient) -> None:
    encoding = editor.position_encoding
    uri = open_document(editor, editor.workspace_path / f"ends-{encoding}.py", "def add(a, b):\n    return ")
    # Past the end of the line: LSP says the line's end is meant.
    result = await completion(editor, uri, 1, 500)
    assert [item.text_edit.new_text for item in result.items] == ["a + b"]
    edit = result.items[0].text_edit
    assert isinstance(edit, types.TextEdit) and edit.range.end == types.Position(1, 11), edit
    # Past the end of the file: nothing there to complete.
    assert not (await completion(editor, uri, 9, 0)).items
    assert not (await inline(editor, uri, 9, 0)).items
    # Below zero is no position at all: an error at once, one sentence, rather than a request never answered.
    with attrs.validators.disabled():  # lsprotocol would refuse to build it
        nowhere = types.CompletionParams(types.TextDocumentIdentifier(uri), types.Position(-1, -5))
    with pytest.raises(JsonRpcInvalidParams, match="position"):
        await asyncio.wait_for(editor.text_document_completion_async(nowhere), 30)
    # An edit there is ignored, with a line in the log; the document stays as it was.
    with attrs.validators.disabled():
        before_start = types.Range(types.Position(-1, 0), types.Position(-1, 0))
        change = types.TextDocumentContentChangePartial(range=before_start, text="oops")
    identifier = types.VersionedTextDocumentIdentifier(version=editor.version + 1, uri=uri)
    editor.text_document_did_change(types.DidChangeTextDocumentParams(identifier, [change]))
    lines = await logged(editor, "textDocument/didChange notification")
    assert not any("Traceback" in line for line in lines), "".join(lines)
    assert [item.text_edit.new_text for item in (await completion(editor, uri, 1, 11)).items] == ["a + b"]
    # An unsaved buffer (VS Code's untitled:) completes like a file.
    untitled = f"untitled:Untitled-{encoding}"
    editor.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(untitled, "python", 1, "def sub(a, b):\n    return \n"))
    )
    assert [item.text_edit.new_text for item in (await completion(editor, untitled, 1, 11)).items] == ["a - b"]


async def test_a_huge_line_answers_without_an_error(editor: EditorClient) -> None:
    encoding = editor.position_encoding
    # A minified bundle's line: far beyond the context window.
    huge = "DATA = '" + "ab, " * 300_000 + "'"
    uri = open_document(editor, editor.workspace_path / f"huge-{encoding}.py", ADD + huge + "\n")
    assert not (await completion(editor, uri, 2, units(huge, encoding))).items
    assert not (await completion(editor, uri, 2, 50)).items
    # The lines around it still complete.
    assert [item.text_edit.new_text for item in (await completion(editor, uri, 1, 11)).items] == ["a + b"]
