"""The stack role's checks, each run through ansible-playbook on this machine where it can be: the address a node
publishes its ports on, the images' digest pins, the health wait, the model files' pins and their pruning, and
the Ansible settings the README's commands use.

No Docker engine runs here: `docker` is tests/fake_docker.py, as in tests/test_deploy_ansible.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from tests.conftest import REPO_ROOT
from tests.test_deploy_ansible import DEPLOY, ansible


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stack_filters = _load(DEPLOY / "filter_plugins" / "schulki_stack.py", "schulki_stack_filters")
plan_filters = _load(DEPLOY / "filter_plugins" / "schulki.py", "schulki_plan_filters")
model_prune = _load(DEPLOY / "library" / "schulki_model_prune.py", "schulki_model_prune")
secret_files = _load(DEPLOY / "library" / "schulki_secret_files.py", "schulki_secret_files")

FACTS = {
    "default_ipv4": {"address": "10.20.14.57"},
    "all_ipv4_addresses": ["10.20.14.57", "192.168.50.14"],
    "all_ipv6_addresses": [],
    "interfaces": ["lo", "enp0s31f6", "enp2s0"],
    "enp0s31f6": {"ipv4": {"address": "10.20.14.57"}},
    "enp2s0": {"ipv4": {"address": "192.168.50.14"}},
}


def run_tasks(tmp_path: Path, tasks: list[dict], variables: dict, fake_docker: bool = False) -> subprocess.CompletedProcess:
    """A one-host play on this machine (local connection) with these tasks; `docker` is the stand-in where asked."""
    path = None
    if fake_docker:
        path = tmp_path / "bin"
        path.mkdir(parents=True)
        (path / "docker").write_text(f'#!/bin/sh\nexec {sys.executable} {REPO_ROOT / "tests" / "fake_docker.py"} "$@"\n')
        (path / "docker").chmod(0o755)
    play = [
        {
            "name": "Run the stack role's steps on this machine",
            "hosts": "localhost",
            "gather_subset": ["min", "network"],
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **variables},
            "tasks": tasks,
        }
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    return ansible("ansible-playbook", "-i", "localhost,", str(tmp_path / "play.yml"), cwd=tmp_path, timeout=300, path=path)


def include(role: str, tasks_from: str) -> dict:
    return {"name": f"Run the {tasks_from} steps of {role}", "ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from}}


# ------------------------------------------------------------------ the address a node publishes its ports on


def test_the_address_comes_from_the_inventory_never_from_the_dhcp_lease():
    address = stack_filters.schulki_node_address
    assert address("192.168.50.14", "pc01", facts=FACTS) == "192.168.50.14"
    assert address("", "pc01", interface="enp2s0", facts=FACTS) == "192.168.50.14"
    assert address("", "pc01", ansible_host="10.20.14.57", facts=FACTS) == "10.20.14.57"
    with pytest.raises(AnsibleFilterError, match=r"Keine feste Adresse.*default address 10\.20\.14\.57 may come from DHCP"):
        address("", "pc01", ansible_host="pc01.schule.example", facts=FACTS)
    with pytest.raises(AnsibleFilterError, match=r"keine Adresse dieses Rechners.*192\.168\.50\.14"):
        address("10.20.14.99", "pc01", facts=FACTS)
    with pytest.raises(AnsibleFilterError, match="keine IP-Adresse"):
        address("pc01.schule.example", "pc01", facts=FACTS)
    with pytest.raises(AnsibleFilterError, match=r"'wlan0' hat keine IPv4-Adresse.*enp0s31f6, enp2s0, lo"):
        address("", "pc01", interface="wlan0", facts=FACTS)


def test_a_node_without_a_named_address_stops_before_anything_is_written(tmp_path):
    stack = tmp_path / "stack"
    run = run_tasks(
        tmp_path,
        [include("schulki_stack", "main")],
        {"schulki_plan_node_kind": "cpu", "schulki_plan_result": {"kind": "cpu"}, "schulki_stack_dir": str(stack)},
    )
    assert run.returncode != 0 and "Keine feste Adresse für die gRPC-Ports genannt" in run.stdout, run.stdout[-3000:]
    assert not stack.exists()


# ------------------------------------------------------------------ images pinned by digest


def test_image_digests_are_checked_and_become_the_env_lines_compose_appends():
    pins = stack_filters.schulki_image_pins
    digest = "sha256:" + "ab" * 32
    assert pins({"inference-cpu": digest, "weaviate": digest}) == {
        "SCHULKI_IMAGE_DIGEST_INFERENCE_CPU": "@" + digest,
        "SCHULKI_IMAGE_DIGEST_WEAVIATE": "@" + digest,
    }
    assert pins({}) == {} and pins(None) == {}
    for wrong in ("ab" * 32, "sha256:" + "AB" * 32, "sha256:" + "ab" * 31, "sha512:" + "ab" * 64, "sha256:" + "ab" * 32 + "\n"):
        with pytest.raises(AnsibleFilterError, match="ist kein Digest"):
            pins({"gateway": wrong})
    with pytest.raises(AnsibleFilterError, match=r"unbekannter Dienst.*'inference'"):
        pins({"inference": digest})


def test_every_image_of_compose_yaml_takes_a_digest_and_reads_as_a_docker_reference():
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    assert set(compose["services"]) == set(stack_filters.PINNABLE)
    digest = "sha256:" + "0f" * 32
    for name, service in compose["services"].items():
        variable = "SCHULKI_IMAGE_DIGEST_" + name.upper().replace("-", "_")
        assert service["image"].endswith("${" + variable + ":-}"), name
        image = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m, pinned=variable: "@" + digest if m[1] == pinned else m[2], service["image"])
        # Docker's reference grammar: name[:tag][@sha256:hex], the tag kept for people, the digest for the pull.
        assert re.fullmatch(r"[a-z0-9.\-/]+(:[\w][\w.-]{0,127})?@sha256:[0-9a-f]{64}", image), image


def test_a_wrong_digest_in_the_inventory_stops_the_run_before_anything_is_written(tmp_path):
    stack = tmp_path / "stack"
    run = run_tasks(
        tmp_path,
        [include("schulki_stack", "main")],
        {
            "schulki_plan_node_kind": "cpu",
            "schulki_plan_result": {"kind": "cpu"},
            "schulki_stack_dir": str(stack),
            "schulki_stack_node_address": "127.0.0.1",
            "schulki_stack_image_digests": {"inference-cpu": "latest"},
        },
    )
    assert run.returncode != 0 and "'latest' ist kein Digest" in run.stdout, run.stdout[-3000:]
    assert not stack.exists()


# ------------------------------------------------------------------ the health wait


def _gateway_stack(tmp_path: Path) -> Path:
    stack = tmp_path / "gw" / "stack"
    stack.mkdir(parents=True)
    (stack / "compose.yaml").write_text((REPO_ROOT / "compose.yaml").read_text())
    (stack / ".env").write_text("COMPOSE_PROFILES=gateway\n")
    return stack


def test_a_container_that_exited_after_up_fails_the_run_and_is_named(tmp_path):
    stack = _gateway_stack(tmp_path)
    (stack.parent / "docker-exits").write_text("retrieval\n")  # its process ends right after it starts
    variables = {
        "schulki_plan_result": {"kind": "gateway", "files": []},
        "schulki_stack_dir": str(stack),
        "schulki_stack_pull_images": False,
        "schulki_stack_health_retries": 1,
        "schulki_stack_health_delay": 0,
        "schulki_stack_models_dir": str(tmp_path / "models"),
        "schulki_plan_node_kind": "gateway",
    }
    run = run_tasks(tmp_path, [include("schulki_stack", "start")], variables, fake_docker=True)
    assert run.returncode != 0, run.stdout[-3000:]
    assert "Dienste laufen nicht (services not running or not healthy)" in run.stdout and "retrieval: exited" in run.stdout
    assert "gateway: running" not in run.stdout, "only the unwell service is named"
    (stack.parent / "docker-exits").unlink()
    (stack.parent / "docker-state.json").unlink()
    again = run_tasks(tmp_path / "again", [include("schulki_stack", "start")], variables, fake_docker=True)
    assert again.returncode == 0, again.stdout[-3000:]


def test_unwell_services_are_those_not_running_or_not_healthy():
    rows = [
        {"Service": "gateway", "State": "running", "Health": "healthy"},
        {"Service": "weaviate", "State": "running", "Health": "starting"},
        {"Service": "embeddings", "State": "exited", "Health": ""},
        {"Service": "retrieval", "State": "running", "Health": ""},
        {"Service": "inference-cpu", "State": "restarting", "Health": "unhealthy"},
    ]
    assert stack_filters.schulki_unwell_services(rows) == [
        "weaviate: running, starting",
        "embeddings: exited",
        "inference-cpu: restarting, unhealthy",
    ]


# ------------------------------------------------------------------ model files: pinned, and pruned


def test_an_unpinned_model_file_stops_the_run_before_anything_is_downloaded_unless_allowed(tmp_path):
    models = tmp_path / "models"
    files = [
        {"name": "Qwen_Qwen3-4B-Q4_K_M.gguf", "sha256": "", "size": 0, "role": "chat"},
        {"name": "faster-whisper-base/model.bin", "sha256": "9" * 64, "size": 0, "role": "speech"},
    ]
    variables = {"schulki_plan_result": {"kind": "cpu", "files": files}, "schulki_models_dir": str(models)}
    run = run_tasks(tmp_path, [include("schulki_models", "main")], variables)
    assert run.returncode != 0, run.stdout[-3000:]
    assert "Keine festgelegte sha256 (no pinned sha256) for Qwen_Qwen3-4B-Q4_K_M.gguf:" in run.stdout
    assert "faster-whisper-base/model.bin:" not in run.stdout and not models.exists()
    # Allowed: the run goes on to the mirror (none answers here), so the check let it through.
    allowed = run_tasks(tmp_path / "allowed", [include("schulki_models", "main")], {**variables, "schulki_models_allow_unpinned": True})
    assert "no pinned sha256" not in allowed.stdout and "mirror's SHA256SUMS cannot be read" in allowed.stdout, allowed.stdout[-3000:]


def test_the_default_models_are_pinned_to_the_files_the_pypi_packages_give(tmp_path):
    import hashlib

    from schulki.config import Config
    from schulki.models.catalog import load_catalog
    from schulki.models.defaults import models_dir

    catalog, root = load_catalog(), models_dir(Config())
    for model_id in ("gemma-3-270m", "all-minilm-l6-v2", "faster-whisper-base"):
        model = catalog.model(model_id)
        pinned = {model.files[0].file: model.files[0].sha256} | {
            f"{Path(model.files[0].file).parent}/{name}": sha for name, sha in model.extra_sha256
        }
        assert len(pinned) == 1 + len(model.extra_files), f"{model_id}: every file pinned"
        for name, sha256 in pinned.items():
            assert hashlib.sha256((root / name).read_bytes()).hexdigest() == sha256, name


def test_pruning_removes_only_the_catalogs_files_the_plan_no_longer_names(tmp_path):
    models = tmp_path / "models"
    (models / "faster-whisper-base").mkdir(parents=True)
    (models / "faster-whisper-small").mkdir()
    kept = ["gemma-3-270m-q4_k_m.gguf", "faster-whisper-small/model.bin"]
    old = ["Phi-3-mini-4k-instruct.Q4_K_M.gguf", "faster-whisper-base/model.bin", "faster-whisper-base/config.json"]
    foreign = ["notes.txt", "own-model.gguf", "faster-whisper-small/README"]
    for name in kept + old + foreign + ["Phi-3-mini-4k-instruct.Q4_K_M.gguf.sha256", "gemma-3-270m-q4_k_m.gguf.sha256"]:
        (models / name).write_bytes(b"x" * 10)
    outside = tmp_path / "elsewhere.gguf"
    outside.write_text("the admin's")
    (models / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf").symlink_to(outside)  # a link is removed as a link
    remove = plan_filters.schulki_stale_model_files([{"name": n} for n in kept])
    assert set(old) | {"Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"} <= set(remove) and not set(kept + foreign) & set(remove)
    before = sorted(p.relative_to(models).as_posix() for p in models.rglob("*"))
    removed, _ = model_prune.prune(str(models), remove, check_mode=True)
    assert len(removed) == 5 and sorted(p.relative_to(models).as_posix() for p in models.rglob("*")) == before, "check mode removes nothing"
    removed, freed = model_prune.prune(str(models), remove)
    left = sorted(p.relative_to(models).as_posix() for p in models.rglob("*"))
    assert left == sorted(["faster-whisper-small", *kept, *foreign, "gemma-3-270m-q4_k_m.gguf.sha256"]), left
    assert freed == 4 * 10 + len(str(outside)) and outside.read_text() == "the admin's"
    assert not (models / "faster-whisper-base").exists(), "an emptied speech folder goes too"
    for wrong in ("../elsewhere.gguf", "/etc/passwd"):
        with pytest.raises(model_prune.PruneError, match="stays inside"):
            model_prune.prune(str(models), [wrong])


def test_secret_files_are_written_whole_private_and_only_when_they_differ(tmp_path):
    import os
    import stat

    uid = str(os.getuid())
    files = [{"name": "service_token", "content": "token-of-lab01"}, {"name": "https.key", "content": ""}]
    assert secret_files.write_secrets(str(tmp_path), files, uid, check_mode=True) == ["service_token", "https.key"]
    assert list(tmp_path.iterdir()) == [], "check mode writes nothing"
    assert secret_files.write_secrets(str(tmp_path), files, uid) == ["service_token", "https.key"]
    assert (tmp_path / "service_token").read_text() == "token-of-lab01" and (tmp_path / "https.key").read_bytes() == b""
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("service_token", "https.key")} == {0o400}
    assert secret_files.write_secrets(str(tmp_path), files, uid) == [], "a second run writes nothing"
    (tmp_path / "https.key").chmod(0o644)
    files[0]["content"] = "a new token"
    assert secret_files.write_secrets(str(tmp_path), files, uid) == ["service_token", "https.key"], "new content, a wrong mode"
    assert (tmp_path / "service_token").read_text() == "a new token" and stat.S_IMODE((tmp_path / "https.key").stat().st_mode) == 0o400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["https.key", "service_token"], "no temporary file is left"
    for wrong in ("../service_token", "sub/token", "..", ""):
        with pytest.raises(secret_files.SecretFileError, match="a file name inside"):
            secret_files.write_secrets(str(tmp_path), [{"name": wrong, "content": "x"}], uid)
    with pytest.raises(secret_files.SecretFileError, match="no user"):
        secret_files.write_secrets(str(tmp_path), files, "no-such-user-on-this-host")


# ------------------------------------------------------------------ ansible.cfg


def test_the_readmes_commands_use_the_playbooks_settings_sized_for_a_school():
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-config"), "dump", "--only-changed", "-t", "all", "--format", "json"],
        env={"ANSIBLE_CONFIG": str(DEPLOY / "ansible.cfg"), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    dump = json.loads(run.stdout)
    settings = {entry["name"]: entry["value"] for entry in dump if "name" in entry}
    connections = next(entry["CONNECTION_PLUGINS"] for entry in dump if "CONNECTION_PLUGINS" in entry)
    ssh = {option["name"]: option["value"] for plugin in connections for option in plugin.get("ssh", [])}
    assert settings["DEFAULT_FORKS"] >= 32, "30 lab PCs and two GPU servers are planned in one round"
    assert ssh["pipelining"] is True, "one SSH round trip per task"
    assert settings["DEFAULT_MODULE_PATH"] == [str(DEPLOY / "library")], "the playbook's modules wherever the command starts"
    assert settings["DEFAULT_STRATEGY"] == "mitogen_linear", "one Python interpreter per host for the whole run"
    assert settings["DEFAULT_STRATEGY_PLUGIN_PATH"] == [str(DEPLOY / "strategy_plugins")]
    commands = re.findall(
        r"^(?:sudo )?(?:ANSIBLE_CONFIG=\S+ )?\.venv/bin/ansible-playbook .*$", (REPO_ROOT / "README.md").read_text(), re.M
    )
    assert commands and all(c.startswith("ANSIBLE_CONFIG=deploy/ansible.cfg .venv/bin/ansible-playbook") for c in commands), commands


# ------------------------------------------------------------------ limits from the plan


def test_the_plan_limits_a_lab_pcs_inference_to_its_model_and_gives_weaviate_what_is_left():
    from schulki.models.fleet import host_plan

    lab = host_plan("pc01", {"schulki_plan_node_kind": "cpu", "schulki_plan_chat_model": "qwen3-4b", "schulki_plan_ram_mib": 16384})
    estimate = lab["chat"]["estimate"]["total"] / (1 << 20)
    limit = lab["limits"]["inference_memory_mib"]
    assert estimate < limit <= estimate + 768 + 1 and limit <= 16384 - 1024, (estimate, limit)
    small = host_plan("pc02", {"schulki_plan_node_kind": "cpu", "schulki_plan_chat_model": "gemma-3-270m", "schulki_plan_ram_mib": 16384})
    assert small["limits"]["inference_memory_mib"] < limit, "a smaller model gets a smaller limit"
    gpu = host_plan("gpu01", {"schulki_plan_node_kind": "gpu", "schulki_plan_gpu_memory_mib": 24576, "schulki_plan_ram_mib": 65536})
    assert gpu["limits"] == {}, "a GPU node's model lives in GPU memory"
    gateway = host_plan("gw", {"schulki_plan_node_kind": "gateway", "schulki_plan_ram_mib": 32768})
    embeddings = gateway["embeddings"]["estimate"]["total"] // (1 << 20)
    assert abs(gateway["limits"]["weaviate_memory_mib"] - (32768 - 2048 - embeddings - 2048)) <= 1
    tiny = host_plan("gw", {"schulki_plan_node_kind": "gateway", "schulki_plan_ram_mib": 4096})
    assert tiny["limits"]["weaviate_memory_mib"] == 1024, "never below 1 GiB"
