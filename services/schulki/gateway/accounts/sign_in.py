"""Who the login form's name and password belong to: the school's LDAP directory first (when on), then schulki's own accounts.

A person the directory knows signs in as their directory account (directory_accounts.py), with role and classes
read again now. A name and password the directory refuses may still be a local account: the first admin, who must
get in while the directory is being set up or is down. With ``gateway.local_passwords = "admins"`` local passwords
sign in admins only; everyone else signs in through the directory.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool

from schulki.config import GatewayConfig
from schulki.gateway.accounts.database import Account, Accounts
from schulki.gateway.accounts.directory_accounts import DirectoryAccounts, SignInRefused
from schulki.gateway.accounts.ldap_directory import DirectoryUnavailable, LdapDirectory

log = logging.getLogger(__name__)


class DirectoryDown(Exception):
    """The directory could not be asked and no local account matched: nobody can tell whether the password is right."""


class PasswordSignIn:
    def __init__(self, config: GatewayConfig, accounts: Accounts) -> None:
        self.config = config
        self.accounts = accounts
        self.directory_accounts = DirectoryAccounts(accounts)

    def _local(self, name: str, password: str) -> Account | None:
        account = self.accounts.check_password(name, password)
        if account is None or (self.config.local_passwords == "admins" and account.role != "admin"):
            return None
        return account

    async def check(self, name: str, password: str) -> Account | None:
        """The account for this name and password, or None; SignInRefused (its message a key of web/i18n.py) when the directory gives the person no role,
        DirectoryDown when the directory is unreachable and no local admin matched."""
        down = False
        if self.config.ldap.enabled:
            try:
                answer = await run_in_threadpool(LdapDirectory(self.config.ldap).authenticate, name, password)
            except DirectoryUnavailable as error:
                log.warning("the LDAP directory cannot be asked: %s", error)
                down = True
            else:
                if answer.person is not None:
                    return await run_in_threadpool(self.directory_accounts.sign_in, answer.person)
                if answer.role_missing:
                    raise SignInRefused("login_no_role")
        account = await run_in_threadpool(self._local, name, password)
        if account is None and down:
            raise DirectoryDown
        return account
