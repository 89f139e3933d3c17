"""The school CA on the lab PCs (deploy/roles/schulki_trust), as Ansible installs it into a folder that stands in for a
lab PC's / (tests/trust_root.py): Debian's real update-ca-certificates puts it into the system bundle, Chromium's
managed policy and Firefox's policies.json name it, and a real Chromium given that policy (in a mount namespace of
its own, so the machine's /etc/chromium stays as it is) opens the gateway's page by name without a warning, where
the same browser without the policy refuses it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from schulki.certificates import ensure_ca, ensure_certificate

from tests.test_deploy_ansible import DEPLOY, ansible, recap
from tests.trust_root import trust_vars

GATEWAY = "ki-gateway.schule.example"
PASSPHRASE = "korrekt-pferd-batterie-heftklammer"


@pytest.fixture(scope="module")
def lab_pc(tmp_path_factory):
    base = tmp_path_factory.mktemp("trust")
    tls = base / "credentials" / "tls"
    ensure_ca(tls, permitted=["schule.example", "127.0.0.0/8"], passphrase=PASSPHRASE)
    ensure_certificate(tls, GATEWAY, [GATEWAY], tls, ca_passphrase=PASSPHRASE)
    root = base / "lab01"
    school_policies = root / "etc" / "firefox" / "policies" / "policies.json"
    school_policies.parent.mkdir(parents=True)
    school_policies.write_text(json.dumps({"policies": {"DisableTelemetry": True}}))
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **trust_vars(root)}
    inventory = {"schulki_cpu_nodes": {"hosts": {"lab01": host}}, "schulki_lab_pcs": {"hosts": {}}}
    (base / "hosts.yml").write_text(yaml.safe_dump(inventory))
    play = [
        {"name": "Install the school CA on a test lab PC", "hosts": "schulki_cpu_nodes", "gather_facts": False, "roles": ["schulki_trust"]}
    ]
    (base / "trust.yml").write_text(yaml.safe_dump(play))
    (base / "ansible.cfg").write_text(f"[defaults]\nroles_path = {DEPLOY / 'roles'}\nfilter_plugins = {DEPLOY / 'filter_plugins'}\n")
    runs = [ansible("ansible-playbook", "-i", "hosts.yml", "trust.yml", cwd=base, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    return base, root, runs


def test_the_system_trust_store_vouches_for_the_gateway_and_a_second_run_changes_nothing(lab_pc):
    base, root, runs = lab_pc
    bundle = root / "etc" / "ssl" / "certs" / "ca-certificates.crt"
    ca_pem = (base / "credentials" / "tls" / "ca.crt").read_text()
    assert ca_pem.strip() in bundle.read_text()
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(bundle), "-verify_hostname", GATEWAY, str(base / "credentials" / "tls" / f"{GATEWAY}.crt")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert recap(runs[0].stdout)["lab01"]["changed"] > 0 and recap(runs[1].stdout)["lab01"]["changed"] == 0, runs[1].stdout[-3000:]
    everything = "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())
    assert "PRIVATE KEY" not in everything, "the CA's key never leaves the admin's machine"


def test_chromium_and_firefox_policies_name_the_school_ca_and_keep_the_schools_own(lab_pc):
    base, root, _ = lab_pc
    ca = x509.load_pem_x509_certificate((base / "credentials" / "tls" / "ca.crt").read_bytes())
    chromium = json.loads((root / "etc" / "chromium" / "policies" / "managed" / "schulki-ca.json").read_text())
    assert chromium == {"CACertificates": [base64.b64encode(ca.public_bytes(Encoding.DER)).decode()]}
    firefox = json.loads((root / "etc" / "firefox" / "policies" / "policies.json").read_text())["policies"]
    installed = root / "usr" / "local" / "share" / "ca-certificates" / "schulki-ca.crt"
    assert firefox == {"DisableTelemetry": True, "Certificates": {"Install": [str(installed)]}}
    assert x509.load_pem_x509_certificate(installed.read_bytes()) == ca


def test_a_key_given_as_the_ca_certificate_is_refused(tmp_path):
    sys.path.insert(0, str(DEPLOY / "filter_plugins"))
    try:
        from schulki_trust import schulki_firefox_policies, schulki_pem_der_base64
    finally:
        sys.path.pop(0)
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match="no certificate"):
        schulki_pem_der_base64("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(AnsibleFilterError, match="leaves it alone"):
        schulki_firefox_policies("{not json", "/x.crt")
    twice = schulki_firefox_policies(json.dumps(schulki_firefox_policies("", "/x.crt")), "/x.crt")
    assert twice == {"policies": {"Certificates": {"Install": ["/x.crt"]}}}


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="a private /etc/chromium needs root and unshare")
def test_chromium_with_the_policy_opens_the_gateway_page_without_a_warning_and_without_it_refuses(lab_pc, tmp_path):
    from playwright import sync_api

    from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS
    from tests.browser.test_school_ca_browser import https_page

    base, root, _ = lab_pc
    # The lab PC's /etc/chromium (with the policy the role wrote) in a mount namespace of this browser's own.
    wrapper = tmp_path / "chromium-on-the-lab-pc"
    wrapper.write_text(
        f'#!/bin/sh\nexec unshare --mount sh -c \'mount --bind "$0" /etc/chromium && exec "$1" "$@"\' '
        f'{root / "etc" / "chromium"} {CHROMIUM} "$@"\n'
    )
    wrapper.chmod(0o755)
    tls = base / "credentials" / "tls"
    resolve = f"--host-resolver-rules=MAP {GATEWAY} 127.0.0.1"  # on loopback, nothing leaves
    with https_page(tls / f"{GATEWAY}.crt", tls / f"{GATEWAY}.key") as port, sync_api.sync_playwright() as playwright:
        for executable, trusted in ((str(wrapper), True), (CHROMIUM, False)):
            browser = playwright.chromium.launch(
                executable_path=executable, args=[*LAUNCH_ARGS, resolve], env={**os.environ, "HOME": str(tmp_path)}
            )
            try:
                page = browser.new_page()
                if trusted:
                    page.goto(f"https://{GATEWAY}:{port}/", timeout=60_000)
                    assert "schulki" in page.content()
                else:
                    with pytest.raises(sync_api.Error, match="ERR_CERT_AUTHORITY_INVALID"):
                        page.goto(f"https://{GATEWAY}:{port}/", timeout=60_000)
            finally:
                browser.close()
