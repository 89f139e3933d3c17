"""The Ansible roll-out against test hosts on this machine, with a stand-in for the Docker engine.

Three inventory hosts (a gateway, a 12 GB GPU node, a CPU lab PC) all run on
localhost with a local connection, each with its own folders under tmp_path,
and download their models from a mirror on 127.0.0.1. Two more hosts fail: a
GPU node whose 64 MiB GPU the planner refuses, and one that is unreachable.
The play runs in check mode first on one host (nothing written), then for
real, then again: the second real run must change nothing; a third with
another batch size must recreate the inference containers it changes, once,
each node drained from the gateway's line first, one node after the other.
The unreachable host stays in the gateway's list; the refused one is left out.
No Docker engine runs here, so `docker` is tests/fake_docker.py, which does
what compose would do with each host's compose.yaml and .env and logs it.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from schulki.config import Config
from schulki.models.catalog import load_catalog
from schulki.models.defaults import chat_model_path, embeddings_model_path, speech_model_path
from schulki.models.fleet import FLEET_DEFAULTS

from tests import fake_docker, fake_nvidia_smi
from tests.conftest import REPO_ROOT, free_port
from tests.deploy_mirror import MirrorServer
from tests.firewall_lab import namespaced_nft, remove_namespaces
from tests.fleet_lab import why_no_namespaces
from tests.tls_support import grpc_handshake_error
from tests.trust_root import trust_vars

VENV_BIN = Path(sys.executable).parent
# The school fixture runs the playbook four times over five hosts (a check run, the first roll-out, a second run
# that must change nothing, a changed batch size); its setup counts against the first test's limit, and on a busy
# machine it took 15 to 20 minutes, past the suite's 600 s.
pytestmark = pytest.mark.timeout(2400)
LAB_IMAGE_DIGEST = "sha256:" + "0123456789abcdef" * 4
STALE_MODEL_FILES = {
    "Phi-3-mini-4k-instruct.Q4_K_M.gguf": "an older plan's model",
    "Phi-3-mini-4k-instruct.Q4_K_M.gguf.sha256": "recorded hash",
    "Qwen_Qwen3-4B-Q4_K_M.gguf.part": "half a download",
    "faster-whisper-base/model.bin": "a speech model this host no longer runs",
    "faster-whisper-base/config.json": "{}",
}
FOREIGN_FILES = {"lehrerin-notizen.txt": "not schulki's", "eigenes-modell.gguf": "not in the catalog", "faster-whisper-base/README": "kept"}
DEPLOY = REPO_ROOT / "deploy"


def ansible(*args: str, cwd: Path = REPO_ROOT, timeout: int = 600, path: Path | None = None) -> subprocess.CompletedProcess:
    temp = Path(tempfile.gettempdir()) / "schulki-ansible-tmp"
    first = f"{path}{os.pathsep}" if path else ""
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_LOCAL_TEMP": str(temp),
        "ANSIBLE_REMOTE_TEMP": str(temp),
        "PATH": f"{first}{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_PIPELINING": "1",
        # The settings the README's commands use (forks, pipelining, the playbook's modules, filters and roles).
        "ANSIBLE_CONFIG": str(DEPLOY / "ansible.cfg"),
    }
    return subprocess.run([str(VENV_BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def recap(output: str) -> dict[str, dict[str, int]]:
    """changed/failed counts per host from the PLAY RECAP."""
    result = {}
    for line in output.rsplit("PLAY RECAP", maxsplit=1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            result[match[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match[2])}
    return result


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    config = Config()
    for path in (chat_model_path(config), embeddings_model_path(config)):
        os.symlink(path, root / path.name)
    speech = root / "faster-whisper-base"
    speech.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        os.symlink(speech_model_path(config) / name, speech / name)
    # No SHA256SUMS: every file these hosts get has its sha256 pinned in the catalog, and nothing else is trusted.
    with MirrorServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def school(tmp_path_factory, mirror, request):
    """An inventory of test hosts on this machine, run against in check mode, then three times for real."""
    base = tmp_path_factory.mktemp("school")
    fake_bin = base / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text(f'#!/bin/sh\nexec {sys.executable} {REPO_ROOT / "tests" / "fake_docker.py"} "$@"\n')
    (fake_bin / "docker").chmod(0o755)
    fake_nvidia_smi.install(fake_bin, 12288, "560.35.05")  # the lowest driver series the CUDA 12.6 images run on
    common = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "schulki_docker_install": False,
        "schulki_stack_start": True,
        "schulki_models_mirror_url": mirror.url,
        "schulki_stack_secrets_owner": str(os.getuid()),
        "schulki_stack_weaviate_api_key": "test-weaviate-key-0123456789",
        "schulki_stack_tls_ca_passphrase": "test-ca-passphrase-0123456789",
        "schulki_plan_embeddings_model": "all-minilm-l6-v2",
        "schulki_plan_embeddings_quant": "F16",
        "schulki_stack_backup_keep": 5,
        "schulki_stack_backup_timer": False,  # no systemd here: the units are written and read, not started
    }
    hosts = {
        # Students reach HTTPS on 8443; the container listens on 7860.
        "gw": {"schulki_plan_node_kind": "gateway", "schulki_plan_ram_mib": 8192, "schulki_stack_gateway_port": 8443},
        "gpu12": {
            "schulki_stack_node_address": "127.0.0.1",
            "schulki_plan_node_kind": "gpu",
            "schulki_plan_gpu_memory_mib": 12288,
            "schulki_plan_chat_model": "gemma-3-270m",
            "schulki_plan_speech_model": "faster-whisper-base",
            "schulki_plan_context_length": 8192,
        },
        "lab01": {
            # A card with a fixed address, never this machine's default (DHCP) address; and its image pinned by digest.
            "schulki_stack_node_interface": "lo",
            "schulki_stack_image_digests": {"inference-cpu": LAB_IMAGE_DIGEST},
            "schulki_plan_node_kind": "cpu",
            "schulki_plan_chat_model": "gemma-3-270m",
            "schulki_plan_context_length": 4096,
            "schulki_plan_parallel_sequences": 1,
            "schulki_plan_flash_attention": False,
        },
        # Too small for the smallest quant and for Whisper: the planner refuses it, the host fails.
        "gpu-tiny": {"schulki_plan_node_kind": "gpu", "schulki_plan_gpu_memory_mib": 64},
        # Nothing listens on this port: the host is unreachable.
        "gpu-down": {
            "schulki_plan_node_kind": "gpu",
            "schulki_plan_gpu_memory_mib": 12288,
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": free_port(),
            "ansible_ssh_common_args": "-o ConnectTimeout=5",
        },
    }
    for name, host in hosts.items():
        host.update(schulki_stack_dir=str(base / name / "stack"), schulki_models_dir=str(base / name / "models"))
        host["schulki_stack_systemd_dir"] = str(base / name / "systemd")
        (base / name / "systemd").mkdir(parents=True)
    # The lab PC's trust store and browser policies lie in a folder of its own, never this machine's.
    hosts["lab01"].update(trust_vars(base / "lab01" / "root"))
    # The firewall's rules are checked and loaded by the real nft, each host's in a namespace of its own
    # (tests/test_deploy_firewall.py sends packets at them); without root the role is left out.
    common.update(schulki_firewall_install=False, schulki_firewall_at_boot=False, schulki_firewall_enabled=why_no_namespaces() is None)
    # The gateway gw names no address in this inventory and its name resolves nowhere: the nodes' rules let it in by
    # the address the README tells schools to set in that case (never a DNS lookup from a test).
    common["schulki_firewall_gateway_addresses"] = ["127.0.0.1"]
    if common["schulki_firewall_enabled"]:
        nft, namespaces = namespaced_nft(fake_bin, list(hosts))
        request.addfinalizer(lambda: remove_namespaces(namespaces))
        for name, host in hosts.items():
            host.update(schulki_firewall_nft=str(nft[name]), schulki_firewall_rules_file=str(base / name / "firewall.nft"))
    inventory = {
        "schulki": {
            "vars": common,
            "children": {
                "schulki_gateway": {"hosts": {"gw": hosts["gw"]}},
                "schulki_gpu_nodes": {"hosts": {"gpu12": hosts["gpu12"], "gpu-tiny": hosts["gpu-tiny"], "gpu-down": hosts["gpu-down"]}},
                "schulki_cpu_nodes": {"hosts": {"lab01": hosts["lab01"]}},
            },
        }
    }
    (base / "hosts.yml").write_text(yaml.safe_dump(inventory))
    # lab01 ran an earlier plan: its old model (with the sync's record and a cut-off download) goes once the
    # new one serves; the teacher's own files beside it stay.
    for name, content in {**STALE_MODEL_FILES, **FOREIGN_FILES}.items():
        (base / "lab01" / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "lab01" / "models" / name).write_text(content)
    runs = {}
    for run in ("check", "first", "second", "third"):
        extra = {"check": ["--check", "--diff", "--limit", "gpu12"], "third": ["-e", "schulki_plan_batch_size=256"]}.get(run, [])
        runs[run] = ansible("ansible-playbook", "-i", str(base / "hosts.yml"), str(DEPLOY / "site.yml"), *extra, cwd=base, path=fake_bin)
        output = f"{run} run:\n{runs[run].stdout[-6000:]}\n{runs[run].stderr[-3000:]}"
        if run == "check":
            assert runs[run].returncode == 0, output
            continue
        result = recap(runs[run].stdout)
        assert all(result[h]["failed"] == 0 and result[h]["unreachable"] == 0 for h in ("gw", "gpu12", "lab01")), output
        assert result["gpu-tiny"]["failed"] == 1 and result["gpu-down"]["unreachable"] == 1, output
    return base, runs


def docker_log(base: Path, host: str) -> list[dict]:
    """What the Docker stand-in did on a host, in order: {"pull": [...]} and {"up": [[service, event], ...]}."""
    log = base / host / "docker-log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_check_mode_shows_the_changes_and_writes_nothing(school, mirror):
    base, runs = school
    output = runs["check"].stdout
    assert recap(output)["gpu12"]["changed"] > 0
    assert "COMPOSE_PROFILES=gpu" in output, "--diff shows the rendered settings"
    for token in (base / "credentials" / "tokens").iterdir():
        assert token.read_text().strip() not in "".join(run.stdout + run.stderr for run in runs.values())
    first_downloads = [n for n, _ in mirror.requests if n.endswith(".gguf") or n.endswith("model.bin")]
    # gemma for gpu12 and lab01, Whisper for gpu12, MiniLM for the gateway: once each, in the first real run.
    assert sorted(first_downloads) == sorted(
        ["gemma-3-270m-q4_k_m.gguf"] * 2 + ["faster-whisper-base/model.bin", "all-minilm-l6-v2-f16.gguf"]
    )


def test_the_second_run_changes_nothing(school):
    _, runs = school
    first, second = recap(runs["first"].stdout), recap(runs["second"].stdout)
    assert set(second) == {"gw", "gpu12", "lab01", "gpu-tiny", "gpu-down"}
    assert all(first[h]["changed"] > 0 for h in ("gw", "gpu12", "lab01"))
    assert all(second[h]["changed"] == 0 and second[h]["failed"] == 0 for h in ("gw", "gpu12", "lab01")), runs["second"].stdout[-4000:]


def test_a_gpu_too_small_is_refused_with_what_would_fit_and_gets_nothing(school):
    base, runs = school
    output = runs["first"].stdout
    assert "faster-whisper-large-v3-turbo needs about 2.3 GiB" in output and "needs a GPU with at least" in output
    assert not (base / "gpu-tiny" / "stack").exists() and not (base / "gpu-tiny" / "models").exists()


def test_the_gateway_keeps_an_unreachable_node_and_drops_only_a_failed_plan(school, monkeypatch):
    base, runs = school
    gateway = _settings(base, "gw", monkeypatch)
    # gpu-down was switched off today: it stays listed and the gateway's health check marks it down
    # until it answers; gpu-tiny's plan failed, so it is left out.
    assert gateway.gateway.inference_addresses == ["gpu-down:50051", "gpu12:50051", "lab01:50051"]
    assert gateway.gateway.transcription_addresses == ["gpu-down:50053", "gpu12:50053"]
    gateway.runtime.node_tokens_file = base / "gw" / "stack" / "secrets" / "node_tokens"
    assert set(gateway.runtime.resolved_node_tokens()) == {"gpu12", "gpu-down", "lab01"}
    summary = runs["first"].stdout.split("Say which nodes the gateway lists", 1)[1]
    assert "not reached in this run, stay listed until they answer): gpu-down" in summary
    assert "Planung fehlgeschlagen (planning failed): gpu-tiny: " in summary and "needs a GPU with at least" in summary


def test_the_nodes_roll_a_batch_at_a_time_and_a_failed_batch_stops_the_rest():
    plays = yaml.safe_load((DEPLOY / "site.yml").read_text())
    rolling = [play for play in plays if "serial" in play]
    assert len(rolling) == 1 and rolling[0]["hosts"] == "schulki:!schulki_gateway"
    assert rolling[0]["serial"] == "{{ schulki_rolling_batch | default(1) }}"
    assert rolling[0]["max_fail_percentage"] == "{{ schulki_rolling_max_fail_percentage | default(0) }}"
    assert [role["role"] for role in rolling[0]["roles"]][-1] == "schulki_stack"


def test_each_container_starts_once_and_a_changed_setting_recreates_it_once(school):
    base, _ = school
    for host, services in (
        ("gpu12", ["inference-gpu", "transcription-gpu"]),
        ("lab01", ["inference-cpu"]),
        ("gw", ["embeddings", "gateway", "retrieval", "weaviate"]),
    ):
        log = docker_log(base, host)
        pulls = [entry["pull"] for entry in log if "pull" in entry]
        ups = [entry["up"] for entry in log if "up" in entry]
        assert len(pulls) == 3 and all(sorted(p) == services for p in pulls), f"{host}: every run pulls the host's images: {pulls}"
        first, second, third = ups
        assert sorted(first) == [[s, "Created"] for s in services], f"{host}: each model loads once in the first run: {log}"
        assert second == [], f"{host}: the second run leaves the containers alone"
        if host == "gw":
            assert third == [], "the batch size is no setting of the gateway machine"
        else:
            # Only inference reads the batch size: transcription keeps running (its own settings checksum).
            assert third == [[services[0], "Recreated"]], f"{host}: a changed setting recreates its service once: {third}"
            stops = [i for i, entry in enumerate(log) if "stop" in entry]
            assert len(stops) == 1 and log[stops[0] + 1] == {"up": third}, f"{host} is stopped (drained) right before it is recreated"


def test_a_node_is_drained_from_the_gateways_line_before_it_is_recreated_and_back_before_the_next(school):
    base, _ = school
    views: list[list[str]] = []
    for entry in docker_log(base, "gw"):
        if "exec" not in entry:
            continue
        if views and views[-1][:2] == entry["exec"][:2]:
            views[-1] = entry["exec"]  # a wait that retries asks again: keep each wait's last answer
        else:
            views.append(entry["exec"])
    # In the third run: each node's inference is in the line, taken out, then back in, one node after the
    # other (the next starts only once the last is serving again); the first runs found no gateway or
    # nothing to recreate. Transcription is not recreated by a batch size, so it is not drained.
    assert [view[1:] for view in views] == [["serving", "serving"], ["down", "down"], ["serving", "serving"]] * 2, views
    first, second = {view[0] for view in views[:3]}, {view[0] for view in views[3:]}
    assert len(first) == len(second) == 1 and first | second == {"gpu12", "lab01"}, views


def test_each_host_has_its_models_checked_against_their_sha256(school):
    base, _ = school
    gemma = load_catalog().model("gemma-3-270m").files[0]
    for host in ("gpu12", "lab01"):
        path = base / host / "models" / gemma.file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == gemma.sha256
    assert (base / "gpu12" / "models" / "faster-whisper-base" / "model.bin").stat().st_size == 145_217_607
    assert (base / "gw" / "models" / "all-minilm-l6-v2-f16.gguf").exists()
    assert not (base / "gw" / "models" / gemma.file).exists(), "the gateway gets no chat model"


def _settings(base: Path, host: str, monkeypatch) -> Config:
    path = base / host / "stack" / "schulki.toml"
    monkeypatch.setenv("SCHULKI_CONFIG", str(path))
    return Config()


def test_the_rendered_settings_are_valid_schulki_settings_from_the_plan(school, monkeypatch):
    base, _ = school
    gpu = _settings(base, "gpu12", monkeypatch)
    assert str(gpu.inference.model_path) == "/models/gemma-3-270m-q4_k_m.gguf"
    assert gpu.inference.context_length == 8192 and gpu.inference.parallel_sequences == 8  # the default of a 12 GB GPU
    assert gpu.inference.gpu_layers == -1 and gpu.inference.flash_attention
    assert gpu.transcription.device == "cuda" and str(gpu.transcription.model_path) == "/models/faster-whisper-base"
    lab = _settings(base, "lab01", monkeypatch)
    assert lab.inference.gpu_layers == 0 and not lab.inference.flash_attention and lab.inference.parallel_sequences == 1
    gateway = _settings(base, "gw", monkeypatch)
    assert gateway.gateway.inference_addresses == ["gpu-down:50051", "gpu12:50051", "lab01:50051"]
    # the gateway's settings name the model each node serves, and each node serves under that name
    assert [(n.address, n.model) for n in gateway.gateway.inference_nodes] == [
        ("gpu12:50051", "gemma-3-270m"),
        ("lab01:50051", "gemma-3-270m"),
    ]
    assert gpu.inference.model_name == lab.inference.model_name == "gemma-3-270m"  # one name, whatever quant each card got
    assert gateway.gateway.transcription_addresses == ["gpu-down:50053", "gpu12:50053"]
    assert gateway.retrieval.store == "weaviate" and str(gateway.embeddings.model_path) == "/models/all-minilm-l6-v2-f16.gguf"
    assert "Q4_K_M fits" in (base / "gpu12" / "stack" / "schulki.toml").read_text()


def test_the_compose_settings_pick_each_hosts_profile_and_the_secrets_are_private(school):
    base, _ = school
    for host, profile in (("gw", "gateway"), ("gpu12", "gpu"), ("lab01", "cpu")):
        stack = base / host / "stack"
        env = dict(line.split("=", 1) for line in (stack / ".env").read_text().splitlines() if "=" in line and not line.startswith("#"))
        assert env["COMPOSE_PROFILES"] == profile
        assert env["SCHULKI_MODELS_DIR"] == str(base / host / "models")
        assert (stack / "compose.yaml").read_text() == (REPO_ROOT / "compose.yaml").read_text()
        token = stack / "secrets" / "service_token"
        assert token.read_text() == (base / "credentials" / "tokens" / host).read_text().strip()
        assert len(token.read_text()) == 43 and (token.stat().st_mode & 0o777) == 0o400
        assert token.read_text() not in (stack / ".env").read_text() + (stack / "schulki.toml").read_text()
    weaviate_env = (base / "gw" / "stack" / "secrets" / "weaviate.env").read_text()
    assert "AUTHENTICATION_APIKEY_ALLOWED_KEYS=test-weaviate-key-0123456789" in weaviate_env
    for host in ("gpu12", "lab01"):
        assert "test-weaviate-key" not in (base / host / "stack" / "secrets" / "weaviate.env").read_text(), (
            f"{host} got Weaviate's admin key"
        )


def _unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def test_the_gateway_machine_backs_up_nightly_in_the_gateway_container_into_a_folder_its_user_owns(school):
    base, _ = school
    stack, units = base / "gw" / "stack", base / "gw" / "systemd"
    timer = _unit(units / "schulki-backup.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00" and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = _unit(units / "schulki-backup.service")["Service"]
    assert service["Type"] == "oneshot"
    command = shlex.split(service["ExecStart"])
    assert command[:4] == ["/usr/bin/docker", "compose", "--project-directory", str(stack)]
    exec_options, run = command[5 : command.index("gateway")], command[command.index("gateway") + 1 :]
    assert command[4] == "exec" and "-T" in exec_options and run == ["python", "-m", "schulki.cli", "backup"]
    environment = [exec_options[i + 1] for i, option in enumerate(exec_options) if option == "-e"]
    assert "SCHULKI_GATEWAY__BACKUP_KEEP=5" in environment  # the inventory's retention
    # Weaviate's key reaches the container by name from the unit's environment file, never on a command line.
    assert "SCHULKI_RETRIEVAL__WEAVIATE_API_KEY" in environment
    key_file = Path(service["EnvironmentFile"])
    assert key_file == stack / "secrets" / "weaviate.env" and "SCHULKI_RETRIEVAL__WEAVIATE_API_KEY=" in key_file.read_text()
    assert "test-weaviate-key" not in (units / "schulki-backup.service").read_text()
    # Weaviate writes its part as root: afterwards everything goes to the gateway's user, who expires old backups.
    owner = str(os.getuid())
    assert shlex.split(service["ExecStopPost"]) == ["/usr/bin/chown", "-R", f"{owner}:{owner}", str(stack / "backups")]
    backups = (stack / "backups").stat()
    assert (backups.st_mode & 0o777) == 0o700 and str(backups.st_uid) == owner and str(backups.st_gid) == owner
    # The folder the units name is the one compose mounts into the gateway (backup_dir) and into Weaviate.
    compose = yaml.safe_load((stack / "compose.yaml").read_text())["services"]
    env = dict(line.split("=", 1) for line in (stack / ".env").read_text().splitlines() if "=" in line and not line.startswith("#"))
    mounts = {
        name: dict(
            volume.replace("${SCHULKI_BACKUP_DIR:-./backups}", env["SCHULKI_BACKUP_DIR"]).split(":")[:2] for volume in spec["volumes"]
        )
        for name, spec in compose.items()
        if name in ("gateway", "weaviate")
    }
    assert mounts["gateway"][str(stack / "backups")] == compose["gateway"]["environment"]["SCHULKI_GATEWAY__BACKUP_DIR"]
    assert mounts["weaviate"][str(stack / "backups")] == compose["weaviate"]["environment"]["BACKUP_FILESYSTEM_PATH"]
    for host in ("gpu12", "lab01"):  # nodes keep nothing to back up
        assert list((base / host / "systemd").iterdir()) == []


def test_ansible_lint_production_profile_is_clean():
    run = ansible("ansible-lint", "--offline", "--profile", "production", "deploy/site.yml", "inventory/example", timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]


def test_the_role_defaults_match_the_planner_defaults():
    defaults = yaml.safe_load((DEPLOY / "roles" / "schulki_plan" / "defaults" / "main.yml").read_text())
    assert defaults == FLEET_DEFAULTS


def test_every_role_variable_is_prefixed_and_documented():
    for role in (DEPLOY / "roles").iterdir():
        text = (role / "defaults" / "main.yml").read_text()
        names = re.findall(r"^(\w+):", text, re.M)
        assert names and all(n.startswith(role.name + "_") for n in names), role.name
        for name in names:
            before = text.split(f"\n{name}:")[0].rstrip().splitlines()[-1]
            assert before.startswith("#") or before.startswith(f"{role.name}_"), f"{role.name}: {name} is not documented"


def test_task_names_are_sentences():
    plays = [DEPLOY / "site.yml", *DEPLOY.glob("roles/*/tasks/*.yml"), *DEPLOY.glob("roles/*/handlers/*.yml")]
    assert len(plays) >= 7  # site.yml and the roles' task files (no role needs a handler)
    for path in plays:
        for name in re.findall(r"^- name: (.+)$", path.read_text(), re.M):
            assert name[0].isupper() and len(name.split()) >= 3 and not name.endswith("."), f"{path.name}: {name}"


def test_the_example_vault_opens_with_the_documented_example_password(tmp_path):
    password = tmp_path / "pw"
    password.write_text("schulki-example\n")
    run = ansible(
        "ansible",
        "localhost",
        "-i",
        "inventory/example",
        "-m",
        "ansible.builtin.debug",
        "-a",
        "var=schulki_stack_service_token",
        "-e",
        "@inventory/example/group_vars/schulki/vault.yml",
        "--vault-password-file",
        str(password),
        timeout=120,
    )
    assert run.returncode == 0 and "example-service-token" in run.stdout, run.stdout + run.stderr


def test_every_host_has_its_own_token_and_only_the_gateway_holds_the_list(school, monkeypatch):
    base, _ = school
    tokens = {host: (base / host / "stack" / "secrets" / "service_token").read_text() for host in ("gw", "gpu12", "lab01")}
    assert len(set(tokens.values())) == 3, "no two hosts share a token"
    node_tokens = base / "gw" / "stack" / "secrets" / "node_tokens"
    gateway = _settings(base, "gw", monkeypatch)
    gateway.runtime.node_tokens_file = node_tokens  # in the container: /run/secrets/node_tokens
    node_tokens_of = gateway.runtime.resolved_node_tokens()
    assert {node_tokens_of["gpu12"], node_tokens_of["lab01"]} == {tokens["gpu12"], tokens["lab01"]}
    assert node_tokens_of["gpu12"] == tokens["gpu12"] and "gw" not in node_tokens_of
    assert gateway.runtime.token_for("gpu12:50051") == tokens["gpu12"] and gateway.runtime.token_for("embeddings:50052") is None
    # A lab PC holds its own token, its own certificate and key and the CA's certificate: nothing that opens another node.
    lab = base / "lab01" / "stack"
    everything = "".join(p.read_text() for p in lab.rglob("*") if p.is_file())
    assert tokens["gpu12"] not in everything and tokens["gw"] not in everything
    assert (lab / "secrets" / "node_tokens").read_text() == "" and (lab / "secrets" / "https.key").read_text() == ""
    assert "PRIVATE KEY" not in (lab / "secrets" / "ca.crt").read_text()


def test_every_host_gets_a_certificate_from_the_school_ca_for_its_names(school, monkeypatch):
    from cryptography import x509

    base, _ = school
    ca = x509.load_pem_x509_certificate((base / "credentials" / "tls" / "ca.crt").read_bytes())
    for host, extra in (("gw", {"embeddings", "retrieval"}), ("gpu12", set()), ("lab01", set())):
        secrets = base / host / "stack" / "secrets"
        cert = x509.load_pem_x509_certificate((secrets / "tls.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {host, "localhost", *extra}
        assert not names.get_values_for_type(x509.IPAddress), "gRPC refuses a certificate naming an address under the school CA"
        assert (secrets / "tls.key").stat().st_mode & 0o777 == 0o400 and (secrets / "ca.crt").read_bytes().startswith(
            b"-----BEGIN CERTIFICATE"
        )
    # The gateway reaches a node, and its own embeddings, over gRPC's TLS with the files the roll-out copied there.
    for host, dialled in (("gpu12", "gpu12"), ("gw", "embeddings")):
        secrets = base / host / "stack" / "secrets"
        error = grpc_handshake_error(secrets / "tls.crt", secrets / "tls.key", base / "gw" / "stack" / "secrets" / "ca.crt", dialled)
        assert error is None, f"gRPC to {dialled}: {error}"
    assert not list(base.glob("*/stack/**/ca.key")), "the CA's key stays on the admin's machine"
    assert (base / "credentials" / "tls" / "ca.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    permitted = ca.extensions.get_extension_for_class(x509.NameConstraints).value.permitted_subtrees or []
    assert {x509.DNSName(n) for n in ("gw", "gpu12", "lab01", "gpu-tiny", "gpu-down", "embeddings", "retrieval", "localhost")} <= set(
        permitted
    ), "the school CA may sign for the inventory's hosts and nothing else"
    assert all(isinstance(p, x509.DNSName) or str(p.value) in ("127.0.0.0/8", "::1/128") or p.value.is_private for p in permitted)
    gateway = _settings(base, "gw", monkeypatch)
    assert gateway.gateway.https and str(gateway.gateway.tls_cert_file) == "/run/secrets/tls_cert" and gateway.gateway.redirect_port == 8080
    for host in ("gw", "gpu12", "lab01"):
        runtime = _settings(base, host, monkeypatch).runtime
        assert str(runtime.tls_cert_file) == "/run/secrets/tls_cert" and str(runtime.tls_ca_file) == "/run/secrets/tls_ca"


def test_the_playbook_refuses_the_example_vaults_token(tmp_path, monkeypatch):
    """Attack: a school copies the example vault and ships its public token; the run must stop before anything starts."""
    password = tmp_path / "pw"
    password.write_text("schulki-example\n")
    playbook = tmp_path / "tokens.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Check the tokens of the example school",
                    "hosts": "ki-gpu08.schule.example",
                    "gather_facts": False,
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                        "schulki_stack_credentials_dir": str(tmp_path),
                    },
                    "tasks": [
                        {
                            "name": "Run the token checks of the stack role",
                            "ansible.builtin.include_role": {"name": "schulki_stack", "tasks_from": "tokens"},
                        }
                    ],
                }
            ]
        )
    )
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", str(DEPLOY / "roles"))
    monkeypatch.setenv("ANSIBLE_FILTER_PLUGINS", str(DEPLOY / "filter_plugins"))
    run = ansible(
        "ansible-playbook",
        "-i",
        "inventory/example",
        str(playbook),
        "-e",
        "@inventory/example/group_vars/schulki/vault.yml",
        "--vault-password-file",
        str(password),
        timeout=120,
    )
    assert run.returncode != 0 and "enthält (contains) 'example'" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
    assert "example-service-token" not in run.stdout + run.stderr, "the token itself is never printed"


def _env_file(base: Path, host: str) -> dict[str, str]:
    text = (base / host / "stack" / ".env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def _compose_as_run(base: Path, host: str) -> dict:
    """The host's compose.yaml with its .env filled in, as docker compose (and the stand-in) reads it."""
    stack = base / host / "stack"
    return yaml.safe_load(fake_docker._interpolate((stack / "compose.yaml").read_text(), fake_docker._env(stack)))


def test_a_node_publishes_its_ports_on_the_address_the_inventory_names_not_the_dhcp_one(school):
    base, _ = school
    # lab01 names its card (lo), gpu12 an address; this machine's default address (its DHCP lease) is neither.
    assert _env_file(base, "lab01")["SCHULKI_NODE_ADDRESS"] == "127.0.0.1"
    assert _env_file(base, "gpu12")["SCHULKI_NODE_ADDRESS"] == "127.0.0.1"
    assert "SCHULKI_NODE_ADDRESS" not in _env_file(base, "gw"), "the gateway machine publishes no gRPC port"
    assert _compose_as_run(base, "lab01")["services"]["inference-cpu"]["ports"] == ["127.0.0.1:50051:50051"]


def test_a_lab_pcs_inference_is_limited_to_what_its_plan_needs(school):
    base, _ = school
    env = _env_file(base, "lab01")
    limit = int(env["SCHULKI_INFERENCE_CPU_MEMORY_MIB"])
    inference = _compose_as_run(base, "lab01")["services"]["inference-cpu"]
    assert inference["mem_limit"] == inference["memswap_limit"] == f"{limit}m", "no swap beyond the limit"
    assert float(inference["cpus"]) == max(1, (os.cpu_count() or 2) - 1), "whoever sits at the lab PC keeps a core"
    # gemma-3-270m with 4096 tokens of context: its estimate and the process, far below the lab PC's RAM.
    assert 768 < limit < 2048, limit
    weaviate = _compose_as_run(base, "gw")["services"]["weaviate"]
    assert weaviate["mem_limit"] == f"{_env_file(base, 'gw')['SCHULKI_WEAVIATE_MEMORY_MIB']}m"
    assert int(weaviate["environment"]["GOMEMLIMIT"].removesuffix("MiB")) < int(weaviate["mem_limit"].removesuffix("m"))


def test_an_image_pinned_by_digest_is_run_by_that_digest(school):
    base, _ = school
    image = _compose_as_run(base, "lab01")["services"]["inference-cpu"]["image"]
    assert image == f"schulki/inference:0.1.0@{LAB_IMAGE_DIGEST}"
    assert _compose_as_run(base, "gpu12")["services"]["inference-gpu"]["image"] == "schulki/inference:0.1.0-cuda", "no pin: the tag"


def test_the_plain_http_redirect_points_at_the_published_https_port(school, monkeypatch):
    import asyncio

    from schulki.gateway.web.https import start_redirect_server

    base, _ = school
    gateway = _settings(base, "gw", monkeypatch).gateway
    assert gateway.port == 7860 and gateway.redirect_port == 8080, "the container's ports"

    async def ask() -> bytes:
        server = await start_redirect_server("127.0.0.1", 0, gateway.redirect_https_port)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /login HTTP/1.1\r\nHost: gw\r\n\r\n")
            await writer.drain()
            head = await reader.read(4096)
            writer.close()
            return head
        finally:
            server.close()
            await server.wait_closed()

    head = asyncio.run(ask())
    assert b"Location: https://gw:8443/login" in head, head


def test_old_model_files_are_removed_once_the_new_ones_serve_and_nothing_else(school):
    base, _ = school
    models = base / "lab01" / "models"
    for name in STALE_MODEL_FILES:
        assert not (models / name).exists(), f"{name} of an earlier plan is still there"
    for name, content in FOREIGN_FILES.items():
        assert (models / name).read_text() == content, f"{name} is not schulki's and must stay"
    gemma = load_catalog().model("gemma-3-270m").files[0]
    assert (models / gemma.file).stat().st_size == gemma.size_bytes and (models / f"{gemma.file}.sha256").exists()


def test_every_model_file_rolled_out_is_pinned_and_the_mirrors_sums_are_never_asked(school, mirror):
    assert "SHA256SUMS" not in [name for name, _ in mirror.requests]
