"""The quant planner: which quant of a model fits a machine, with how many GPU layers, and why.

One function, ``plan``, serves the Ansible filter plugin, ``schulki plan`` and
the inference service's start-up check. It estimates what llama.cpp will
allocate, the way llama.cpp allocates it:

- weights: the file's size;
- KV cache: 2 (K and V) x layers x KV heads x head size x cells x bytes per
  element, where cells are the context length of each parallel sequence
  (padded to 256, as llama.cpp pads). Gemma 3's local layers hold only the
  sliding window (plus one batch) of each sequence unless a full-size SWA cache
  is asked for (``full_swa_cache``; the inference engine runs without it, as
  llama-server does);
- compute buffer: the larger of the logits of one batch over the vocabulary
  (514 MiB for Gemma's 262k vocabulary and a 512-token batch) and the attention
  scores of one batch against the context (unless flash attention is on);
- a margin: 5 % plus, on a GPU, what the CUDA runtime takes beside llama.cpp.

It then picks, on a GPU, the best quant that fits in full (Q8_0 > Q6_K >
Q5_K_M > Q4_K_M), first with the asked workload, then with a lighter one (q8_0
KV cache, one sequence, a shorter context), then a marked last-resort quant,
and offloads layers to the CPU only after all of that; on a CPU it picks the
fastest quant at the quality floor. What does not fit is refused with the
memory it would need and a smaller model of the catalog that does fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from schulki.models.catalog import Catalog, Model, ModelFile, load_catalog

MiB = 1 << 20
GiB = 1 << 30
F32 = 4
KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
"""Bytes per KV cache element: q8_0 and q4_0 store blocks of 32 with one f16 scale."""
MARGIN_FRACTION = 0.05
GPU_RUNTIME_BYTES = 512 * MiB
"""The CUDA context and cuBLAS workspace: real, but not in llama.cpp's buffer log."""
OS_RESERVE_BYTES = 2 * GiB
"""RAM a CPU-only machine keeps for its system and the browser of whoever sits there."""
APPLE_GPU_SHARE = 0.75
"""Share of an Apple machine's unified memory that Metal lets one process wire."""
POOR_OFFLOAD_SHARE = 0.5
"""Below this share of layers on the GPU, decoding is mostly CPU-bound: too slow for a class."""
MIN_CONTEXT = 4096
"""The shortest context the planner falls back to so that every layer fits: a question about a few pages."""
DRIVER_RESERVED_BYTES = 512 * MiB
"""GPU memory assumed kept by the NVIDIA driver where nvidia-smi's memory.reserved is not known (an assumption, not a measurement)."""
NODE_KINDS = ("gpu", "cpu", "apple")


@dataclass(frozen=True)
class Workload:
    """How the inference service will run the model."""

    context_length: int = 4096
    """Tokens of context of each parallel sequence."""
    parallel: int = 1
    """Sequences decoded at once; each has its own KV cache of context_length tokens."""
    batch_size: int = 512
    """Tokens evaluated at once while reading a prompt (llama.cpp's n_ubatch)."""
    kv_cache_type: str = "f16"
    flash_attention: bool = False
    full_swa_cache: bool = True
    """Local (sliding-window) layers keep the whole context too (llama.cpp's library default). The inference
    engine runs with it off unless inference.full_swa_cache is set."""


@dataclass(frozen=True)
class Machine:
    """What a host offers the chat model."""

    kind: str
    """gpu (GPU memory), cpu (RAM only) or apple (unified memory used by Metal)."""
    memory_bytes: int
    """GPU memory of a gpu machine; RAM of a cpu or apple machine."""
    ram_bytes: int | None = None
    """RAM of a gpu machine, for layers left on the CPU; None means not checked."""
    reserved_bytes: int = 0
    """Memory taken on the same device by the other services of the host."""
    name: str = "this machine"
    driver_reserved_bytes: int = 0
    """GPU memory the driver keeps for itself (part of memory.total, never usable); 0 where memory_bytes is already free memory."""

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise ValueError(f"machine kind must be one of {', '.join(NODE_KINDS)}, not {self.kind!r}")
        if self.memory_bytes <= 0:
            raise ValueError(f"memory of {self.name} must be positive")

    @property
    def budget(self) -> int:
        """Bytes the chat model may use on its device."""
        if self.kind == "cpu":
            available = self.memory_bytes - OS_RESERVE_BYTES
        elif self.kind == "apple":
            available = int(self.memory_bytes * APPLE_GPU_SHARE)
        else:
            available = self.memory_bytes - self.driver_reserved_bytes
        return max(0, available - self.reserved_bytes)


@dataclass(frozen=True)
class Estimate:
    """Bytes one model takes on its device, by part."""

    weights: int
    kv_cache: int
    compute: int
    output: int
    margin: int

    @property
    def llama_total(self) -> int:
        """What llama.cpp itself reports allocating (everything but the margin)."""
        return self.weights + self.kv_cache + self.compute + self.output

    @property
    def total(self) -> int:
        return self.llama_total + self.margin


@dataclass(frozen=True)
class Plan:
    """The planner's answer for one model on one machine."""

    model: str
    quant: str
    file: str
    context_length: int
    parallel: int
    gpu_layers: int
    layers: int
    fits: bool
    estimate: Estimate
    budget: int
    reason: str
    last_resort: bool = False
    suggestion: str | None = None
    machine: str = "this machine"
    kind: str = "gpu"
    notes: tuple[str, ...] = field(default=())
    kv_cache_type: str = "f16"
    workload_steps: int = 0
    """How many of ``lighter_workloads`` were taken to make every layer fit (0: the workload as asked)."""

    def as_dict(self) -> dict:
        data = asdict(self)
        data["estimate"]["total"] = self.estimate.total
        data["notes"] = list(self.notes)
        return data


def _pad(n: int, to: int = 256) -> int:
    return -(-n // to) * to


def is_encoder(model: Model) -> bool:
    """Embedding models (BERT family) attend both ways and keep no KV cache."""
    return model.kind == "embeddings"


def kv_cache_bytes(model: Model, work: Workload) -> int:
    """The KV cache llama.cpp allocates: one stream of cells per parallel sequence."""
    if is_encoder(model):
        return 0
    per_cell_layer = 2 * model.kv_heads * model.head_dim * KV_ELEMENT_BYTES[work.kv_cache_type]
    cells = _pad(work.context_length) * work.parallel
    global_layers = model.global_layers
    local_layers = model.layers - global_layers
    local_cells = cells
    if local_layers and not work.full_swa_cache:
        local_cells = work.parallel * _pad(min(_pad(work.context_length), model.sliding_window + work.batch_size))
    return int(per_cell_layer * (global_layers * cells + local_layers * local_cells))


def compute_bytes(model: Model, work: Workload) -> int:
    """llama.cpp's compute buffer: the peak of one batch's graph, dominated by logits or attention."""
    if is_encoder(model):
        tokens = min(work.batch_size, work.context_length)
        attention = tokens * tokens * model.attention_heads * F32
        hidden_out = 2 * tokens * model.hidden * F32
    else:
        tokens = min(work.batch_size, _pad(work.context_length) * work.parallel)
        scores = 0 if work.flash_attention else tokens * _pad(work.context_length) * model.attention_heads * F32
        attention = scores
        hidden_out = tokens * model.vocab * F32 + 2 * tokens * model.hidden * F32
    activations = tokens * (model.feed_forward_size + 2 * model.hidden) * F32
    return int(max(hidden_out, attention + activations))


def output_bytes(model: Model, work: Workload) -> int:
    """The logits (or embeddings) of the last token of each sequence."""
    width = model.hidden if is_encoder(model) else model.vocab
    return width * F32 * max(1, work.parallel)


PARALLEL_CAPS = {"cpu": 16, "apple": 8}
"""Most sequences by node kind; on a GPU by memory: see default_parallel."""
PARALLEL_KV_SHARE = 0.25
"""The KV caches of all sequences may take at most this share of the budget, so the weights keep a good quant."""


def default_parallel(model: Model, machine: Machine, work: Workload) -> int:
    """Sequences to decode at once when the admin sets none: the most (a power of two, at most the kind's cap)
    whose KV caches take at most a quarter of the budget. Batching reads the weights once for all of them, so
    more sequences cost little speed each until the cores (CPU) or the memory (GPU) run out."""
    if machine.kind == "gpu":
        cap = 4 if machine.memory_bytes < 12 * GiB else 8 if machine.memory_bytes < 20 * GiB else 16
    else:
        cap = PARALLEL_CAPS[machine.kind]
    one = kv_cache_bytes(model, replace(work, parallel=1))
    parallel = cap
    while parallel > 1 and parallel * one > PARALLEL_KV_SHARE * machine.budget:
        parallel //= 2
    return parallel


def estimate(model: Model, file: ModelFile, work: Workload, kind: str = "gpu") -> Estimate:
    """Bytes the model takes with this file and workload, all layers on one device."""
    weights = file.size_bytes
    kv = kv_cache_bytes(model, work)
    compute = compute_bytes(model, work)
    output = output_bytes(model, work)
    margin = int(MARGIN_FRACTION * (weights + kv + compute + output)) + (GPU_RUNTIME_BYTES if kind == "gpu" else 0)
    return Estimate(weights=weights, kv_cache=kv, compute=compute, output=output, margin=margin)


def offloadable_layers(catalog: Catalog, model: Model, file: ModelFile, work: Workload, budget: int) -> int:
    """How many of the model's layers, with their KV cache, fit beside the compute buffer on the GPU."""
    full = estimate(model, file, work, "gpu")
    bpw = catalog.bits_per_weight.get(file.quant, 8.0)
    vocab_bytes = model.vocab * model.hidden * bpw / 8
    layer_bytes = max(file.size_bytes - 2 * vocab_bytes, file.size_bytes * 0.5) / model.layers
    kv_layer = full.kv_cache / model.layers
    fixed = full.compute + full.output + GPU_RUNTIME_BYTES
    per_layer = (layer_bytes + kv_layer) * (1 + MARGIN_FRACTION)
    room = budget - fixed * (1 + MARGIN_FRACTION)
    return max(0, min(model.layers - 1, int(room // per_layer)))


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _fits(model: Model, file: ModelFile, work: Workload, machine: Machine) -> Estimate | None:
    est = estimate(model, file, work, machine.kind)
    return est if est.total <= machine.budget else None


def smaller_model(catalog: Catalog, model: Model, work: Workload, machine: Machine) -> tuple[str, str] | None:
    """The strongest smaller chat model of the catalog that fits in full with a standard quant."""
    best = None
    for other in catalog.of_kind(model.kind):
        if other.test_only or other.fill_in_the_middle or other.parameters >= model.parameters:
            continue
        other_work = replace(work, context_length=min(work.context_length, other.training_context))
        for f in other.files:
            if f.last_resort:
                continue
            if _fits(other, f, other_work, machine):
                key = (other.german == "good", other.parameters, catalog.quant_rank(f.quant))
                if best is None or key > best[0]:
                    best = (key, other.id, f.quant)
                break
    return (best[1], best[2]) if best else None


def lighter_workloads(work: Workload, machine: Machine) -> list[tuple[Workload, str]]:
    """Cheaper ways to run the same model, mildest first; each keeps the changes of the one before.

    A q8_0 KV cache costs almost no quality (llama.cpp quantizes the V cache
    only with flash attention), one conversation at a time costs waiting time,
    and a shorter context costs what a conversation can hold, so they come in
    that order, and the context never goes below MIN_CONTEXT.
    """
    steps = []
    current = work
    if machine.kind != "cpu" and current.kv_cache_type == "f16" and current.flash_attention:
        current = replace(current, kv_cache_type="q8_0")
        steps.append((current, "a q8_0 KV cache"))
    if current.parallel > 1:
        current = replace(current, parallel=1)
        steps.append((current, "one conversation at a time"))
    floor = min(MIN_CONTEXT, current.context_length)
    while current.context_length > floor:
        current = replace(current, context_length=max(floor, current.context_length // 2))
        steps.append((current, f"{current.context_length} tokens of context"))
    return steps


def _changes(requested: Workload, chosen: Workload) -> str:
    """What the planner gave up, in words: "a q8_0 KV cache, one conversation at a time and 4096 tokens of context"."""
    parts = []
    if chosen.kv_cache_type != requested.kv_cache_type:
        parts.append(f"a {chosen.kv_cache_type} KV cache")
    if chosen.parallel != requested.parallel:
        parts.append("one conversation at a time" if chosen.parallel == 1 else f"{chosen.parallel} conversations at a time")
    if chosen.context_length != requested.context_length:
        parts.append(f"{chosen.context_length} tokens of context")
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def cpu_order(catalog: Catalog, files: list[ModelFile]) -> list[ModelFile]:
    """The quants a CPU should try: the fastest (smallest) at or above the quality floor, then those below it, best first.

    Decoding on a CPU reads every weight once per token, so it is bound by
    memory bandwidth and a larger quant is slower in proportion to its size
    (Q8_0 about 1.7x slower than Q4_K_M); a lab PC shares that bandwidth with
    the desktop of whoever sits there. Quants above the fastest one at the
    floor are never worth their speed there.
    """
    floor = catalog.quant_rank(catalog.quality_floor) if catalog.quality_floor else 0
    at_floor = [f for f in files if catalog.quant_rank(f.quant) >= floor]
    below = [f for f in files if catalog.quant_rank(f.quant) < floor]
    fastest = min(at_floor, key=lambda f: f.size_bytes)
    return [fastest, *below] if at_floor else below


def minimum_memory(machine: Machine, need: int) -> int:
    """The device memory (GPU memory, RAM, or a Mac's unified memory) a machine needs so that `need` bytes fit beside the rest."""
    if machine.kind == "cpu":
        return need + OS_RESERVE_BYTES + machine.reserved_bytes
    if machine.kind == "apple":
        return int(need / APPLE_GPU_SHARE) + machine.reserved_bytes
    return need + machine.driver_reserved_bytes + machine.reserved_bytes


@dataclass
class _Ladder:
    """One planning: the model, the machine, the asked workload and the quants to try, with the notes gathered on the way."""

    catalog: Catalog
    model: Model
    machine: Machine
    work: Workload
    quant: str | None
    notes: list[str]
    candidates: list[ModelFile] = field(default_factory=list)
    standard: list[ModelFile] = field(default_factory=list)
    last_resort: list[ModelFile] = field(default_factory=list)
    ladder: list[tuple[Workload, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return {"gpu": "on the GPU", "cpu": "in RAM (CPU only)", "apple": "in unified memory (Metal)"}[self.machine.kind]

    @property
    def forced(self) -> str:
        return " (set by the admin)" if self.quant else ""

    @property
    def all_layers(self) -> int:
        return self.model.layers if self.machine.kind != "cpu" else 0

    def make(
        self, file: ModelFile, w: Workload, gpu_layers: int, fits: bool, reason: str, suggestion: str | None = None, steps: int = 0
    ) -> Plan:
        return Plan(
            model=self.model.id,
            quant=file.quant,
            file=file.file,
            context_length=w.context_length,
            parallel=w.parallel,
            gpu_layers=gpu_layers,
            layers=self.model.layers,
            fits=fits,
            estimate=estimate(self.model, file, w, self.machine.kind),
            budget=self.machine.budget,
            reason=reason,
            last_resort=file.last_resort,
            suggestion=suggestion,
            machine=self.machine.name,
            kind=self.machine.kind,
            notes=tuple(self.notes),
            kv_cache_type=w.kv_cache_type,
            workload_steps=steps,
        )

    def choose_candidates(self, exclude_quants: frozenset[str]) -> Plan | None:
        """Sort the quants into standard and last-resort ones; a refusal when the quality floor leaves none."""
        model, quant = self.model, self.quant
        self.candidates = [model.file_for(quant)] if quant else list(model.files)
        if exclude_quants and not quant:
            left_out = [f.quant for f in self.candidates if f.quant in exclude_quants]
            self.candidates = [f for f in self.candidates if f.quant not in exclude_quants]
            if left_out:
                self.notes.append(f"left out by the quality floor (measured mean KLD too high): {', '.join(left_out)}")
            if not self.candidates:
                return self.make(
                    model.files[-1],
                    self.work,
                    0,
                    False,
                    f"No quant of {model.id} meets the quality floor: every one was measured above it ({', '.join(left_out)}). Raise the floor or pick another model.",
                )
        self.standard = [f for f in self.candidates if not f.last_resort]
        self.last_resort = [f for f in self.candidates if f.last_resort]
        if self.machine.kind == "cpu" and self.standard and not quant:
            self.standard = cpu_order(self.catalog, self.standard)
        self.ladder = [(self.work, ""), *lighter_workloads(self.work, self.machine)]
        return None

    def why(self, f: ModelFile, w: Workload, est: Estimate) -> str:
        work, machine, model, where = self.work, self.machine, self.model, self.where
        lighter = (
            f" with {_changes(work, w)} (asked: {work.context_length} tokens x {work.parallel}, {work.kv_cache_type} KV cache)"
            if w != work
            else ""
        )
        needs = f"needs {_gib(est.total)} of {_gib(machine.budget)}"
        if machine.kind == "cpu" and not self.quant:
            slowest = max((g for g in model.files if not g.last_resort), key=lambda g: g.size_bytes)
            slower = (
                (
                    f" A CPU reads every weight once per token, so {slowest.quant} would decode about "
                    f"{slowest.size_bytes / f.size_bytes:.1f}x slower."
                )
                if slowest.size_bytes > f.size_bytes
                else ""
            )
            return f"{f.quant} is the fastest quant at the quality floor and fits {where}{lighter}: {needs}.{slower}"
        if w != work:
            return (
                f"{f.quant}{self.forced} fits {where} in full{lighter}: {needs}. Every layer on the GPU decodes several times "
                f"faster than layers left on the CPU."
            )
        standard = self.standard
        rank = standard.index(f) if f in standard else 0
        better = (
            f" {standard[rank - 1].quant} would need {_gib(estimate(model, standard[rank - 1], work, machine.kind).total)}." if rank else ""
        )
        return f"{f.quant}{self.forced} fits {where}: {needs}.{better}"

    def in_full(self) -> Plan | None:
        """The best standard quant whose every layer fits, with the asked workload or the lightest step that needs."""
        for steps, (w, _) in enumerate(self.ladder):
            for f in self.standard:
                est = _fits(self.model, f, w, self.machine)
                if est:
                    return self.make(f, w, self.all_layers, True, self.why(f, w, est), steps=steps)
        return None

    def last_resort_in_full(self) -> Plan | None:
        for steps, (w, _) in enumerate(self.ladder):
            for f in self.last_resort:
                est = _fits(self.model, f, w, self.machine)
                if est:
                    alt = smaller_model(self.catalog, self.model, w, self.machine)
                    hint = f" Better: {alt[0]} ({alt[1]} fits in full)." if alt else ""
                    lighter = f" with {_changes(self.work, w)}" if w != self.work else ""
                    return self.make(
                        f,
                        w,
                        self.all_layers,
                        True,
                        f"Last resort: only {f.quant} fits {self.where}{lighter} ({_gib(est.total)} of {_gib(self.machine.budget)}); "
                        f"answers get noticeably worse.{hint}",
                        alt[0] if alt else None,
                        steps,
                    )
        return None

    def split_between_gpu_and_cpu(self, alt: tuple[str, str] | None, hint: str) -> Plan | None:
        """On a GPU: as many layers of the lowest standard quant as fit, when that is at least half and the RAM holds the rest."""
        model, machine, work, ladder, budget = self.model, self.machine, self.work, self.ladder, self.machine.budget
        if machine.kind != "gpu" or not self.standard:
            return None
        lowest = self.standard[-1]
        for steps, (w, _) in enumerate(ladder):
            n = offloadable_layers(self.catalog, model, lowest, w, budget)
            if n < model.layers * POOR_OFFLOAD_SHARE:
                continue
            on_cpu = estimate(model, lowest, w, "cpu").total
            offload = f"{n} of {model.layers} layers of {lowest.quant} go on the GPU, the rest run on the CPU (slower)"
            lighter = f" with {_changes(work, w)}" if w != work else ""
            if machine.ram_bytes is not None and on_cpu > machine.ram_bytes - OS_RESERVE_BYTES:
                return self.make(
                    lowest,
                    w,
                    n,
                    False,
                    f"Does not fit: {offload}{lighter}, but the CPU part needs up to {_gib(on_cpu)} of RAM and "
                    f"{machine.name} has {_gib(machine.ram_bytes)}.{hint}",
                    alt[0] if alt else None,
                    steps,
                )
            if machine.ram_bytes is None:
                self.notes.append("RAM not given: the playbook checks it on the host")
            better = f" Faster: {alt[0]} ({alt[1]} fits in full)." if alt else ""
            return self.make(
                lowest,
                w,
                n,
                True,
                f"No quant fits {_gib(budget)} in full, not even with {_changes(work, ladder[-1][0]) or 'the asked workload'} "
                f"({lowest.quant} needs {_gib(estimate(model, lowest, ladder[-1][0], machine.kind).total)}); {offload}{lighter}.{better}",
                alt[0] if alt else None,
                steps,
            )
        return None

    def refusal(self, alt: tuple[str, str] | None, hint: str) -> Plan:
        """Nothing fits: what the smallest quant with the lightest workload would need."""
        machine = self.machine
        smallest = min(self.candidates, key=lambda f: f.size_bytes)
        lightest = self.ladder[-1][0]
        need = estimate(self.model, smallest, lightest, machine.kind).total
        device = {"gpu": "a GPU", "cpu": "a machine", "apple": "a Mac"}[machine.kind]
        beside = f" (with {_gib(machine.reserved_bytes)} of it for transcription)" if machine.reserved_bytes else ""
        return self.make(
            smallest,
            lightest,
            0,
            False,
            f"Does not fit: even {smallest.quant} with {lightest.context_length} tokens x {lightest.parallel} needs {_gib(need)} {self.where}, "
            f"{_gib(machine.budget)} are free. {self.model.id} needs {device} with at least {_gib(minimum_memory(machine, need))}{beside}.{hint}",
            alt[0] if alt else None,
            len(self.ladder) - 1,
        )


def plan(
    model: str | Model,
    machine: Machine,
    work: Workload,
    quant: str | None = None,
    catalog: Catalog | None = None,
    exclude_quants: frozenset[str] = frozenset(),
) -> Plan:
    """The best way to run a model (a catalog id, or a Model read from a GGUF file) on one machine, and why.

    The rules, in order: on a GPU (or a Mac) the best quant whose every layer
    fits with the requested workload; else the best quant whose every layer
    fits with a lighter workload (``lighter_workloads``), because a model split
    between GPU and CPU decodes at the CPU's speed; else a last-resort quant in
    full; else, on a GPU, as many layers as fit when that is at least half of
    them and the RAM holds the rest; else a refusal that says what would fit.
    On a CPU the same ladder runs over ``cpu_order``: the fastest quant at the
    quality floor, never a slower one.

    exclude_quants: quants the admin's quality floor rules out (measured mean KLD too high, see
    ``schulki.evaluation.planning``); they are never chosen unless the admin sets that quant.
    """
    catalog = catalog or load_catalog()
    model = catalog.model(model) if isinstance(model, str) else model
    notes = []
    if model.training_context and work.context_length > model.training_context:
        notes.append(f"context {work.context_length} is above the model's training context; {model.training_context} is used")
        work = replace(work, context_length=model.training_context)
    if work.context_length <= 0 or work.parallel <= 0:
        raise ValueError("context length and parallel sequences must be positive")
    planning = _Ladder(catalog, model, machine, work, quant, notes)
    chosen = planning.choose_candidates(exclude_quants) or planning.in_full() or planning.last_resort_in_full()
    if chosen:
        return chosen
    alt = smaller_model(catalog, model, planning.ladder[-1][0], machine)
    hint = f" Use {alt[0]} instead ({alt[1]} fits in full)." if alt else " No smaller model of the catalog fits either."
    return planning.split_between_gpu_and_cpu(alt, hint) or planning.refusal(alt, hint)
