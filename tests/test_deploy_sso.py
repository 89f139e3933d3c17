"""The roll-out's sign-in settings: the inventory's schulki_stack_ldap / schulki_stack_oidc become the gateway's
[gateway.ldap] / [gateway.oidc] in schulki.toml, their secrets come from the credentials folder as container secrets,
and the result is valid schulki settings. (The whole playbook runs in test_deploy_ansible.py; this renders the
gateway's settings template alone, with Ansible's lookup and filters played by small functions.)"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jinja2
import yaml
from schulki.config import Config

from tests.conftest import REPO_ROOT

ROLE = REPO_ROOT / "deploy" / "roles" / "schulki_stack"


def render(credentials: Path, **inventory) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined)
    environment.filters.update(
        to_json=json.dumps,
        bool=bool,
        schulki_gateway_nodes=lambda _groups, _hostvars: {"gpu": [], "cpu": []},
        regex_replace=lambda values, _pattern, _replacement: values,
    )

    def lookup(kind: str, path: str, errors: str = "strict") -> str:
        assert kind == "ansible.builtin.file" and errors == "ignore"
        return Path(path).read_text() if Path(path).exists() else ""

    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables = {
        **{key: value for key, value in defaults.items() if not isinstance(value, str) or "{{" not in value},
        "ansible_managed": "test",
        "inventory_hostname": "gateway",
        "groups": {},
        "hostvars": {},
        "lookup": lookup,
        "schulki_stack_credentials_dir": str(credentials),
        "schulki_plan_result": {"kind": "gateway", "chat": None, "settings": {}},
        **inventory,
    }
    return environment.get_template("schulki.toml.j2").render(**variables)


def test_the_inventorys_directory_settings_become_the_gateways_and_secrets_come_from_the_credentials_folder(tmp_path):
    (tmp_path / "sso").mkdir()
    (tmp_path / "sso" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    ldap = {
        "enabled": True,
        "url": "ldaps://dc.schule.lan:636",
        "search_base": "ou=schule,dc=schule,dc=lan",
        "bind_dn": "uid=schulki,cn=users,dc=schule,dc=lan",
        "role_groups": {"lehrer-schule": "teacher", "schueler-schule": "student"},
        "class_group_pattern": "^schule-(.+)$",
    }
    oidc = {"enabled": True, "issuer": "https://ucs-sso.schule.lan/realms/ucs", "client_id": "schulki", "role_claim": "groups"}
    text = render(tmp_path, schulki_stack_ldap=ldap, schulki_stack_oidc=oidc, schulki_stack_local_passwords="admins")
    settings = tomllib.loads(text)["gateway"]
    assert settings["local_passwords"] == "admins"
    assert settings["ldap"]["bind_password_file"] == "/run/secrets/ldap_bind_password"
    assert settings["ldap"]["role_groups"] == ldap["role_groups"]
    assert settings["oidc"]["client_secret_file"] == "/run/secrets/oidc_client_secret"
    assert settings["ldap"]["ca_file"] == settings["oidc"]["ca_file"] == "/run/secrets/sso_ca"
    config = Config(gateway=settings)
    assert config.gateway.ldap.url == "ldaps://dc.schule.lan:636" and config.gateway.oidc.client_id == "schulki"


def test_without_directory_settings_there_is_no_directory_sign_in(tmp_path):
    settings = tomllib.loads(render(tmp_path))["gateway"]
    assert "ldap" not in settings and "oidc" not in settings
    assert Config(gateway=settings).gateway.local_passwords == "everyone"


def test_the_gateway_container_gets_the_directory_secrets():
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    assert {"ldap_bind_password", "oidc_client_secret", "sso_ca"} <= set(compose["services"]["gateway"]["secrets"])
    tasks = (ROLE / "tasks" / "main.yml").read_text()
    for name in ("ldap_bind_password", "oidc_client_secret", "sso_ca.crt"):
        assert f"name: {name}" in tasks and f"/sso/{name.replace('sso_', '')}" in tasks
