"""Which roles may use the agent mode: the admin's choice in the Admin tab, stored as a setting in the accounts database
(every gateway on it agrees), else ``gateway.agents.roles``. Admins may always use it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schulki.gateway.accounts.database import Account

if TYPE_CHECKING:
    from schulki.gateway.context import Gateway

SETTING = "agent_roles"
"""The setting's key: the roles, comma-separated ("" once the admin turned it off for both)."""
SWITCHABLE = ("student", "teacher")
"""The roles the admin switches; admins themselves always may."""


def agent_roles(gateway: Gateway) -> list[str]:
    """The roles besides admin that may use the agent mode now."""
    stored = gateway.accounts.get_setting(SETTING, ",".join(gateway.config.gateway.agents.roles))
    return [role for role in stored.split(",") if role in SWITCHABLE]


def set_agent_roles(gateway: Gateway, roles: object) -> list[str]:
    """Store the roles that may use the agent mode (anything but "student" and "teacher" in a list is dropped)."""
    chosen = [role for role in SWITCHABLE if isinstance(roles, list) and role in roles]
    gateway.accounts.set_setting(SETTING, ",".join(chosen))
    return chosen


def agent_allowed(gateway: Gateway, account: Account) -> bool:
    return account.role == "admin" or account.role in agent_roles(gateway)
