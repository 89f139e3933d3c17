"""The flag table on a real accounts database: who sees which flags, the user's own export, retention and deletion."""

from __future__ import annotations

import time

import pytest
from schulki.gateway.accounts.database import Accounts
from schulki.gateway.moderation.flags import Flags, TeachersOnly


@pytest.fixture()
def school(tmp_path):
    accounts = Accounts(f"sqlite:///{tmp_path / 'accounts.sqlite3'}")
    people = {
        name: accounts.add_user(name, role, classes).account
        for name, role, classes in (
            ("kind", "student", ["7a"]),
            ("andere", "student", ["7b"]),
            ("lehrerin", "teacher", ["7a"]),
            ("kollege", "teacher", ["7b"]),
            ("kollegin", "teacher", ["7a"]),  # a teacher of 7a too: her own flags are not for her colleague
            ("admin", "admin", []),
        )
    }
    flags = Flags(accounts.engine)
    flags.add(people["kind"].id, "self_harm", "block", "input", None)
    flags.add(people["andere"].id, "violence", "block", "input", "Text")
    flags.add(people["kollegin"].id, "sexual", "block", "input", None)
    return accounts, flags, people


def test_each_role_sees_the_flags_it_may(school):
    accounts, flags, people = school
    assert [(f.user, f.category) for f in flags.visible_to(people["lehrerin"], accounts)] == [("kind", "self_harm")]
    assert [(f.user, f.category) for f in flags.visible_to(people["kollege"], accounts)] == [("andere", "violence")]
    assert {f.user for f in flags.visible_to(people["admin"], accounts)} == {"kind", "andere", "kollegin"}
    for student in ("kind", "andere"):
        with pytest.raises(TeachersOnly):
            flags.visible_to(people[student], accounts)


def test_the_users_own_flags_their_retention_and_deletion(school):
    _accounts, flags, people = school
    assert [f["category"] for f in flags.of_user(people["kind"].id)] == ["self_harm"]
    assert flags.purge(days=1) == 0
    assert flags.purge(days=1, now=time.time() + 2 * 86400) == 3  # past their period: all gone
    flags.add(people["kind"].id, "self_harm", "block", "output", None)
    assert flags.forget_user(people["kind"].id) == 1
    assert flags.of_user(people["kind"].id) == []
