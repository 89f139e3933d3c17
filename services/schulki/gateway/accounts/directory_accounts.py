"""Accounts that the school's directory signs in (LDAP or OIDC): schulki's own records, kept up to date at each sign-in.

A person from the directory is known by issuer and subject (LDAP: ``ldap`` and the entry's entryUUID; OIDC: the
provider's issuer URL and the ``sub`` claim), never by name: a local account of the same name is never taken over,
and a renamed person keeps their chats. Their record is an ordinary ``users`` row (quotas, workspaces, keys, retention,
export and deletion work as for anyone), with a password hash that no password matches, so only the directory signs
them in. Role and classes are replaced at every sign-in with what the directory says now: a student who left a class
group has left the class and its workspace.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from schulki.config import DirectoryMappingSection
from schulki.gateway.accounts.database import (
    CLASS_PATTERN,
    NAME_PATTERN,
    Account,
    Accounts,
    LoginSession,
    Membership,
    User,
    create_tables,
    new_api_key,
)

log = logging.getLogger(__name__)

DIRECTORY_PASSWORD = "directory:"
"""The start of a directory account's password hash: not an argon2 hash, so no password ever matches it."""
ROLE_RANK = {"student": 0, "teacher": 1, "admin": 2}


class SignInRefused(Exception):
    """The directory knows the person but schulki may not sign them in; the message is a key of web/i18n.py's strings."""


@dataclass(frozen=True)
class DirectoryPerson:
    """What the directory says about a person at this sign-in."""

    issuer: str
    subject: str
    name: str
    """The name the directory gives (uid, preferred_username); may be empty for pseudonymous providers."""
    role: str
    classes: tuple[str, ...]


def role_and_classes(mapping: DirectoryMappingSection, groups: Iterable[str]) -> tuple[str | None, tuple[str, ...]]:
    """The role (None: none of role_groups, no default_role) and the classes that the person's groups give."""
    roles = {key.lower(): role for key, role in mapping.role_groups.items()}
    class_names = {key.lower(): name for key, name in mapping.class_groups.items()}
    pattern = re.compile(mapping.class_group_pattern, re.IGNORECASE) if mapping.class_group_pattern else None
    role: str | None = None
    classes: dict[str, None] = {}
    for group in groups:
        key = group.lower()
        found = roles.get(key)
        if found is not None and (role is None or ROLE_RANK[found] > ROLE_RANK[role]):
            role = found
        class_name = class_names.get(key)
        if class_name is None and pattern is not None and (match := pattern.search(group)):
            class_name = match.group(1) if match.groups() else match.group(0)
        if class_name is not None:
            if CLASS_PATTERN.match(class_name):
                classes[class_name] = None
            else:
                log.warning("directory group %r gives the class %r, which is no valid class name: left out", group, class_name)
    return role or mapping.default_role, tuple(sorted(classes))


class _Base(DeclarativeBase):
    pass


class DirectoryIdentity(_Base):
    __tablename__ = "directory_identities"

    issuer: Mapped[str] = mapped_column(String(255), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey(User.__table__.c.id, ondelete="CASCADE"), unique=True, index=True)


def _local_name(db: Session, person: DirectoryPerson, user_id: int | None) -> str:
    """The directory's name where it is a valid name no other account has, else one made from issuer and subject."""
    wanted = person.name.strip()
    if NAME_PATTERN.match(wanted):
        holder = db.scalar(select(User.id).where(User.name == wanted))
        if holder is None or holder == user_id:
            return wanted
    digest = hashlib.sha256(f"{person.issuer}\n{person.subject}".encode()).hexdigest()[:10]
    prefix = wanted if NAME_PATTERN.match(wanted) and len(wanted) <= 36 else "schulkonto"
    return f"{prefix}-{digest}"


class DirectoryAccounts:
    """The records of people the directory signs in."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        create_tables(accounts.engine, _Base.metadata)
        self._session = sessionmaker(accounts.engine, expire_on_commit=False)

    def sign_in(self, person: DirectoryPerson) -> Account:
        """The person's account, created at their first sign-in, with role and classes as the directory says now."""
        if len(person.issuer) > 255 or len(person.subject) > 255 or not person.subject:
            raise SignInRefused("login_bad_identity")
        with self._session.begin() as db:
            identity = db.get(DirectoryIdentity, (person.issuer, person.subject))
            user = db.get(User, identity.user_id) if identity else None
            if user is None:
                user = User(
                    name=_local_name(db, person, None),
                    role=person.role,
                    password_hash=DIRECTORY_PASSWORD + secrets.token_hex(8),
                    api_key_hash=hashlib.sha256(new_api_key().encode()).hexdigest(),  # nobody knows it; an admin hands out a new one
                )
                db.add(user)
                db.flush()
                db.add(DirectoryIdentity(issuer=person.issuer, subject=person.subject, user_id=user.id))
            else:
                user.name = _local_name(db, person, user.id) if person.name.strip() != user.name else user.name
                if user.role != person.role:  # a new role: sessions opened under the old one end
                    db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
                user.role = person.role
            db.execute(delete(Membership).where(Membership.user_id == user.id))
            for class_name in person.classes:
                db.add(Membership(user_id=user.id, class_name=class_name))
            db.flush()
            classes = tuple(sorted(person.classes))
            return Account(user.id, user.name, user.role, classes)

    def issuer_of(self, user_id: int) -> str | None:
        """Which directory signs this account in (``ldap`` or an OIDC issuer URL); None for a local account."""
        with self._session() as db:
            return db.scalar(select(DirectoryIdentity.issuer).where(DirectoryIdentity.user_id == user_id))

    def is_directory_account(self, user_id: int) -> bool:
        return self.issuer_of(user_id) is not None
