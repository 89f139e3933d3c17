"""The roll-out's certificate module (deploy/library/schulki_certificate.py) as Ansible runs it: made once, then
unchanged, renewed before it runs out, and check mode that writes nothing; a CA that signs only for the school's
names, with its key encrypted; and a credentials folder git never takes in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from schulki.certificates import ensure_ca, ensure_certificate, load_certificate, school_subtrees

from tests.conftest import REPO_ROOT
from tests.tls_support import (
    forge,
    grpc_handshake_error,
    openssl_accepts,
    python_ssl_error,
    rollout_ca_permitted,
    rollout_host_names,
    server_verifier_accepts,
)

PASSPHRASE = "ca_passphrase=korrekt-pferd-batterie-heftklammer"
SCHOOL = "permitted=schule.example,10.0.0.0/24,localhost,127.0.0.0/8,embeddings"

VENV_BIN = Path(sys.executable).parent


def certificate(*args: str, check: bool = False, fails: bool = False) -> dict:
    """Run the module once on localhost with ansible's ad-hoc command; its result (or, when it must fail, its output)."""
    temp = Path(tempfile.gettempdir()) / "schulki-ansible-tmp"
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(temp),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCALHOST_WARNING": "0",
    }
    run = subprocess.run(
        [
            str(VENV_BIN / "ansible"),
            "localhost",
            "-M",
            str(REPO_ROOT / "deploy" / "library"),
            "-m",
            "schulki_certificate",
            "-a",
            " ".join(args),
            "-o",
            *(["--check"] if check else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if fails:
        assert run.returncode != 0, run.stdout[-3000:]
        return {"output": run.stdout + run.stderr}
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads(run.stdout.split("=>", 1)[1])  # one line: "localhost | CHANGED => {...}"


def test_the_module_makes_renews_and_leaves_alone(tmp_path):
    folder = f"folder={tmp_path}"
    assert certificate(folder, "name=ca", SCHOOL, PASSPHRASE)["changed"]
    assert not certificate(folder, "name=ca", SCHOOL, PASSPHRASE)["changed"], "a second run changes nothing"
    names = "names=gw.schule.example,embeddings"
    made = certificate(folder, "name=gw", names, "valid_days=20", PASSPHRASE)
    assert made["changed"] and made["reason"] == "made" and made["days_left"] < 21
    planned = certificate(folder, "name=gw", names, PASSPHRASE, check=True)
    assert planned["changed"] and planned["reason"] == "would be renewed"
    assert load_certificate(tmp_path / "gw.crt").not_valid_after_utc == load_certificate(Path(made["cert_file"])).not_valid_after_utc
    renewed = certificate(folder, "name=gw", names, PASSPHRASE)
    assert renewed["changed"] and renewed["reason"] == "expires soon" and renewed["days_left"] > 390
    assert not certificate(folder, "name=gw", names, PASSPHRASE)["changed"]
    assert not ensure_certificate(tmp_path, "gw", ["gw.schule.example", "embeddings"], tmp_path).changed
    assert (tmp_path / "gw.key").stat().st_mode & 0o777 == 0o600 and (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600


def test_the_credentials_folder_is_ignored_by_git():
    """A school's CA key, host keys and tokens never reach a commit by `git add inventory/`."""
    for path in ("inventory/gymnasium-musterstadt/credentials/tls/ca.key", "inventory/example/credentials/tokens/ki-gpu08"):
        run = subprocess.run(["git", "check-ignore", "--no-index", "-v", path], cwd=REPO_ROOT, capture_output=True, text=True)
        assert run.returncode == 0 and "credentials" in run.stdout, f"{path} is not ignored: {run.stdout}{run.stderr}"
    run = subprocess.run(["git", "check-ignore", "--no-index", "inventory/gymnasium-musterstadt/hosts.yml"], cwd=REPO_ROOT)
    assert run.returncode == 1, "the inventory itself stays in git"


def test_the_school_ca_signs_only_for_the_schools_names_and_networks(tmp_path):
    """Attack: whoever copies the credentials folder signs a certificate for another web site with the CA's key;
    the devices that trust the school CA must refuse it."""
    folder = f"folder={tmp_path}"
    certificate(folder, "name=ca", SCHOOL, PASSPHRASE)
    ca = load_certificate(tmp_path / "ca.crt")
    constraint = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraint.critical and constraint.value.excluded_subtrees is None
    certificate(folder, "name=gw", "names=ki-gw.schule.example,localhost,embeddings", PASSPHRASE)
    accepted, said = openssl_accepts(tmp_path / "ca.crt", tmp_path / "gw.crt")
    assert accepted, said
    assert server_verifier_accepts(tmp_path / "ca.crt", tmp_path / "gw.crt", "ki-gw.schule.example")
    assert server_verifier_accepts(tmp_path / "ca.crt", tmp_path / "gw.crt", "embeddings")
    secret = PASSPHRASE.split("=", 1)[1]
    for name in ("www.google.com", "schule.example.evil.com", "8.8.8.8", "10.0.1.5"):
        forged = forge(tmp_path, name, tmp_path / f"forged-{name}.pem", secret)
        accepted, said = openssl_accepts(tmp_path / "ca.crt", forged)
        assert not accepted and "subtree violation" in said, f"{name}: {said}"
        assert not server_verifier_accepts(tmp_path / "ca.crt", forged, name), name
    # The module refuses to sign such a name at all, and says what the CA permits.
    refused = certificate(folder, "name=evil", "names=www.google.com", PASSPHRASE, fails=True)["output"]
    assert "www.google.com: outside the names the CA may sign for" in refused and "schule.example" in refused
    assert not (tmp_path / "evil.crt").exists()
    # A CA without a list of names is refused: it could sign for any.
    assert "permitted" in certificate(f"folder={tmp_path / 'other'}", "name=ca", PASSPHRASE, fails=True)["output"]


def test_the_cas_names_come_from_the_inventorys_domains_and_networks():
    hosts = ["ki-gateway.schule.example", "ki-gpu08.schule.example", "pc-raum112-01.schule.example", "lab01", "pc1.lan"]
    assert school_subtrees(hosts, ["10.1.2.3", "10.1.2.0/255.255.255.0", "192.168.5.7/24"], ["ki.gymnasium.de"]) == [
        "localhost",
        "127.0.0.0/8",
        "::1/128",
        "schule.example",
        "lab01",
        "pc1.lan",
        "10.1.2.0/24",
        "192.168.5.0/24",
        "ki.gymnasium.de",
    ], "one entry per domain, a host name of two labels stands for itself, networks cover their addresses"
    with pytest.raises(ValueError, match="neither a host name"):
        school_subtrees([], [], ["bad..name"])


def test_a_ca_that_permits_fewer_names_is_renewed_with_both_and_one_without_constraints_is_replaced(tmp_path):
    folder = f"folder={tmp_path}"
    first = certificate(folder, "name=ca", SCHOOL, PASSPHRASE)
    key = (tmp_path / "ca.key").read_bytes()
    grown = certificate(folder, "name=ca", "permitted=gymnasium.de,10.0.0.0/24", PASSPHRASE)
    assert grown["changed"] and grown["reason"] == "renewed: it permits more names" and (tmp_path / "ca.key").read_bytes() == key
    assert any("now also permits gymnasium.de" in note for note in grown["notes"]), grown
    permitted = load_certificate(tmp_path / "ca.crt").extensions.get_extension_for_class(x509.NameConstraints).value.permitted_subtrees
    assert {x509.DNSName("schule.example"), x509.DNSName("gymnasium.de")} <= set(permitted or []), "a run never takes a name away"
    assert not certificate(folder, "name=ca", "permitted=schule.example", PASSPHRASE)["changed"]
    # A CA from before name constraints vouches for every name: it is made again, with a new key.
    old = tmp_path / "old"
    ensure_ca(old, passphrase="korrekt-pferd-batterie-heftklammer")
    ensure_certificate(old, "gw", ["gw.schule.example"], old, ca_passphrase="korrekt-pferd-batterie-heftklammer")
    old_key = (old / "ca.key").read_bytes()
    replaced = certificate(f"folder={old}", "name=ca", SCHOOL, PASSPHRASE)
    assert replaced["reason"] == "made again: the old CA had no name constraints" and (old / "ca.key").read_bytes() != old_key
    assert any("install the new ca.crt on every device" in note for note in replaced["notes"]), replaced
    assert certificate(f"folder={old}", "name=gw", "names=gw.schule.example", PASSPHRASE)["reason"] == "signed by another CA"
    assert first["changed"]


def test_the_ca_key_is_encrypted_and_signs_only_with_its_passphrase(tmp_path):
    folder = f"folder={tmp_path}"
    certificate(folder, "name=ca", SCHOOL, PASSPHRASE)
    assert (tmp_path / "ca.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert certificate(folder, "name=gw", "names=gw.schule.example", PASSPHRASE)["changed"]
    assert (tmp_path / "gw.key").read_text().startswith("-----BEGIN PRIVATE KEY-----"), "a host's service reads its key unattended"
    missing = certificate(folder, "name=gw2", "names=gw2.schule.example", "ca_passphrase=", fails=True)["output"]
    assert "schulki_stack_tls_ca_passphrase" in missing
    wrong = certificate(folder, "name=gw2", "names=gw2.schule.example", "ca_passphrase=falsch-falsch-falsch", fails=True)["output"]
    assert "the passphrase does not open this key" in wrong and "korrekt" not in wrong
    assert not (tmp_path / "gw2.crt").exists()
    with pytest.raises(ValueError, match="is encrypted: its passphrase is needed"):
        ensure_certificate(tmp_path, "gw2", ["gw2.schule.example"], tmp_path)
    # A key from before is encrypted by the next run, and the CA stays the same.
    plain = tmp_path / "plain"
    ensure_ca(plain, permitted=SCHOOL.removeprefix("permitted=").split(","))
    assert (plain / "ca.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    cert = (plain / "ca.crt").read_bytes()
    encrypted = certificate(f"folder={plain}", "name=ca", SCHOOL, PASSPHRASE)
    assert encrypted["changed"] and (plain / "ca.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert encrypted["reason"] == "key encrypted" and (plain / "ca.crt").read_bytes() == cert


def test_the_rollouts_certificates_pass_grpcs_own_tls_check_for_every_name_dialled(tmp_path):
    """gRPC checks a certificate with BoringSSL, not OpenSSL: the gateway must reach a node, and its own retrieval and
    embeddings, with the CA and certificates the roll-out makes (its module, its task's names, its CA's entries), by the
    name it dials (settings: the inventory name, compose's service names; health checks: SCHULKI_TLS_SERVER_NAME, the
    inventory name), and browsers and Python's ssl the gateway's page by the name students type.

    The test hosts' LAN address is 127.0.0.1, so each dial is real, on loopback."""
    gateway, node, address = "ki-gw.schule.example", "ki-gpu08.schule.example", "127.0.0.1"
    folder = f"folder={tmp_path}"
    certificate(
        folder, "name=ca", "permitted=" + ",".join(rollout_ca_permitted([gateway, node], address, "127.0.0.0/255.0.0.0")), PASSPHRASE
    )
    for host, kind in ((gateway, "gateway"), (node, "gpu")):
        certificate(folder, f"name={host}", "names=" + ",".join(rollout_host_names(host, address, kind)), PASSPHRASE)
    ca = tmp_path / "ca.crt"
    for host, dialled in ((node, node), (gateway, "embeddings"), (gateway, "retrieval"), (gateway, gateway)):
        error = grpc_handshake_error(tmp_path / f"{host}.crt", tmp_path / f"{host}.key", ca, dialled)
        assert error is None, f"gRPC to {dialled} ({host}'s certificate): {error}"
    error = python_ssl_error(tmp_path / f"{gateway}.crt", tmp_path / f"{gateway}.key", ca, gateway)
    assert error is None, f"HTTPS to {gateway}: {error}"
    # A host certificate from a run before names only is made again by the next run, under the same CA.
    ca_before = ca.read_bytes()
    ensure_certificate(tmp_path, node, [node, address, "localhost", "127.0.0.1"], tmp_path, ca_passphrase=PASSPHRASE.split("=", 1)[1])
    before = grpc_handshake_error(tmp_path / f"{node}.crt", tmp_path / f"{node}.key", ca, node)
    assert "unsupported name constraint type" in (before or ""), before
    again = certificate(
        folder, "name=ca", "permitted=" + ",".join(rollout_ca_permitted([gateway, node], address, "127.0.0.0/8")), PASSPHRASE
    )
    renamed = certificate(folder, f"name={node}", "names=" + ",".join(rollout_host_names(node, address, "gpu")), PASSPHRASE)
    assert not again["changed"] and ca.read_bytes() == ca_before and renamed["reason"] == "the names changed"
    assert grpc_handshake_error(tmp_path / f"{node}.crt", tmp_path / f"{node}.key", ca, node) is None
    # A host named by its address in the inventory (or an address among its extra names) stops the run with the reason.
    refused = certificate(folder, "name=10.0.0.7", "names=10.0.0.7,localhost", PASSPHRASE, fails=True)["output"]
    assert "10.0.0.7 is an address" in refused and "unsupported name constraint type" in refused and "inventory" in refused
    assert not (tmp_path / "10.0.0.7.crt").exists()
