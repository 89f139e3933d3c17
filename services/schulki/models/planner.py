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

It then picks the best quant that fits in full (Q8_0 > Q6_K > Q5_K_M > Q4_K_M),
else offloads as many layers as fit, else a marked last-resort quant, and when
even that is poor it names a smaller model of the catalog that does fit.
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
            available = self.memory_bytes
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
        if other.test_only or other.parameters >= model.parameters:
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


def plan(model: str | Model, machine: Machine, work: Workload, quant: str | None = None, catalog: Catalog | None = None) -> Plan:
    """The best way to run a model (a catalog id, or a Model read from a GGUF file) on one machine, and why."""
    catalog = catalog or load_catalog()
    model = catalog.model(model) if isinstance(model, str) else model
    notes = []
    if model.training_context and work.context_length > model.training_context:
        notes.append(f"context {work.context_length} is above the model's training context; {model.training_context} is used")
        work = replace(work, context_length=model.training_context)
    if work.context_length <= 0 or work.parallel <= 0:
        raise ValueError("context length and parallel sequences must be positive")
    all_layers = model.layers if machine.kind != "cpu" else 0
    budget = machine.budget

    def make(file: ModelFile, gpu_layers: int, fits: bool, reason: str, suggestion: str | None = None) -> Plan:
        return Plan(
            model=model.id, quant=file.quant, file=file.file, context_length=work.context_length, parallel=work.parallel,
            gpu_layers=gpu_layers, layers=model.layers, fits=fits, estimate=estimate(model, file, work, machine.kind),
            budget=budget, reason=reason, last_resort=file.last_resort, suggestion=suggestion,
            machine=machine.name, kind=machine.kind, notes=tuple(notes),
        )

    where = {"gpu": "on the GPU", "cpu": "in RAM (CPU only)", "apple": "in unified memory (Metal)"}[machine.kind]
    candidates = [model.file_for(quant)] if quant else list(model.files)
    standard = [f for f in candidates if not f.last_resort]
    last_resort = [f for f in candidates if f.last_resort]
    forced = " (set by the admin)" if quant else ""

    for rank, f in enumerate(standard):
        est = _fits(model, f, work, machine)
        if est:
            better = f" {standard[rank - 1].quant} would need {_gib(estimate(model, standard[rank - 1], work, machine.kind).total)}." if rank else ""
            return make(f, all_layers, True, f"{f.quant}{forced} fits {where}: needs {_gib(est.total)} of {_gib(budget)}.{better}")

    lowest = standard[-1] if standard else candidates[-1]
    need = _gib(estimate(model, lowest, work, machine.kind).total)
    if machine.kind == "gpu" and standard:
        n = offloadable_layers(catalog, model, lowest, work, budget)
        if n >= model.layers * POOR_OFFLOAD_SHARE:
            return make(lowest, n, True, f"No quant fits {_gib(budget)} in full ({lowest.quant} needs {need}); {n} of {model.layers} layers of {lowest.quant} go on the GPU, the rest run on the CPU (slower).")

    for f in last_resort:
        est = _fits(model, f, work, machine)
        if est:
            alt = smaller_model(catalog, model, work, machine)
            hint = f" Better: {alt[0]} ({alt[1]} fits in full)." if alt else ""
            return make(f, all_layers, True, f"Last resort: only {f.quant} fits {where} ({_gib(est.total)} of {_gib(budget)}); answers get noticeably worse.{hint}", alt[0] if alt else None)

    alt = smaller_model(catalog, model, work, machine)
    hint = f" Use {alt[0]} instead ({alt[1]} fits in full)." if alt else " No smaller model of the catalog fits either."
    worst = (last_resort or [lowest])[-1]
    if machine.kind == "gpu":
        n = offloadable_layers(catalog, model, worst, work, budget)
        fits = machine.ram_bytes is None or estimate(model, worst, work, "cpu").total <= machine.ram_bytes - OS_RESERVE_BYTES
        return make(worst, n, fits, f"Too big: {worst.quant} needs {_gib(estimate(model, worst, work, 'gpu').total)} and only {n} of {model.layers} layers fit in {_gib(budget)} of GPU memory, too slow for a class.{hint}", alt[0] if alt else None)
    return make(worst, all_layers, False, f"Does not fit: {worst.quant} needs {_gib(estimate(model, worst, work, machine.kind).total)} {where}, {_gib(budget)} are free.{hint}", alt[0] if alt else None)
