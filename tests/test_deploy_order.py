"""The schulki_docker role's tasks in the order a GPU node sees them, against a model of apt and the Docker daemon.

No apt repository, Docker engine or GPU can be touched here, so the role's own
task files are walked in order (include_tasks, when, register, notify and the
handlers at the end of the play, as ansible-core runs them) and each apt, service
and command step acts on a model of the node with the rules of the real tools:

- apt sees a repository only after its lists are refreshed once the repository
  exists; ``cache_valid_time`` skips the refresh when the lists are younger;
- Docker loads its runtimes (``nvidia``) from daemon.json only when it starts;
- ``docker compose up`` of a GPU service fails with "could not select device
  driver nvidia" while the running daemon lacks that runtime.

The stack's ``up`` (schulki_stack, after schulki_models) comes after the role,
and notified handlers run at the end of the play, after it.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import jinja2.nativetypes
import pytest
import yaml

from tests.conftest import REPO_ROOT

ROLE = REPO_ROOT / "deploy" / "roles" / "schulki_docker"
PACKAGE_REPOSITORY = {
    "docker-ce": "docker",
    "docker-ce-cli": "docker",
    "containerd.io": "docker",
    "docker-compose-plugin": "docker",
    "nvidia-container-toolkit": "nvidia-container-toolkit",
    "python3-debian": "debian",
    "python3-apt": "debian",
}


class StepFailed(Exception):
    pass


@dataclass
class Node:
    """A GPU node's apt and Docker state."""

    now: float = 100_000.0
    lists_refreshed: float = 100_000.0 - 600  # someone ran apt-get update ten minutes ago
    repositories: set[str] = field(default_factory=set)  # beside Debian's own archive, which apt always has
    repositories_in_lists: set[str] = field(default_factory=set)
    installed: set[str] = field(default_factory=set)  # a fresh Debian 12: not even python3-debian
    files: set[str] = field(default_factory=set)
    downloads: list[str] = field(default_factory=list)  # every URL fetched from the internet (or the mirror)
    daemon_json: str | None = None
    docker_running: bool = False
    loaded_runtimes: set[str] = field(default_factory=set)
    restarts: int = 0
    live_restore: bool = False  # as the running daemon has it: read from daemon.json on a start or a reload
    held: set[str] = field(default_factory=set)  # packages apt does not upgrade (dpkg --set-selections hold)

    def start_docker(self) -> None:
        self.docker_running = True
        self.restarts += 1
        self.loaded_runtimes = {"runc"} | (set(json.loads(self.daemon_json).get("runtimes", {})) if self.daemon_json else set())
        self.reload_docker()

    def reload_docker(self) -> None:
        self.live_restore = bool(self.daemon_json and json.loads(self.daemon_json).get("live-restore"))


def jinja() -> jinja2.Environment:
    """Jinja as Ansible templates task arguments: a template that is one expression keeps its type (a list, a bool)."""
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    env.tests["changed"] = lambda result: bool(result.get("changed"))
    env.tests["skipped"] = lambda result: bool(result.get("skipped"))
    env.filters["bool"] = lambda value: value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")
    env.tests["search"] = lambda text, pattern: re.search(pattern, text) is not None
    env.filters["b64decode"] = lambda text: base64.b64decode(text).decode()
    env.filters["quote"] = shlex.quote
    env.filters["from_json"] = json.loads
    env.filters["regex_replace"] = lambda text, pattern, replacement: re.sub(pattern, replacement, text)
    env.filters["to_nice_json"] = lambda value: json.dumps(value, indent=4, sort_keys=True)
    env.filters["combine"] = lambda a, b: {**a, **b}
    return env


class Play:
    """Runs task files of the role on a node, the way ansible-core orders them."""

    def __init__(self, node: Node, check_mode: bool = False):
        self.node = node
        self.check_mode = check_mode
        self.acting = True  # False while a module runs in check mode: it reports, and changes nothing
        self.env = jinja()
        defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
        self.vars = {
            **defaults,
            "schulki_plan_node_kind": "gpu",
            "ansible_facts": {"distribution": "Ubuntu", "distribution_release": "noble"},
            "ansible_check_mode": check_mode,
        }
        handlers = ROLE / "handlers" / "main.yml"
        self.handlers = {h["name"]: h for h in yaml.safe_load(handlers.read_text())} if handlers.exists() else {}
        self.notified: list[str] = []
        self.changed: list[str] = []

    def value(self, text):
        if not isinstance(text, str) or "{{" not in text:
            return text
        return self.env.from_string(text.strip()).render(self.vars)

    def condition(self, when) -> bool:
        conditions = when if isinstance(when, list) else [when]
        return all(self.env.from_string("{{ (" + str(c).strip() + ") }}").render(self.vars) is True for c in conditions)

    def run_file(self, path: Path) -> None:
        for task in yaml.safe_load(path.read_text()):
            self.run_task(task)

    def run_task(self, task: dict) -> None:
        # A task's vars, rendered before its when (ansible-core templates them lazily, to the same values here).
        self.vars.update({k: self.value(v) for k, v in task.get("vars", {}).items()})
        if "when" in task and not self.condition(task["when"]):
            if task.get("register"):
                self.vars[task["register"]] = {"skipped": True, "changed": False}
            return
        if "loop" in task:  # each item as a task of its own; the registered result lists them
            results = []
            for item in self.value(task["loop"]):
                self.vars["item"] = item
                self.run_task({k: v for k, v in task.items() if k not in ("loop", "register")} | {"register": "_item_result"})
                results.append(self.vars.pop("_item_result"))
            if task.get("register"):
                self.vars[task["register"]] = {"results": results, "changed": any(r.get("changed") for r in results)}
            return
        module = next(k for k in task if k.startswith("ansible.builtin."))
        args = {k: self.value(v) for k, v in (task[module] or {}).items()} if isinstance(task[module], dict) else task[module]
        if module == "ansible.builtin.include_tasks":
            self.run_file(ROLE / "tasks" / args)
            return
        if self.check_mode and task.get("check_mode") is not False and module == "ansible.builtin.command":
            result = {"skipped": True}  # command has no check mode: ansible-core skips it
        else:
            self.acting = not self.check_mode or task.get("check_mode") is False
            result = getattr(self, module.rsplit(".", 1)[1])(args)
        if "changed_when" in task and not result.get("skipped"):
            result["changed"] = self.value(task["changed_when"]) if isinstance(task["changed_when"], str) else task["changed_when"]
        if result.get("failed") and task.get("failed_when") is not False:
            raise StepFailed(f"{task['name']}: {result.get('msg', '')}")
        if task.get("register"):
            self.vars[task["register"]] = result
        if result.get("changed") and task["name"] not in self.changed[-1:]:
            self.changed.append(task["name"])
            notify = task.get("notify", [])
            self.notified += [notify] if isinstance(notify, str) else notify

    def flush_handlers(self) -> None:
        for name in dict.fromkeys(self.notified):
            self.run_task(self.handlers[name])
        self.notified = []

    # The modules the role uses, with the behaviour of the real ones.

    def deb822_repository(self, args: dict) -> dict:
        if "python3-debian" not in self.node.installed:
            return {"failed": True, "msg": "Failed to import the required Python library (python3-debian)"}
        key = str(args.get("signed_by", ""))
        if "://" in key:
            self.node.downloads.append(key)  # the module fetches a URL on every run, to compare it
        new = args["name"] not in self.node.repositories
        if self.acting:
            self.node.repositories.add(args["name"])
        return {"changed": new}

    def get_url(self, args: dict) -> dict:
        folder = args["dest"].rsplit("/", 1)[0]
        if folder not in self.node.files and self.acting:
            return {"failed": True, "msg": f"Destination {folder} does not exist"}
        if args["dest"] in self.node.files and not args.get("force"):
            return {"changed": False}
        if self.acting:
            self.node.downloads.append(args["url"])
            self.node.files.add(args["dest"])
        return {"changed": True}

    def file(self, args: dict) -> dict:
        new = args["path"] not in self.node.files
        if self.acting:
            self.node.files.add(args["path"])
        return {"changed": new}

    def set_fact(self, args: dict) -> dict:
        self.vars.update(args)
        return {"changed": False}

    def debug(self, args: dict) -> dict:
        return {"changed": False, "msg": args.get("msg")}

    def apt(self, args: dict) -> dict:
        if "python3-apt" not in self.node.installed:
            if not self.acting:
                return {"failed": True, "msg": "python3-apt must be installed to use check mode."}
            self.node.installed.add("python3-apt")  # the module installs it itself in a real run
        update, valid = bool(args.get("update_cache")), int(args.get("cache_valid_time") or 0)
        refreshed = False
        if self.acting and (update or valid) and not (valid and self.node.now - self.node.lists_refreshed <= valid):
            self.node.repositories_in_lists = set(self.node.repositories)
            self.node.lists_refreshed = self.node.now
            refreshed = True
        names = args["name"] if isinstance(args["name"], list) else [args["name"]]
        missing = [n for n in names if n not in self.node.installed]
        for name in missing:
            if PACKAGE_REPOSITORY[name] not in self.node.repositories_in_lists | {"debian"}:
                return {"failed": True, "msg": f"No package matching '{name}' is available"}
        if self.acting:
            self.node.installed.update(missing)
        return {"changed": bool(missing), "cache_updated": refreshed}

    def service(self, args: dict) -> dict:
        if "docker-ce" not in self.node.installed:
            return {"failed": True, "msg": "Could not find the requested service docker: host"}
        if not self.acting:
            return {"changed": args["state"] == "restarted" or not self.node.docker_running}
        if args["state"] == "restarted" or not self.node.docker_running:
            self.node.start_docker()
            return {"changed": True}
        if args["state"] == "reloaded":
            self.node.reload_docker()
            return {"changed": True}
        return {"changed": False}

    def copy(self, args: dict) -> dict:
        assert args["dest"] == "/etc/docker/daemon.json", args
        new = args["content"] != self.node.daemon_json
        if self.acting:
            self.node.daemon_json = args["content"]
        return {"changed": new}

    def dpkg_selections(self, args: dict) -> dict:
        if args["name"] not in self.node.installed:
            return {"failed": True, "msg": f"Failed to find package '{args['name']}' to perform selection '{args['selection']}'."}
        new = args["name"] not in self.node.held
        if self.acting:
            self.node.held.add(args["name"])
        return {"changed": new}

    def slurp(self, args: dict) -> dict:
        if self.node.daemon_json is None:
            return {"failed": True, "msg": "file not found"}
        return {"content": base64.b64encode(self.node.daemon_json.encode()).decode()}

    def command(self, args: dict) -> dict:
        argv = shlex.split(args["cmd"])
        if argv[0] == "dpkg-query":
            known = [p for pattern in argv[3:] for p in sorted(self.node.installed) if fnmatch.fnmatch(p, pattern)]
            if "${Package}" in argv[2]:
                stdout = "".join(f"{p}=installed," for p in known)
            else:
                stdout = "installed" if known else ""
            return {"rc": 0 if len(known) == len(argv[3:]) else 1, "stdout": stdout, "changed": True}
        if argv[:3] == ["nvidia-ctk", "runtime", "configure"]:
            # nvidia-ctk adds its runtime to the settings that are there, and keeps them.
            settings = json.loads(self.node.daemon_json) if self.node.daemon_json else {}
            self.node.daemon_json = json.dumps({**settings, "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}})
            return {"rc": 0, "changed": True}
        if argv[:2] == ["docker", "info"]:
            if "docker-ce" not in self.node.installed:
                return {"failed": True, "rc": 2, "msg": "[Errno 2] No such file or directory: b'docker'"}
            assert argv[2:] == ["--format", "{{json .Runtimes}}"], argv
            return {"rc": 0, "stdout": json.dumps({r: {} for r in sorted(self.node.loaded_runtimes)}), "changed": True}
        raise AssertionError(f"the model has no command {argv}")


def roll_out(node: Node, check_mode: bool = False) -> Play:
    """The role, then the stack's `docker compose up` of the GPU services, then the play's handlers."""
    play = Play(node, check_mode)
    play.run_file(ROLE / "tasks" / "main.yml")
    if check_mode:
        return play  # the stack's compose commands do not run in check mode
    if "nvidia" not in node.loaded_runtimes:
        raise StepFailed('docker compose up: could not select device driver "nvidia" with capabilities: [[gpu]]')
    play.flush_handlers()
    return play


def test_a_fresh_gpu_node_gets_the_toolkit_and_a_docker_that_loaded_it_before_the_stack_starts():
    node = Node()
    roll_out(node)
    assert {"docker-ce", "nvidia-container-toolkit"} <= node.installed
    assert "nvidia" in node.loaded_runtimes


def test_the_second_run_changes_nothing_and_restarts_nothing():
    node = Node()
    roll_out(node)
    restarts = node.restarts
    node.now += 7200
    again = roll_out(node)
    assert again.changed == [] and node.restarts == restarts


def test_a_node_whose_last_run_stopped_before_docker_restarted_is_repaired():
    """daemon.json names the nvidia runtime already, but the running daemon never loaded it."""
    node = Node(
        repositories={"docker", "nvidia-container-toolkit"},
        repositories_in_lists={"docker", "nvidia-container-toolkit"},
        installed=set(PACKAGE_REPOSITORY),
        daemon_json=json.dumps({"runtimes": {"nvidia": {}}}),
    )
    node.docker_running, node.loaded_runtimes = True, {"runc"}
    play = roll_out(node)
    assert "nvidia" in node.loaded_runtimes and any("Restart" in name for name in play.changed)


def test_a_node_whose_last_run_stopped_after_adding_the_repository_installs_the_toolkit():
    node = Node(
        repositories={"docker", "nvidia-container-toolkit"},
        repositories_in_lists={"docker"},
        installed={"docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"},
    )
    node.lists_refreshed = node.now - 60
    roll_out(node)
    assert "nvidia-container-toolkit" in node.installed


def test_the_model_catches_a_cache_valid_time_that_hides_a_new_repository():
    """The model itself: an install that trusts an hour-old cache after adding a repository fails, as apt would."""
    play = Play(Node(installed={"python3-debian"}))
    play.run_task({"name": "Add a repository", "ansible.builtin.deb822_repository": {"name": "nvidia-container-toolkit"}})
    with pytest.raises(StepFailed, match="No package matching"):
        play.run_task(
            {
                "name": "Install it",
                "ansible.builtin.apt": {"name": "nvidia-container-toolkit", "update_cache": True, "cache_valid_time": 3600},
            }
        )


@pytest.mark.parametrize("preinstalled", [set(), {"python3-apt"}], ids=["trimmed", "standard"])
def test_check_mode_on_a_fresh_host_without_docker_passes_and_changes_nothing(preinstalled):
    """The README's --check step on a fresh Debian 12: no python3-debian, no Docker, no key yet (a trimmed image lacks python3-apt too)."""
    node = Node(installed=set(preinstalled))
    play = roll_out(node, check_mode=True)
    assert node.installed == preinstalled and node.repositories == set() and node.files == set() and node.downloads == []
    assert not node.docker_running and node.restarts == 0
    assert "Download Docker's signing key once" in play.changed
    if preinstalled:
        assert "Install the library that apt repositories in deb822 format need" in play.changed, play.changed
    roll_out(node)  # the real run after the check still works
    assert {"python3-debian", "docker-ce", "nvidia-container-toolkit"} <= node.installed and "nvidia" in node.loaded_runtimes


def test_check_mode_on_a_host_that_has_everything_reports_no_change():
    node = Node()
    roll_out(node)
    node.now += 7200
    assert roll_out(node, check_mode=True).changed == []


def test_the_signing_keys_are_downloaded_once_not_on_every_run():
    node = Node()
    roll_out(node)
    first = list(node.downloads)
    assert len(first) == 2 and len(set(first)) == 2, first  # Docker's key and NVIDIA's
    for _ in range(2):
        node.now += 7200
        roll_out(node)
    assert node.downloads == first, "a later run fetches no key again"


DRIVER = {"nvidia-driver", "nvidia-kernel-dkms", "libcuda1", "libnvidia-ml1"}  # Debian's driver, installed by the admin


def test_the_nvidia_driver_and_toolkit_are_held_once_installed_and_nothing_else():
    node = Node(installed={"python3-apt", "linux-image-amd64", *DRIVER})
    play = roll_out(node)
    assert node.held == DRIVER | {"nvidia-container-toolkit"}, "an unattended upgrade must not swap them under running containers"
    node.now += 7200
    assert roll_out(node).changed == [], "a held package is not held again"
    assert "Hold the NVIDIA packages so that apt upgrades them only when the admin says so" in play.changed


def test_docker_keeps_containers_running_over_its_own_restart_and_keeps_the_nvidia_runtime():
    node = Node(
        repositories={"docker"},
        repositories_in_lists={"docker"},
        installed={"python3-apt", "python3-debian", "docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"},
        daemon_json=json.dumps({"log-driver": "local"}),
    )
    node.start_docker()
    roll_out(node)
    settings = json.loads(node.daemon_json)
    assert settings["live-restore"] is True and settings["log-driver"] == "local" and "nvidia" in settings["runtimes"]
    assert node.live_restore, "the running engine took it (a reload), not only daemon.json"
    node.now += 7200
    assert roll_out(node).changed == []
