"""Which roles may use the agent mode: the admin's choice in the Admin tab, stored as a setting in the accounts database
(every gateway on it agrees), else ``gateway.agents.roles``. Admins may always use it."""

from __future__ import annotations

from schulki.config import AgentsConfig
from schulki.gateway.accounts.database import Account, Accounts

SETTING = "agent_roles"
"""The setting's key: the roles, comma-separated ("" once the admin turned it off for both)."""
SWITCHABLE = ("student", "teacher")
"""The roles the admin switches; admins themselves always may."""


def agent_roles(accounts: Accounts, settings: AgentsConfig) -> list[str]:
    """The roles besides admin that may use the agent mode now."""
    stored = accounts.get_setting(SETTING, ",".join(settings.roles))
    return [role for role in stored.split(",") if role in SWITCHABLE]


def set_agent_roles(accounts: Accounts, roles: object) -> list[str]:
    """Store the roles that may use the agent mode (anything but "student" and "teacher" in a list is dropped)."""
    chosen = [role for role in SWITCHABLE if isinstance(roles, list) and role in roles]
    accounts.set_setting(SETTING, ",".join(chosen))
    return chosen


def agent_allowed(accounts: Accounts, settings: AgentsConfig, account: Account) -> bool:
    return account.role == "admin" or account.role in agent_roles(accounts, settings)
