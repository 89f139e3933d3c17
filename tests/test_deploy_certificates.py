"""The roll-out's certificate module (deploy/library/schulki_certificate.py) as Ansible runs it: made once, then
unchanged, renewed before it runs out, and check mode that writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from schulki.certificates import ensure_certificate, load_certificate

from tests.conftest import REPO_ROOT

VENV_BIN = Path(sys.executable).parent


def certificate(*args: str, check: bool = False) -> dict:
    """Run the module once on localhost with ansible's ad-hoc command; its result."""
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
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads(run.stdout.split("=>", 1)[1])  # one line: "localhost | CHANGED => {...}"


def test_the_module_makes_renews_and_leaves_alone(tmp_path):
    folder = f"folder={tmp_path}"
    assert certificate(folder, "name=ca")["changed"]
    assert not certificate(folder, "name=ca")["changed"], "a second run changes nothing"
    names = "names=gw.schule.example,10.0.0.5,embeddings"
    made = certificate(folder, "name=gw", names, "valid_days=20")
    assert made["changed"] and made["reason"] == "made" and made["days_left"] < 21
    planned = certificate(folder, "name=gw", names, check=True)
    assert planned["changed"] and planned["reason"] == "would be renewed"
    assert load_certificate(tmp_path / "gw.crt").not_valid_after_utc == load_certificate(Path(made["cert_file"])).not_valid_after_utc
    renewed = certificate(folder, "name=gw", names)
    assert renewed["changed"] and renewed["reason"] == "expires soon" and renewed["days_left"] > 390
    assert not certificate(folder, "name=gw", names)["changed"]
    assert not ensure_certificate(tmp_path, "gw", ["gw.schule.example", "10.0.0.5", "embeddings"], tmp_path).changed
    assert (tmp_path / "gw.key").stat().st_mode & 0o777 == 0o600 and (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
