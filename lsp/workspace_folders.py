"""The folders the editor opened as the workspace, and the name each file in them goes by.

An editor opens one folder or several: `workspaceFolders` at `initialize`
(VS Code's multi-root workspaces), changed later by
`workspace/didChangeWorkspaceFolders`; an older editor sends only `rootUri` or
`rootPath`, the one folder then. Every folder is indexed.

A file's name, in the index and in the prompt, is its path in its folder.
With several folders the folder's name comes first (`lib/shapes/geometry.py`):
two folders often hold files of the same path (`setup.py`, `tests/conftest.py`),
which must not stand for each other; and to the model, and to the index's
module names, a second folder then reads as the top-level package it usually
is. A file in two folders (one nested in the other) goes by the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pygls.uris import to_fs_path
from pygls.workspace import Workspace

from .documents import readable_uri, without_surrogates
from .workspace_files import workspace_path


@dataclass(frozen=True)
class NamedFolder:
    """One folder of the workspace."""

    path: Path
    prefix: str
    """What the names of its files start with: "" in a workspace of one folder, else the folder's name."""

    def name(self, relative: str) -> str:
        """The name of the file at `relative` in this folder."""
        return f"{self.prefix}/{relative}" if self.prefix else relative


@dataclass(frozen=True)
class WorkspaceFolders:
    """The workspace's folders, in the editor's order."""

    folders: tuple[NamedFolder, ...]

    @classmethod
    def of(cls, workspace: Workspace) -> WorkspaceFolders:
        """The folders of `workspace`, as pygls keeps them from `initialize` and the changes since: its workspace
        folders, else its root. A folder that is no local path (another URI scheme, a URI that cannot be taken
        apart) is left out, and so is the same folder given twice."""
        paths: list[str] = []
        for folder in workspace.folders.values():
            path = to_fs_path(folder.uri) if readable_uri(folder.uri) else None
            if path:
                paths.append(path)
        if not paths and workspace.root_path:
            paths.append(workspace.root_path)
        unique = list(dict.fromkeys(os.path.normpath(without_surrogates(path)) for path in paths))
        if len(unique) == 1:
            return cls((NamedFolder(Path(unique[0]), ""),))
        taken: set[str] = set()
        folders: list[NamedFolder] = []
        for path in unique:
            base = Path(path).name or "root"
            prefix, count = base, 1
            while prefix in taken:  # two folders of the same name (`app/src` and `lib/src`)
                count += 1
                prefix = f"{base}-{count}"
            taken.add(prefix)
            folders.append(NamedFolder(Path(path), prefix))
        return cls(tuple(folders))

    def __bool__(self) -> bool:
        return bool(self.folders)

    def name_of(self, path: str) -> str | None:
        """The name of the file at `path`; None outside every folder (after `..` steps)."""
        found = self.locate(path)
        return found[0] if found else None

    def locate(self, path: str) -> tuple[str, Path] | None:
        """The name of the file at `path`, and where it is with the `..` steps taken (as they were to find its
        folder); None outside every folder."""
        for folder in self.folders:
            relative = workspace_path(str(folder.path), path)
            if relative is not None:
                return folder.name(relative), folder.path / relative
        return None
