"""Signing in through the school's LDAP directory: a real slapd with a school's tree (tests/ldap_support.py), the gateway
on a real port, the login form in a real browser and through HTTP.

The gateway runs without its model services: sign-in, roles, classes and workspaces are the gateway's and its
accounts database's business.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import ldap3
import pytest
from pydantic import ValidationError
from schulki.config import Config, LdapConfig
from schulki.gateway.accounts.directory_accounts import DirectoryAccounts

from tests.conftest import shared_tls
from tests.gateway_stack import running_stack, stack_config
from tests.ldap_support import BASE, PASSWORDS, USERS_FILTER, running_slapd
from tests.security.conftest import gradio_call

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def slapd():
    with running_slapd() as server:
        yield server


def ldap_settings(slapd) -> dict:
    return {
        "enabled": True,
        "url": slapd.url,
        "ca_file": slapd.ca_file,
        "search_base": BASE,
        "user_filter": USERS_FILTER,
        "group_base": f"ou=groups,{BASE}",
        "group_filter": "(member={dn})",
        "role_groups": {"schueler": "student", "lehrer": "teacher", "schulki-admins": "admin"},
        "class_group_pattern": "^schule-(.+)$",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory, slapd):
    folder = tmp_path_factory.mktemp("ldap")
    config = stack_config(folder)
    config.gateway.ldap = LdapConfig(**ldap_settings(slapd))
    with running_stack(folder, services=(), config=config) as running:
        yield running


@pytest.fixture()
def settings(stack, slapd):
    """The stack's sign-in settings, restored after a test that changes them."""
    gateway = stack.config.gateway
    saved = (gateway.ldap, gateway.local_passwords)
    yield gateway
    gateway.ldap, gateway.local_passwords = saved


def sign_in(stack, name: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=stack.url, timeout=60) as client:
        return client.post("/login", data={"name": name, "password": password})


def browser_of(stack, response: httpx.Response) -> httpx.Client:
    assert response.status_code == 303, response.text
    return httpx.Client(base_url=stack.url, timeout=60, cookies={"schulki_session": response.cookies["schulki_session"]})


def workspace_labels(stack, name: str) -> list[str]:
    with browser_of(stack, sign_in(stack, name, PASSWORDS[name])) as client:
        status, event, data = gradio_call(client, "documents_workspaces", [])
    assert (status, event) == (200, "complete"), data
    return [choice[0] for choice in data[0]["choices"]]


def test_student_and_teacher_sign_in_in_the_browser_with_role_and_class_from_the_directory(stack):
    """A student and a teacher (a teacher through a nested group) type their directory passwords into the login page
    and land in their role, with their class's workspace and nobody else's."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", trust])
        try:
            for name, role, own, foreign in (("anna", "student", "Klasse 7a", "Klasse 7b"), ("weber", "teacher", "Klasse 7a", "Klasse 7b")):
                context = browser.new_context(locale="de-DE")
                page = context.new_page()
                page.set_default_timeout(90_000)
                page.goto(stack.url + "/")
                assert "/login" in page.url
                page.fill("#name", name)
                page.fill("#password", PASSWORDS[name])
                page.click("button[type=submit]")
                page.wait_for_selector("#header >> text=Angemeldet als")
                assert f"{name} ({role})" in page.inner_text("#header")
                page.get_by_role("tab", name="Dokumente").click()
                page.click("#workspace input")
                options = page.locator("ul[role=listbox] li").all_inner_texts()
                assert own in options and foreign not in options, options
                assert any("Meine Dokumente" in option for option in options), options
                context.close()
        finally:
            browser.close()
    anna, weber = stack.gateway.accounts.by_name("anna"), stack.gateway.accounts.by_name("weber")
    assert (anna.role, anna.classes, weber.role, weber.classes) == ("student", ("7a",), "teacher", ("7a",))
    directory = DirectoryAccounts(stack.gateway.accounts)
    assert directory.is_directory_account(anna.id) and directory.is_directory_account(weber.id)


def test_a_student_removed_from_the_class_group_loses_the_class_at_the_next_sign_in(stack, slapd):
    """ben is moved from 7b to 7a in the directory: at his next sign-in 7b's workspace is gone and 7a's is there."""
    assert "Klasse 7b" in workspace_labels(stack, "ben")
    ben = f"uid=ben,ou=schueler,{BASE}"
    with slapd.connection() as admin:
        # a groupOfNames may not be empty: ben leaves 7b, a placeholder (as UCS leaves one) stays
        assert admin.modify(f"cn=schule-7b,ou=groups,{BASE}", {"member": [(ldap3.MODIFY_REPLACE, [f"cn=leer,{BASE}"])]})
        assert admin.modify(f"cn=schule-7a,ou=groups,{BASE}", {"member": [(ldap3.MODIFY_ADD, [ben])]})
    labels = workspace_labels(stack, "ben")
    assert "Klasse 7b" not in labels and "Klasse 7a" in labels, labels
    assert stack.gateway.accounts.by_name("ben").classes == ("7a",)


def test_a_disabled_student_cannot_sign_in_with_her_right_password(stack):
    response = sign_in(stack, "carla", PASSWORDS["carla"])
    assert response.status_code == 401
    assert "Benutzername oder Passwort ist falsch" in response.text
    assert stack.gateway.accounts.by_name("carla") is None


def test_a_wrong_or_empty_password_is_refused(stack):
    """An empty password would be an LDAP "unauthenticated bind", which directories answer with success."""
    assert sign_in(stack, "anna", "falsch-falsch").status_code == 401
    assert sign_in(stack, "anna", "").status_code == 401
    assert sign_in(stack, "anna*", PASSWORDS["anna"]).status_code == 401  # a filter wildcard in the name finds nobody
    assert sign_in(stack, "nobody", "whatever-1").status_code == 401


def test_a_person_in_no_role_group_is_told_so(stack, settings, slapd):
    settings.ldap = LdapConfig(**{**ldap_settings(slapd), "role_groups": {"schueler": "student", "lehrer": "teacher"}})
    response = sign_in(stack, "ada", PASSWORDS["ada"])
    assert response.status_code == 403
    assert "keiner Gruppe" in response.text


def test_an_admin_comes_from_the_admins_group_and_sees_the_admin_tab(stack):
    with browser_of(stack, sign_in(stack, "ada", PASSWORDS["ada"])) as client:
        _status, event, data = gradio_call(client, "whoami", [])
    assert event == "complete" and "ada</b> (admin)" in data[0]
    assert data[1]["visible"] is True


def test_local_passwords_for_admins_only_keep_the_first_admin_and_refuse_other_local_accounts(stack, settings):
    admin, student = stack.add_user("erster-admin", "admin"), stack.add_user("lokal-schueler", "student")
    settings.local_passwords = "admins"
    assert sign_in(stack, "erster-admin", admin.password).status_code == 303
    assert sign_in(stack, "lokal-schueler", student.password).status_code == 401
    assert sign_in(stack, "anna", PASSWORDS["anna"]).status_code == 303  # the directory still signs everyone in
    settings.local_passwords = "everyone"
    assert sign_in(stack, "lokal-schueler", student.password).status_code == 303


def test_a_local_account_of_the_same_name_is_not_taken_over(stack, slapd):
    """A local account 'ada2' exists; the directory's person named ada2 gets an account of their own."""
    local = stack.add_user("ada2", "student", ("9c",))
    with slapd.connection() as admin:
        assert admin.add(
            f"uid=ada2,ou=lehrer,{BASE}",
            ["inetOrgPerson"],
            {"uid": "ada2", "cn": "Ada Zwei", "sn": "Zwei", "userPassword": "ada2-passwort-1"},
        )
        assert admin.modify(f"cn=lehrer,ou=groups,{BASE}", {"member": [(ldap3.MODIFY_ADD, [f"uid=ada2,ou=lehrer,{BASE}"])]})
    with browser_of(stack, sign_in(stack, "ada2", "ada2-passwort-1")) as client:
        _status, _event, data = gradio_call(client, "whoami", [])
    assert "(teacher)" in data[0] and "<b>ada2</b>" not in data[0]
    assert stack.gateway.accounts.by_name("ada2") == local.account  # untouched: still a student of 9c
    assert sign_in(stack, "ada2", local.password).status_code == 303  # and the local password still signs in the local one


def test_a_directory_account_is_deleted_and_exported_as_any_other(stack):
    sign_in(stack, "anna", PASSWORDS["anna"])
    anna = stack.gateway.accounts.by_name("anna")
    assert stack.gateway.accounts.export_data(anna.id)["account"]["classes"] == ["7a"]
    key = stack.gateway.accounts.reset_password("anna")
    assert key.password == "" and httpx.get(stack.url + "/v1/models", headers={"Authorization": f"Bearer {key.api_key}"}).status_code != 401
    stack.gateway.accounts.delete_user(anna.id)
    assert sign_in(stack, "anna", PASSWORDS["anna"]).status_code == 303
    again = stack.gateway.accounts.by_name("anna")
    assert again.id != anna.id and again.classes == ("7a",)


def test_a_directory_whose_certificate_is_not_trusted_is_not_asked(stack, settings, slapd, tmp_path):
    """The directory's certificate is checked: with another CA the password is never sent, and the page says the directory is down."""
    from schulki.certificates import ensure_ca

    other = ensure_ca(tmp_path, common_name="eine andere CA")
    settings.ldap = LdapConfig(**{**ldap_settings(slapd), "ca_file": other.cert_file})
    response = sign_in(stack, "anna", PASSWORDS["anna"])
    assert response.status_code == 503
    assert "Schulverzeichnis antwortet gerade nicht" in response.text


def test_a_plain_ldap_url_without_start_tls_is_refused_by_the_settings():
    with pytest.raises(ValidationError, match="start_tls"):
        Config(gateway={"ldap": {"url": "ldap://dc.schule.lan", "start_tls": False}})
    assert Path(Config(gateway={"ldap": {"url": "ldaps://dc.schule.lan"}}).data_dir)
