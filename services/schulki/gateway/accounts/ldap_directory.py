"""The login form's check against the school's LDAP directory (paedML, linuxmuster, UCS@school, Active Directory).

One sign-in: connect over LDAPS or StartTLS (the server's certificate and name checked), search the person with the
search account (or anonymously) through ``user_filter``, bind as the person with the password typed, then read the
person's groups (and the groups those are in, for nested groups) with the search account again. A disabled account is
left out by the filter, so it is not found; a wrong password fails the bind. ldap3 is blocking: callers run this in a
thread.
"""

from __future__ import annotations

import logging
import math
import ssl
from dataclasses import dataclass

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from schulki.config import LdapConfig
from schulki.gateway.accounts.directory_accounts import DirectoryPerson, role_and_classes

log = logging.getLogger(__name__)

ISSUER = "ldap"
"""The issuer of every LDAP account: the school has one directory, and entryUUIDs are unique across servers."""
NESTING_LEVELS = 8


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, TLS refused, a search failed): nobody can sign in through it now."""


@dataclass(frozen=True)
class LdapAnswer:
    """What the directory said: the person (role None when no group gives one), or nothing for a wrong name or password."""

    person: DirectoryPerson | None
    role_missing: bool = False


def _first_value(entry: ldap3.abstract.entry.Entry, attribute: str) -> str:
    values = entry.entry_attributes_as_dict.get(attribute) or []
    value = values[0] if values else ""
    return value.hex() if isinstance(value, bytes) else str(value)


def _group_name(dn: str) -> str:
    try:
        return str(parse_dn(dn)[0][1])
    except (LDAPException, IndexError):
        return dn


class LdapDirectory:
    def __init__(self, config: LdapConfig) -> None:
        self.config = config

    def _server(self) -> ldap3.Server:
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(self.config.ca_file) if self.config.ca_file else None,
            version=ssl.PROTOCOL_TLS_CLIENT,  # checks the host name too
        )
        return ldap3.Server(self.config.url, tls=tls, connect_timeout=self.config.timeout_s, get_info=ldap3.NONE)

    def _connection(self, user: str | None, password: str | None) -> ldap3.Connection:
        """A bound connection; LDAPBindError for refused credentials, DirectoryUnavailable when the server cannot be reached."""
        server = self._server()
        ldaps = self.config.url.lower().startswith("ldaps://")
        bind = ldap3.AUTO_BIND_NO_TLS if ldaps else ldap3.AUTO_BIND_TLS_BEFORE_BIND
        try:
            return ldap3.Connection(
                server,
                user,
                password,
                auto_bind=bind,
                receive_timeout=math.ceil(self.config.timeout_s),
                raise_exceptions=False,
                read_only=True,
            )
        except (LDAPBindError, LDAPInvalidCredentialsResult):
            raise
        except LDAPException as error:
            raise DirectoryUnavailable(str(error)) from error

    def _search_connection(self) -> ldap3.Connection:
        password = self.config.bind_password_file.read_text().strip() if self.config.bind_password_file else None
        try:
            return self._connection(self.config.bind_dn or None, password if self.config.bind_dn else None)
        except (LDAPBindError, LDAPInvalidCredentialsResult) as error:
            raise DirectoryUnavailable(f"the search account {self.config.bind_dn!r} was refused") from error

    def _search(self, connection: ldap3.Connection, base: str, query: str, attributes: list[str]) -> list:
        if not connection.search(base, query, attributes=attributes, size_limit=1000):
            if connection.result.get("result") in (0, 32):  # success with nothing found, or no such base
                return []
            raise DirectoryUnavailable(f"search under {base!r} failed: {connection.result.get('description')}")
        return list(connection.entries)

    def _groups(self, connection: ldap3.Connection, dn: str, name: str) -> list[str]:
        """The DNs of the person's groups, and with nested_groups the groups those are in (breadth first, at most 8 levels)."""
        base = self.config.group_base or self.config.search_base
        found: dict[str, None] = {}
        members = [(dn, name)]
        for _level in range(NESTING_LEVELS if self.config.nested_groups else 1):
            next_members = []
            for member_dn, member_name in members:
                query = self.config.group_filter.format(dn=escape_filter_chars(member_dn), name=escape_filter_chars(member_name))
                for entry in self._search(connection, base, query, ["cn"]):
                    group_dn = entry.entry_dn
                    if group_dn.lower() not in (known.lower() for known in found):
                        found[group_dn] = None
                        next_members.append((group_dn, _first_value(entry, "cn") or _group_name(group_dn)))
            if not next_members:
                break
            members = next_members
        return list(found)

    def authenticate(self, name: str, password: str) -> LdapAnswer:
        """The person for a right name and password; LdapAnswer(None) for a wrong one; DirectoryUnavailable if unreachable."""
        if not name or not password:  # an empty password is an "unauthenticated bind", which servers accept: never try it
            return LdapAnswer(None)
        attributes = [a for a in (self.config.id_attribute, self.config.name_attribute) if a]
        with self._search_connection() as search:
            query = self.config.user_filter.format(name=escape_filter_chars(name))
            people = self._search(search, self.config.search_base, query, attributes)
            if len(people) != 1:
                if len(people) > 1:
                    log.warning("the directory's user_filter finds %d entries for one name: nobody signs in with it", len(people))
                return LdapAnswer(None)
            entry = people[0]
            dn = entry.entry_dn
            try:
                self._connection(dn, password).unbind()
            except (LDAPBindError, LDAPInvalidCredentialsResult):
                return LdapAnswer(None)
            directory_name = _first_value(entry, self.config.name_attribute) if self.config.name_attribute else name
            subject = _first_value(entry, self.config.id_attribute) if self.config.id_attribute else dn
            if not subject:
                raise DirectoryUnavailable(f"the directory gave no {self.config.id_attribute} for a person")
            group_dns = self._groups(search, dn, directory_name)
        names = [part for group_dn in group_dns for part in (group_dn, _group_name(group_dn))]
        role, classes = role_and_classes(self.config, names)
        if role is None:
            return LdapAnswer(None, role_missing=True)
        return LdapAnswer(DirectoryPerson(ISSUER, subject, directory_name or name, role, classes))
