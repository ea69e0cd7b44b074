"""Static tools resolve `ingle.*` like any installed package (the strict editable install's link tree).

Python itself would import ingle through an import hook too; a type checker does not run hooks, so
this runs the checker the project uses on a file outside the repository, as an editor would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """\
from ingle.adapters.client import IngleClient
from ingle.bots.conversation import ConversationCore
from ingle.core.engine import Engine
from ingle.lsp.server import IngleLanguageServer

reveal_type(Engine)
reveal_type(IngleClient)
reveal_type(ConversationCore)
reveal_type(IngleLanguageServer)
not_an_engine: int = Engine
"""


def type_check(folder: Path, source: str) -> list[dict]:
    """basedpyright's diagnostics for one file in `folder`, checked against this Python's packages."""
    checker = Path(sys.executable).with_name("basedpyright")
    assert checker.exists(), f"{checker} is missing: install the dev extra (`make install`)"
    (folder / "probe.py").write_text(source)
    result = subprocess.run(
        [str(checker), "--outputjson", "--pythonpath", sys.executable, "probe.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(result.stdout)["generalDiagnostics"]


def test_the_type_checker_resolves_ingle_imports_to_their_classes(tmp_path: Path) -> None:
    diagnostics = type_check(tmp_path, PROBE)

    unresolved = [d["message"] for d in diagnostics if d.get("rule") == "reportMissingImports"]
    assert unresolved == []
    revealed = [d["message"] for d in diagnostics if d["severity"] == "information"]
    assert revealed == [
        'Type of "Engine" is "type[Engine]"',
        'Type of "IngleClient" is "type[IngleClient]"',
        'Type of "ConversationCore" is "type[ConversationCore]"',
        'Type of "IngleLanguageServer" is "type[IngleLanguageServer]"',
    ]
    # The classes are known, not Unknown: a wrong use of one is an error.
    wrong = [d for d in diagnostics if d.get("rule") == "reportAssignmentType"]
    assert len(wrong) == 1 and '"type[Engine]" is not assignable to declared type "int"' in wrong[0]["message"]
