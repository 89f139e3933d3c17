"""Certificate renewal at 60 days left from the admin's machine (deploy/renew-certificates, deploy/renewal.py): it runs
the playbook only when a certificate of the school's credentials folder is due, with the vault password from a file
only its owner reads, and installs a weekly systemd user timer for one school."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from schulki.certificates import ensure_ca, ensure_certificate

from tests.conftest import REPO_ROOT

PASSPHRASE = "korrekt-pferd-batterie-heftklammer"
RENEW = REPO_ROOT / "deploy" / "renew-certificates"


@pytest.fixture
def school(tmp_path):
    """An inventory whose credentials hold the CA (ten years) and a gateway certificate with 90 days left."""
    inventory = tmp_path / "gymnasium-musterstadt"
    tls = inventory / "credentials" / "tls"
    ensure_ca(tls, permitted=["schule.example"], passphrase=PASSPHRASE)
    ensure_certificate(tls, "ki-gw.schule.example", ["ki-gw.schule.example"], tls, valid_days=90, renew_days=0, ca_passphrase=PASSPHRASE)
    vault = tmp_path / "vault-pass"
    vault.write_text("the-vault-password\n")
    vault.chmod(0o600)
    return inventory, tls, vault


def renew(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RENEW), *args], capture_output=True, text=True, timeout=120)


def test_nothing_is_run_at_90_days_and_the_playbook_is_at_50(school):
    inventory, tls, vault = school
    quiet = renew("-i", str(inventory), "--vault-password-file", str(vault), "--dry-run")
    assert quiet.returncode == 0 and "nothing to renew: the first certificate ends in 90 days" in quiet.stdout, quiet.stdout + quiet.stderr
    ensure_certificate(
        tls, "ki-gpu08.schule.example", ["ki-gpu08.schule.example"], tls, valid_days=50, renew_days=0, ca_passphrase=PASSPHRASE
    )
    due = renew("-i", str(inventory), "--vault-password-file", str(vault), "--dry-run")
    assert due.returncode == 0 and "due for renewal: ki-gpu08.schule.example (50 days left)" in due.stdout, due.stdout + due.stderr
    assert "ki-gw" not in due.stdout.split("would run:")[0]
    command = due.stdout.split("would run: ", 1)[1]
    assert f"-i {inventory}" in command and f"--vault-password-file {vault}" in command and "-e schulki_stack_tls_renew_days=60" in command
    assert command.split()[0].endswith(".venv/bin/ansible-playbook") and "deploy/site.yml" in command
    # What that playbook run then does to the certificate (the role's module with renew_days 60): a new one, 397 days.
    renewed = ensure_certificate(tls, "ki-gpu08.schule.example", ["ki-gpu08.schule.example"], tls, renew_days=60, ca_passphrase=PASSPHRASE)
    assert renewed.changed and renewed.reason == "expires soon"
    assert "nothing to renew" in renew("-i", str(inventory), "--vault-password-file", str(vault), "--dry-run").stdout


def test_a_vault_password_file_others_may_read_is_refused(school):
    inventory, _, vault = school
    vault.chmod(0o644)
    refused = renew("-i", str(inventory), "--vault-password-file", str(vault), "--dry-run")
    assert refused.returncode == 2 and "others may read it" in refused.stderr and "chmod 600" in refused.stderr


def test_the_timer_runs_the_renewal_of_this_school_once_a_week(school, tmp_path):
    inventory, _, vault = school
    units = tmp_path / "units"
    installed = renew(
        "-i", str(inventory), "--vault-password-file", str(vault), "--install-timer", "--no-enable", "--units-dir", str(units)
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    service = (units / "schulki-renew-gymnasium-musterstadt.service").read_text()
    timer = (units / "schulki-renew-gymnasium-musterstadt.timer").read_text()
    assert f"ExecStart={RENEW} -i {inventory} --vault-password-file {vault} --days 60" in service
    assert "OnCalendar=Sat *-*-* 03:00" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    assert "the-vault-password" not in service + timer
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", *map(str, units.iterdir())], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
