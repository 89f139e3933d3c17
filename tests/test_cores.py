"""How ``schulki up`` divides the cores: the derived split, settings that win over it, and what each service process gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from schulki.config import Config
from schulki.cores import available_cores, derive_split, physical_cores, resolve_split, service_environment

from tests.up_stack import UpProcess


def cores(count: int) -> list[tuple[int, ...]]:
    """count physical cores of one CPU each, numbered from 0."""
    return [(cpu,) for cpu in range(count)]


@pytest.mark.parametrize(
    ("count", "chat", "background_threads"),
    [(2, 1, 1), (4, 3, 1), (8, 6, 2), (16, 12, 4)],
)
def test_the_chat_keeps_all_but_a_quarter_of_the_cores(count, chat, background_threads):
    split = derive_split(cores(count))
    assert split.chat_cpus == tuple(range(chat))
    assert split.background_cpus == tuple(range(chat, count))  # the rest, none of them the chat's
    assert (split.inference_threads, split.inference_batch_threads) == (chat, chat)
    assert (split.embeddings_threads, split.transcription_threads) == (background_threads, background_threads)
    assert split.background_nice == 5


def test_one_core_is_shared_and_only_the_priority_divides_it():
    split = derive_split(cores(1))
    assert split.chat_cpus == split.background_cpus == (0,)
    assert (split.inference_threads, split.embeddings_threads, split.transcription_threads) == (1, 1, 1)


def test_hyperthreads_stay_with_their_core_and_count_once():
    siblings = [(core, core + 8) for core in range(8)]  # 8 cores, 16 CPUs, numbered as Linux does
    split = derive_split(siblings)
    assert split.inference_threads == 6 and split.embeddings_threads == 2
    assert sorted(split.chat_cpus) == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]
    assert sorted(split.background_cpus) == [6, 7, 14, 15]


def test_physical_cores_are_read_from_the_topology(tmp_path):
    for cpu, core in [(0, 0), (1, 1), (2, 0), (3, 1)]:
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert physical_cores([3, 2, 1, 0], tmp_path) == [(0, 2), (1, 3)]
    assert physical_cores([0, 7], tmp_path) == [(0,), (7,)]  # cpu7 has no topology: a core of its own


def test_chat_cores_replaces_the_quarter_rule():
    assert derive_split(cores(8), chat_cores=4).chat_cpus == (0, 1, 2, 3)
    everything = derive_split(cores(4), chat_cores=9)  # more than there are: the chat keeps all, the rest runs beside it
    assert everything.chat_cpus == everything.background_cpus == (0, 1, 2, 3)
    assert everything.inference_threads == 4


def test_explicit_thread_settings_win_over_the_derived_ones():
    config = Config(
        inference={"threads": 3, "batch_threads": 5},
        embeddings={"threads": 2},
        transcription={"threads": 0},
        cores={"background_nice": 7},
    )
    split = resolve_split(config, cores(8))
    assert (split.inference_threads, split.inference_batch_threads) == (3, 5)
    assert split.embeddings_threads == 2
    assert split.transcription_threads == 0  # set to 0 on purpose: CTranslate2 chooses, not the split
    assert split.chat_cpus == tuple(range(6)) and split.background_nice == 7

    derived = resolve_split(Config(), cores(8))
    assert (derived.inference_threads, derived.embeddings_threads, derived.transcription_threads) == (6, 2, 2)

    assert derived.chat_cpus == tuple(range(6)) and derived.background_cpus == (6, 7)

    unpinned = resolve_split(Config(cores={"pin": False}), cores(8))
    assert unpinned.chat_cpus == unpinned.background_cpus == () and unpinned.inference_threads == 6


def test_each_service_reads_its_share_from_the_environment_it_is_given(monkeypatch):
    split = derive_split(cores(8))
    seen = {}
    for service in ("inference", "embeddings", "transcription", "retrieval"):
        for name, value in service_environment(split, service).items():
            monkeypatch.setenv(name, value)
        seen[service] = Config()
        for name in service_environment(split, service):
            monkeypatch.delenv(name)
    assert seen["inference"].inference.threads == 6 and seen["inference"].inference.batch_threads == 6
    assert seen["inference"].runtime.cpu_cores == [0, 1, 2, 3, 4, 5] and seen["inference"].runtime.nice == 0
    assert seen["embeddings"].embeddings.threads == 2 and seen["embeddings"].runtime.cpu_cores == [6, 7]
    assert seen["embeddings"].runtime.nice == 5
    assert seen["transcription"].transcription.threads == 2 and seen["transcription"].runtime.nice == 5
    assert seen["retrieval"].runtime.cpu_cores == [6, 7] and seen["retrieval"].inference.threads is None
    assert service_environment(None, "embeddings") == {"SCHULKI_RUNTIME__NICE": "0"}  # split off: threads as before


def test_schulki_serve_moves_itself_onto_its_cores_before_it_loads_anything():
    cpus = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "SCHULKI_RUNTIME__CPU_CORES": json.dumps(cpus[-1:]), "SCHULKI_RUNTIME__NICE": "3"}
    code = (
        "import os; from schulki.config import Config; from schulki.cores import apply_placement; before = os.nice(0); "
        "apply_placement(Config().runtime); print(sorted(os.sched_getaffinity(0)), os.nice(0) - before)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("]")[0] + "]" == str(cpus[-1:]) and out.split("]")[1].strip() == "3"


def _placement(pid: int) -> tuple[dict[str, str], list[int], int]:
    """A process's SCHULKI_ settings, the CPUs it may run on and its niceness, as the kernel reports them."""
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if item.startswith("SCHULKI_")
    )
    status = Path(f"/proc/{pid}/status").read_text()
    allowed = next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
    cpus = []
    for part in allowed.split(","):
        low, _, high = part.partition("-")
        cpus += range(int(low), int(high or low) + 1)
    nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    return environ, cpus, nice


def test_schulki_up_gives_each_service_its_pinned_share_and_a_given_setting_wins(tmp_path):
    expected = derive_split(available_cores())
    env = {
        "SCHULKI_INFERENCE__CONTEXT_LENGTH": "512",
        "SCHULKI_INFERENCE__PARALLEL_SEQUENCES": "1",
        "SCHULKI_EMBEDDINGS__THREADS": "2",  # set by the admin: wins over the derived count
    }
    with UpProcess(tmp_path, services=("inference", "embeddings", "retrieval"), env=env) as up:
        up.wait_until_running()
        pids = up.service_pids()
        own_nice = os.getpriority(os.PRIO_PROCESS, up.process.pid)
        inference, embeddings, retrieval = (_placement(pids[name]) for name in ("inference", "embeddings", "retrieval"))
    assert inference[0]["SCHULKI_INFERENCE__THREADS"] == str(expected.inference_threads)
    assert inference[0]["SCHULKI_INFERENCE__BATCH_THREADS"] == str(expected.inference_batch_threads)
    assert inference[1] == sorted(expected.chat_cpus) and inference[2] == own_nice
    assert embeddings[0]["SCHULKI_EMBEDDINGS__THREADS"] == "2"
    assert embeddings[1] == sorted(expected.background_cpus) and embeddings[2] == own_nice + 5
    assert retrieval[1] == sorted(expected.background_cpus) and retrieval[2] == own_nice + 5
    assert any("chat on" in line for line in up.output)  # the admin is told who got which cores


def test_with_the_split_off_schulki_up_leaves_threads_and_cores_as_before(tmp_path):
    with UpProcess(tmp_path, services=("embeddings",), env={"SCHULKI_CORES__SPLIT": "false"}) as up:
        up.wait_until_running()
        environ, cpus, nice = _placement(up.service_pids()["embeddings"])
        own_nice = os.getpriority(os.PRIO_PROCESS, up.process.pid)
    assert "SCHULKI_EMBEDDINGS__THREADS" not in environ and "SCHULKI_RUNTIME__CPU_CORES" not in environ
    assert cpus == sorted(os.sched_getaffinity(0)) and nice == own_nice
