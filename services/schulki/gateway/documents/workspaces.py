"""Which workspaces a user may see and change: the one rule the Dokumente tab and the API both ask.

A user sees their private workspace ``u-<id>``, the workspaces they created
through the API (``u-<id>-<random>``, named by them) and the workspaces of
their classes ``k-<class>``. They may change their own; a class workspace
only teachers and admins of that class may change, students only read it.
Every other workspace does not exist for them: callers answer as for a
workspace that does not exist at all, so nobody learns which others exist.
"""

from __future__ import annotations

from typing import Protocol

from schulki.gateway.accounts.database import Account, Accounts, Workspace
from schulki.gateway.documents.stores import Stores


class WorkspaceSources(Protocol):
    """What the rule reads: the accounts (private and class workspaces) and the user's stores. Named as a protocol so
    the Gateway, which asks this rule, and the rule do not import each other."""

    @property
    def accounts(self) -> Accounts: ...

    @property
    def stores(self) -> Stores: ...


class WorkspaceRefused(Exception):
    """A workspace the user may not use as asked: ``read_only`` when they may read but not change it, else unknown to them."""

    def __init__(self, name: str, read_only: bool):
        super().__init__(name)
        self.name = name
        self.read_only = read_only


def visible_workspaces(gateway: WorkspaceSources, account: Account) -> list[Workspace]:
    """The private workspace, the user's own stores, then their classes' workspaces."""
    found = gateway.accounts.workspaces(account)
    stores = [Workspace(store.workspace, store.name, True) for store in gateway.stores.owned(account.id)]
    return found[:1] + stores + found[1:]


def workspace_access(gateway: WorkspaceSources, account: Account, name: str, write: bool = False) -> Workspace:
    """The workspace, when the user may read it (and change it, with ``write``); WorkspaceRefused otherwise."""
    for workspace in visible_workspaces(gateway, account):
        if workspace.name == name:
            if write and not workspace.writable:
                raise WorkspaceRefused(name, read_only=True)
            return workspace
    raise WorkspaceRefused(name, read_only=False)
