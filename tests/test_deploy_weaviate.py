"""Weaviate as compose.yaml runs it: uid 0 with every capability dropped, no new privileges, a read-only root.

No Docker engine runs here, so the pinned server binary (``./dev test`` builds it) is started in a mount and
network namespace of its own with what compose.yaml's weaviate service asks for: the root file system
remounted read-only, its two volumes and /tmp writable, the bounding set emptied, no_new_privs set, and the
service's environment with compose's defaults. It must come up, store an object and write a backup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.weaviate_support import weaviate_binary

COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())

PROBE = textwrap.dedent(
    """
    import json, sys, time, urllib.request
    headers = {"Authorization": "Bearer " + sys.argv[1], "Content-Type": "application/json"}
    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request("http://127.0.0.1:8080" + path, data=data, headers=headers, method=method)
        return json.loads(urllib.request.urlopen(request, timeout=30).read() or b"{}")
    for _ in range(120):
        try:
            urllib.request.urlopen("http://127.0.0.1:8080/v1/.well-known/ready", timeout=2)
            break
        except OSError:
            time.sleep(1)
    call("POST", "/v1/schema", {"class": "Probe", "vectorizer": "none", "properties": [{"name": "text", "dataType": ["text"]}]})
    call("POST", "/v1/objects", {"class": "Probe", "properties": {"text": "hallo"}, "vector": [0.1, 0.2, 0.3]})
    call("POST", "/v1/backups/filesystem", {"id": "probe"})
    for _ in range(60):
        status = call("GET", "/v1/backups/filesystem/probe").get("status")
        if status in ("SUCCESS", "FAILED"):
            break
        time.sleep(1)
    print(json.dumps({"backup": status}))
    """
)


def _environment(volume: Path) -> dict[str, str]:
    """compose.yaml's environment of the weaviate service with its defaults, its volumes under `volume`."""
    service = COMPOSE["services"]["weaviate"]
    env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in service["environment"].items()}
    env.update(
        PERSISTENCE_DATA_PATH=str(volume / "data"),
        BACKUP_FILESYSTEM_PATH=str(volume / "backups"),
        AUTHENTICATION_APIKEY_ALLOWED_KEYS="probe-key-0123456789",  # secrets/weaviate.env
        CLUSTER_ADVERTISE_ADDR="127.0.0.1",  # the namespace has loopback only
        RAFT_BOOTSTRAP_EXPECT="1",
        GO_PROFILING_DISABLE="true",
        TMPDIR=str(volume / "tmp"),  # compose's tmpfs /tmp
        PATH=os.environ["PATH"],
    )
    return env


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for the namespaces")
@pytest.mark.skipif(not weaviate_binary().exists(), reason="the pinned Weaviate server is not built (./dev test builds it)")
def test_weaviate_serves_and_backs_up_as_root_without_capabilities_on_a_read_only_root(tmp_path):
    service = COMPOSE["services"]["weaviate"]
    assert service["read_only"] and service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
    volume = Path("/tmp") / f"schulki-weaviate-ro-{os.getpid()}"  # a mount point inside the namespace only
    (tmp_path / "probe.py").write_text(PROBE)
    script = f"""
        set -e
        ip link set lo up
        mount --make-rprivate /
        mkdir -p {volume}
        mount -t tmpfs tmpfs {volume}
        mkdir {volume}/data {volume}/backups {volume}/tmp
        cp {tmp_path}/probe.py {volume}/probe.py
        mount -o remount,bind,ro /
        for m in $(awk '$2 != "/" && $2 != "{volume}" && $2 !~ "^/(proc|sys|dev)" {{print $2}}' /proc/self/mounts); do
            mount -o remount,bind,ro "$m" 2>/dev/null || true
        done
        cd /
        setpriv --inh-caps=-all --bounding-set=-all --no-new-privs -- {weaviate_binary()} --scheme http --host 127.0.0.1 --port 8080 \\
            > {volume}/tmp/log 2>&1 &
        server=$!
        python3 {volume}/probe.py probe-key-0123456789 || true
        grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/$server/status
        touch /probe-write 2>/dev/null && echo "root is writable" || echo "root is read-only"
        ls {volume}/backups
        kill $server
        wait $server || true
        tail -5 {volume}/tmp/log
        rm -f /probe-write
    """
    try:
        run = subprocess.run(
            ["unshare", "--mount", "--net", "sh", "-c", script], env=_environment(volume), capture_output=True, text=True, timeout=300
        )
    finally:
        if volume.exists():
            volume.rmdir()  # the empty mount point the namespace made on this machine's /tmp
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))["backup"] == "SUCCESS", output
    assert "CapEff:\t0000000000000000" in output and "CapBnd:\t0000000000000000" in output and "NoNewPrivs:\t1" in output
    assert "root is read-only" in output and "probe" in run.stdout.split("root is read-only", 1)[1], output
