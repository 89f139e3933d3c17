"""How ``schulki up`` divides one machine's cores between its engines, and how a service takes its share.

On one machine the chat (inference), embeddings, transcription and retrieval
run side by side. Left alone, each engine sizes its thread pool to the whole
machine, and while a teacher's upload is embedded the llama.cpp threads of
embeddings and inference fight for the same cores (their threads spin while
they wait for each other, so both slow down far more than by half). The split
gives the chat most of the cores for itself and leaves the rest to the engines
that only work in bursts (embeddings, transcription, the parsing in retrieval),
which also run at a lower priority. The reasons and measurements are in
docs/decisions.md ("Dividing one machine's cores").

``derive_split`` is the rule (a pure function of the cores); ``resolve_split``
lets explicit settings win; ``service_environment`` turns a split into the
settings of one child process; ``apply_placement`` is what ``schulki serve``
does with ``runtime.cpu_cores`` and ``runtime.nice`` before it loads a model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from schulki.config import Config, RuntimeConfig

BACKGROUND_SERVICES = ("embeddings", "transcription", "retrieval")
"""Services that work in bursts (an upload, a recording) and share the cores the chat leaves."""


@dataclass(frozen=True)
class CoreSplit:
    """Which cores (logical CPU numbers) the chat keeps, which the bursty services share, and each engine's threads."""

    chat_cpus: tuple[int, ...]
    """CPUs the inference processes run on (empty: every CPU, nothing pinned)."""
    background_cpus: tuple[int, ...]
    """CPUs embeddings, transcription and retrieval run on (empty: every CPU, nothing pinned)."""
    inference_threads: int
    inference_batch_threads: int
    embeddings_threads: int
    transcription_threads: int
    background_nice: int
    """Added to the niceness of embeddings, transcription and retrieval."""


def physical_cores(cpus: Sequence[int], sysfs: Path = Path("/sys/devices/system/cpu")) -> list[tuple[int, ...]]:
    """The CPUs grouped by the physical core they run on (hyperthreads of one core together), lowest CPU first.

    Where the topology cannot be read, every CPU counts as a core of its own."""
    groups: dict[tuple[str, str], list[int]] = {}
    for cpu in sorted(cpus):
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            key = ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
        except OSError:
            key = ("cpu", str(cpu))
        groups.setdefault(key, []).append(cpu)
    return [tuple(group) for group in groups.values()]


def derive_split(cores: Sequence[Sequence[int]], chat_cores: int | None = None, background_nice: int = 5) -> CoreSplit:
    """The default division of these physical cores (each a tuple of its logical CPUs).

    The chat keeps all but a quarter of the cores (at least one core is left for the rest): 2 cores give
    1 + 1, 4 give 3 + 1, 8 give 6 + 2, 16 give 12 + 4. Each engine gets one thread per physical core of its
    share (llama.cpp and CTranslate2 gain little from a core's second hyperthread). On one core everything
    shares it and only the priority divides it. chat_cores, when given, replaces the quarter rule."""
    if not cores:
        raise ValueError("no CPU to divide")
    count = len(cores)
    if count == 1:
        everything = tuple(cores[0])
        return CoreSplit(everything, everything, 1, 1, 1, 1, background_nice)
    chat = count - max(1, count // 4) if chat_cores is None else min(max(chat_cores, 1), count)
    chat_share, rest = cores[:chat], cores[chat:] or cores  # the chat keeping every core: the rest runs beside it
    chat_cpus = tuple(cpu for core in chat_share for cpu in core)
    background_cpus = tuple(cpu for core in rest for cpu in core)
    return CoreSplit(
        chat_cpus=chat_cpus,
        background_cpus=background_cpus,
        inference_threads=len(chat_share),
        inference_batch_threads=len(chat_share),
        embeddings_threads=len(rest),
        transcription_threads=len(rest),
        background_nice=background_nice,
    )


def available_cores() -> list[tuple[int, ...]]:
    """The physical cores this process may run on (its affinity mask, e.g. under ``taskset``)."""
    return physical_cores(sorted(os.sched_getaffinity(0)))


def resolve_split(config: Config, cores: Sequence[Sequence[int]]) -> CoreSplit:
    """The split for these cores with the settings applied: an engine's thread setting, where given, wins over the derived one,
    and ``cores.pin`` off leaves every process on every core."""
    split = derive_split(cores, config.cores.chat_cores, config.cores.background_nice)

    def given(section: BaseModel, field: str, derived: int) -> int:
        value = getattr(section, field)
        return value if field in section.model_fields_set and value is not None else derived

    return CoreSplit(
        chat_cpus=split.chat_cpus if config.cores.pin else (),
        background_cpus=split.background_cpus if config.cores.pin else (),
        inference_threads=given(config.inference, "threads", split.inference_threads),
        inference_batch_threads=given(config.inference, "batch_threads", split.inference_batch_threads),
        embeddings_threads=given(config.embeddings, "threads", split.embeddings_threads),
        transcription_threads=given(config.transcription, "threads", split.transcription_threads),
        background_nice=split.background_nice,
    )


def service_environment(split: CoreSplit | None, service: str) -> dict[str, str]:
    """The settings (as ``SCHULKI_`` environment variables) that give the child process of ``service`` its share.

    None (``cores.split`` off) gives no threads and no CPUs: every engine then sizes itself as before. The priority
    is always set, so that a ``runtime.nice`` given to ``schulki up`` itself (which its children inherit) is not
    applied twice."""
    if split is None:
        return {"SCHULKI_RUNTIME__NICE": "0"}
    if service == "inference":
        return {
            "SCHULKI_INFERENCE__THREADS": str(split.inference_threads),
            "SCHULKI_INFERENCE__BATCH_THREADS": str(split.inference_batch_threads),
            "SCHULKI_RUNTIME__CPU_CORES": _json_list(split.chat_cpus),
            "SCHULKI_RUNTIME__NICE": "0",
        }
    if service not in BACKGROUND_SERVICES:
        raise ValueError(f"unknown service {service!r}")
    settings = {"SCHULKI_RUNTIME__CPU_CORES": _json_list(split.background_cpus), "SCHULKI_RUNTIME__NICE": str(split.background_nice)}
    if service == "embeddings":
        settings["SCHULKI_EMBEDDINGS__THREADS"] = str(split.embeddings_threads)
    elif service == "transcription":
        settings["SCHULKI_TRANSCRIPTION__THREADS"] = str(split.transcription_threads)
    return settings


def describe(split: CoreSplit | None) -> str:
    """One line for the admin: who got which cores."""
    if split is None:
        return "schulki: cores not divided (cores.split is off): every engine uses its own default threads on every core"

    def where(cpus: tuple[int, ...]) -> str:
        return f"CPUs {','.join(map(str, cpus))}" if cpus else "every CPU"

    return (
        f"schulki: chat on {where(split.chat_cpus)} (threads: {split.inference_threads}); "
        f"embeddings (threads: {split.embeddings_threads}), transcription ({split.transcription_threads}) and retrieval "
        f"on {where(split.background_cpus)} at nice +{split.background_nice}"
    )


def apply_placement(runtime: RuntimeConfig) -> None:
    """Move this process onto runtime.cpu_cores and lower its priority by runtime.nice; called before any thread starts,
    since threads inherit the placement of the thread that makes them."""
    if runtime.cpu_cores:
        os.sched_setaffinity(0, runtime.cpu_cores)
    if runtime.nice:
        os.nice(runtime.nice)


def _json_list(cpus: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, cpus)) + "]"
