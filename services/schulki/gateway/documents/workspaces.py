"""Which workspaces a user may see and change: the rule ``Gateway.workspaces`` and ``Gateway.workspace_access`` keep.

A user sees their private workspace ``u-<id>``, the workspaces they created
through the API (``u-<id>-<random>``, named by them) and the workspaces of
their classes ``k-<class>``. They may change their own; a class workspace
only teachers and admins of that class may change, students only read it.
Every other workspace does not exist for them: callers answer as for a
workspace that does not exist at all, so nobody learns which others exist.
The Gateway asks the rule inside each use case that names a workspace (the
Dokumente tab's, the vector stores', the document questions' and the
whole-document work's); the tabs and routes never ask it themselves.
"""

from __future__ import annotations


class WorkspaceRefused(Exception):
    """A workspace the user may not use as asked: ``read_only`` when they may read but not change it, else unknown to them."""

    def __init__(self, name: str, read_only: bool):
        super().__init__(name)
        self.name = name
        self.read_only = read_only
