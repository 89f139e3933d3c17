"""schulki's settings: one Config with a section per service.

Settings come, in this order of precedence, from keyword arguments, the
environment (``SCHULKI_`` prefix, sections nested with ``__``, for example
``SCHULKI_INFERENCE__CONTEXT_LENGTH=8192``), and a TOML file named by
``SCHULKI_CONFIG`` (for example ``/etc/schulki/schulki.toml``). Every field is
documented where it is declared.

Every section refuses keys it does not know, and fields carry limits where a
wrong value would hurt (ports, counts, timeouts, ``chunk_overlap_chars`` below
``chunk_chars``). Commands read the settings with ``load_config()``, which stops
the start with one line naming each wrong key, for example
``unknown setting inference.contxt_length (did you mean context_length?)``.
Fields that may be left empty to mean "choose for me" also take ``"auto"``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from schulki.runtime.registry import SERVICES

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_PORTS = {service.name: service.default_port for service in SERVICES}


def default_data_dir() -> Path:
    """Where models, stores and accounts live when nothing else is configured."""
    return REPO_ROOT / "var"


def _auto_is_empty(value: Any) -> Any:
    # TOML has no null: "auto" is how a settings file says "choose for me" (the same as leaving the key out).
    return None if isinstance(value, str) and value.strip().lower() == "auto" else value


Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port (``schulki serve --port 0`` picks a free one; the settings name a real one)."""
Count = Annotated[int, Field(ge=1)]
"""A size, a number of slots, threads or items: at least 1 (0 would refuse everything or hang)."""
CountOrAuto = Annotated[Annotated[int, Field(ge=1)] | None, BeforeValidator(_auto_is_empty)]
"""At least 1, or empty / "auto" for the default the field names."""
Seconds = Annotated[float, Field(gt=0)]
"""A duration in seconds, above 0."""


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as error:
        raise ValueError(f"not an IP address or network (10.0.0.2, 10.0.0.0/24, fd00::/8): {value!r}") from error
    return value.strip()


NetworkText = Annotated[str, AfterValidator(_network)]
"""An IP address or a network in CIDR notation."""
GpuLayers = Annotated[int, Field(ge=-1)]
"""Layers on the GPU: -1 for all of them, 0 for none."""


class Section(BaseModel):
    """A section of the settings: a key it does not know is an error, so a misspelt setting is never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RuntimeConfig(Section):
    """Settings every service shares."""

    host: str = "127.0.0.1"
    """Address the services listen on; 0.0.0.0 inside a container."""
    service_token: SecretStr | None = None
    """This node's own secret: callers must send ``authorization: Bearer <token>``; when set, every other caller is refused. Every node has its own (the roll-out makes one per host); ``schulki serve`` refuses a weak or example token (see runtime/tokens.py). Unset under ``schulki up``: it makes one in the data folder (``runtime/service_token``, 0600) and starts every service and the gateway with it."""
    service_token_file: Path | None = None
    """A file holding the service token (a container secret); read when service_token is not set."""
    node_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    """The token of every other node this machine calls (the gateway's list), keyed by ``host:port`` or by host (for every port of it), as in the gateway's addresses. A node not listed is sent service_token. Revoke one node by removing or changing its entry."""
    node_tokens_file: Path | None = None
    """A TOML file of ``"host" = "token"`` lines (a container secret), read when node_tokens is empty."""
    tls_cert_file: Path | None = None
    """Server certificate (PEM). With tls_key_file set, services accept only TLS connections (use it between machines)."""
    tls_key_file: Path | None = None
    """Private key (PEM) of tls_cert_file."""
    tls_ca_file: Path | None = None
    """CA certificate (PEM) that callers use to check the services' certificates; set it on the gateway to connect with TLS (the roll-out sets it on every host: the school CA)."""
    allow_plaintext: bool = False
    """Let a service listen on an address other than loopback without TLS (tls_cert_file). Off: ``schulki serve`` refuses, because the token and every prompt would cross the network readable. Only for a test lab nobody else can reach."""
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)
    """Largest single gRPC message. Uploads stream in chunks of at most 1 MiB, so 8 MiB leaves room without letting one message eat memory."""
    grace_period_s: float = Field(default=20.0, ge=0)
    """On SIGTERM, how long running requests may take to finish before they are cancelled."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of every service."""
    log_content: bool = False
    """Log the text of prompts, documents and transcripts. Off by default: only an admin debugging a problem turns it on."""
    cpu_cores: list[int] = Field(default_factory=list)
    """CPUs (as the operating system numbers them, 0 first) this process runs on, set before its model loads. Empty means every CPU it was started with. ``schulki up`` sets it for each service from the core split (see cores); set it yourself only for ``schulki serve``."""
    nice: int = Field(default=0, ge=0, le=19)
    """Lowers this process's CPU priority by this much at start (Unix nice), so that other work on the machine goes first. ``schulki up`` sets it for embeddings, transcription and retrieval from cores.background_nice."""

    def resolved_service_token(self) -> str | None:
        """The service token from the setting or its file, or None when neither is set."""
        if self.service_token is not None:
            return self.service_token.get_secret_value()
        if self.service_token_file is not None:
            return self.service_token_file.read_text().strip()
        return None

    def resolved_node_tokens(self) -> dict[str, str]:
        """node_tokens, or those from node_tokens_file, as plain strings."""
        if self.node_tokens:
            return {node: token.get_secret_value() for node, token in self.node_tokens.items()}
        if self.node_tokens_file is not None:
            import tomllib

            return {str(node): str(token) for node, token in tomllib.loads(self.node_tokens_file.read_text()).items()}
        return {}

    def token_for(self, address: str) -> str | None:
        """The token to send to the node at address (host:port): its own from the node list, else service_token."""
        from schulki.runtime.tokens import node_host

        tokens = self.resolved_node_tokens()
        return tokens.get(address) or tokens.get(node_host(address)) or self.resolved_service_token()


class InferenceConfig(Section):
    """Settings of the inference service (chat models through llama.cpp)."""

    port: Port = SERVICE_PORTS["inference"]
    """Port of the inference service."""
    model_path: Path | None = None
    """The GGUF chat model. Empty means the default model, Gemma 3 270M Q4_K_M from its PyPI package."""
    model_name: str | None = None
    """The name users and the API call this model by. Empty means the catalog id and quant (gemma-3-270m-q4_k_m), or the file name when the catalog does not know the file."""
    more_models: list[Path] = Field(default_factory=list)
    """More GGUF chat models for ``schulki up`` to serve on this machine, one inference process each (ports chosen by the stack); models added with ``schulki models add`` join them by themselves."""
    context_length: int = Field(default=4096, ge=16)
    """Tokens the context holds (prompt and answer together)."""
    gpu_layers: GpuLayers = -1
    """Layers offloaded to the GPU; -1 means all of them (where no GPU is there, llama.cpp runs on the CPU)."""
    threads: CountOrAuto = None
    """CPU threads for decoding. Empty means half the CPUs for ``schulki serve``; ``schulki up`` derives it from the core split (see cores). A value set here wins."""
    batch_threads: CountOrAuto = None
    """CPU threads for reading prompts and for steps that decode several sequences at once. Empty means the same as threads."""
    flash_attention: bool | Literal["auto"] = "auto"
    """Flash attention: "auto" (as llama-server runs) lets llama.cpp use it wherever the device running the attention
    supports it, which includes every CPU; true forces it, false turns it off. On 2 CPU cores it made Gemma 3 270M
    answer 12-21 % faster at 1-16 sequences and read a 2,000-token prompt 8 % faster, and it needs a smaller compute
    buffer (docs/decisions.md)."""
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    """Element type of the KV cache; q8_0 halves its memory at a small loss of quality (quantized V needs flash attention)."""
    batch_size: Count = 512
    """Tokens evaluated at once while reading the prompt."""
    parallel_sequences: Annotated[Annotated[int, Field(ge=1, le=64)] | None, BeforeValidator(_auto_is_empty)] = None
    """Sequences decoded at once in one batch (continuous batching); each has its own KV cache of context_length
    tokens, and the fair queue hands out this many turns. Empty means the default of the node kind (16 on a CPU,
    4/8/16 on a GPU with under 12/under 20/more GiB, 8 on an Apple machine; see docs/decisions.md)."""
    max_running_per_user: int = Field(default=2, ge=1)
    """Sequences one user may hold at once; further requests of that user wait even while slots are free, so one
    student with five tabs cannot take the slots the class needs."""
    full_swa_cache: bool = False
    """Keep the whole context in the sliding-window layers too (Gemma 3). Off, as llama-server runs: those layers keep
    only the window, which saves most of the KV cache; prefix reuse then works while a conversation still fits the window."""
    max_queued: Count = 32
    """Requests that may wait for their turn; beyond that new requests are refused at once with RESOURCE_EXHAUSTED."""
    max_queued_per_user: Count = 4
    """Requests one user may have waiting; keeps one user from filling the queue."""
    default_temperature: float = Field(default=0.7, ge=0, le=2)
    """Temperature when a request sets none."""
    default_top_p: float = Field(default=0.95, gt=0, le=1)
    """top_p when a request sets none."""
    default_top_k: int = Field(default=40, ge=0)
    """top_k when a request sets none."""
    default_repeat_penalty: float = Field(default=1.1, gt=0)
    """Repeat penalty when a request sets none."""
    attention_max_tokens: int = Field(default=16, ge=2, le=64)
    """Most tokens (start token included) of a sentence in the "Wie denkt die KI?" tab's attention view: its heat maps
    are tokens × tokens per head, and a projector shows 16 words legibly."""
    attention_max_layers: int = Field(default=48, ge=1)
    """Most layers the attention view reads and sends, spread evenly over a deeper model."""
    attention_time_limit_s: float = Field(default=10.0, gt=0)
    """The attention view's evaluation stops after this long (on its own small context, one sentence); refused then."""


class EmbeddingsConfig(Section):
    """Settings of the embeddings service."""

    port: Port = SERVICE_PORTS["embeddings"]
    """Port of the embeddings service."""
    model_path: Path | None = None
    """The GGUF embedding model. Empty means the default, all-MiniLM-L6-v2 converted at set-up."""
    threads: CountOrAuto = None
    """CPU threads. Empty means llama.cpp's default for ``schulki serve`` (every CPU for the batches texts are embedded in); ``schulki up`` derives it from the core split (see cores). A value set here wins."""
    gpu_layers: GpuLayers = -1
    """Layers offloaded to the GPU; -1 means all."""
    batch_tokens: Count = 512
    """Tokens evaluated in one llama.cpp batch; texts are packed into batches up to this size, and no text gets more."""
    max_texts: Count = 512
    """Most texts in one Embed call."""
    max_tokens_per_text: CountOrAuto = None
    """Most tokens of one text that go into its vector; longer texts keep their first tokens and are marked truncated. Empty means the model's training context (512 for all-MiniLM-L6-v2), never more than batch_tokens."""
    max_sequences_per_batch: int = Field(default=8, ge=1, le=256)
    """Most texts packed into one llama.cpp batch (each is its own sequence; llama.cpp allows 256). llama.cpp attends across the whole batch of an encoder model, so on a CPU the cost of a batch grows with the square of its tokens and a few texts per batch are fastest; on a GPU node raise this and batch_tokens (64 and 4096)."""
    query_prefix: str | None = None
    """Put in front of search queries before embedding. Empty means what the catalog names for the model file (multilingual-e5: "query: "; none for a file the catalog does not know)."""
    document_prefix: str | None = None
    """Put in front of passages before embedding. Empty means what the catalog names for the model file (multilingual-e5: "passage: ")."""
    flash_attention: bool = False
    """Use flash attention. It makes embedding faster (on 2 CPU cores about 1.5 times for short texts and 2 to 3 times for 1200-character chunks), but its half-precision sums move a text's vector further between embedded alone and in a batch: up to 7.4e-4 relative with it, 3.8e-4 without (both about one float16 rounding, cosine above 0.9999997; tests/test_llama_adapter.py). Off by default, for the smaller difference."""


class TranscriptionConfig(Section):
    """Settings of the transcription service (faster-whisper)."""

    port: Port = SERVICE_PORTS["transcription"]
    """Port of the transcription service."""
    model_path: Path | None = None
    """Folder of a CTranslate2 Whisper model. Empty means the default, Whisper base from its PyPI packages."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run: cuda on a GPU node, cpu elsewhere; auto picks cuda when one is there."""
    compute_type: str = "default"
    """CTranslate2 compute type; default means int8 on the CPU and float16 on a GPU."""
    threads: int = Field(default=0, ge=0)
    """CPU threads per transcription; 0 lets CTranslate2 choose (4) for ``schulki serve``, and ``schulki up`` derive it from the core split (see cores). A value set here wins."""
    beam_size: Count = 5
    """Beam size for decoding."""
    max_upload_bytes: Count = 500 * 1024 * 1024
    """Largest recording accepted, in bytes."""
    max_duration_s: Seconds = 2 * 60 * 60
    """Longest recording accepted, in seconds."""
    max_concurrent: int = Field(default=2, ge=1)
    """Transcriptions running at once; more wait in line."""
    max_queued: Count = 16
    """Transcriptions that may wait for their turn; beyond that new ones are refused at once with RESOURCE_EXHAUSTED."""
    max_queued_per_user: Count = 2
    """Transcriptions one user may have waiting; keeps one user from filling the line."""
    max_running_per_user: Count = 1
    """Transcriptions of one user running at once; further ones of that user wait even while a turn is free, so one
    student's long recordings take one turn and another student's short clip gets the next free one. Above
    max_concurrent it changes nothing."""
    window_s: float = Field(default=120.0, ge=10.0)
    """Audio decoded and transcribed at a time, in seconds. Memory grows with it, not with the recording's length: decoding, VAD and features of a 120 s window peak at about 290 MiB, of a 300 s window at about 500 MiB."""
    upload_dir: Path | None = None
    """Folder for uploads while they are transcribed (deleted right after); empty means the system's temporary folder."""
    default_language: str | None = "de"
    """The school's usual language (an ISO 639-1 code). When a recording names no language, Whisper's detection has to pick this one unless another language is clearly more likely (see default_language_weight); empty trusts the detection alone."""
    default_language_weight: float = Field(default=10.0, ge=1.0)
    """How much likelier default_language is taken to be than any other language before listening. Whisper base gets short clips wrong often (espeak-ng German of 1 to 3 s: 5 of 12 detected as German alone, 10 of 12 with weight 10) while recordings of 5 s and more are detected surely; with 10, English clips of 1 to 6 s and French clips of 4 to 5 s still kept their language (benchmarks/language_detection_bench.py)."""
    batching: bool = True
    """Decode speech in batches (faster-whisper's BatchedInferencePipeline): each window's speech is cut at pauses into
    chunks of up to 30 s, and the chunks of every recording running at once are decoded together, up to batch_size.
    Recordings sent without voice activity detection are decoded one 30 s stretch after another, as with false. Batched
    decoding carries no text from one chunk to the next; a chunk whose text fails the unbatched decoder's checks (it
    repeats itself, or is improbable) is decoded again alone (see transcription/batching.py). On by default, on a GPU
    (faster-whisper measured 3.7 times the throughput there) and on a CPU: with Whisper base on 2 cores, four different
    one-minute recordings that end at a sentence end, batches did 2.0 to 3.6 times the audio per second of one
    recording after another at 1, 2 and 4 at once, with a word error rate of 0.396 against 0.409
    (benchmarks/transcription_bench.py, part 4). Speech Whisper can hardly read (the same recordings cut in the middle
    of a word and resampled to 16 kHz) went the other way, 0.53 to 0.72 times: its chunks often fail the checks and
    are then decoded twice. false decodes one window after another."""
    batch_size: int = Field(default=8, ge=1, le=64)
    """Most chunks of 30 s decoded in one batch. Each chunk in a batch costs memory while it is decoded: with Whisper
    base (int8, beam 5) on the CPU the peak grew by 91 MiB per chunk (653 MiB more for 8 than for one alone), more for
    larger models; ``schulki plan`` reserves it on a GPU node (BATCH_CHUNK_BYTES in models/fleet.py); on a CPU
    (``schulki up`` without a GPU) nothing counts it. More recordings running at once (max_concurrent) fill batches
    from several recordings."""


class RetrievalConfig(Section):
    """Settings of the retrieval service."""

    port: Port = SERVICE_PORTS["retrieval"]
    """Port of the retrieval service."""
    store: Literal["embedded", "weaviate"] = "embedded"
    """Where chunks and vectors live: the embedded store on this machine, or a Weaviate cluster."""
    store_path: Path | None = None
    """Folder of the embedded store; empty means var/retrieval under the data folder."""
    weaviate_url: str | None = None
    """URL of the Weaviate server (http://host:8080), for store = weaviate. Run the server with DISABLE_TELEMETRY=true: its telemetry is a server setting."""
    weaviate_api_key: SecretStr | None = None
    """API key for Weaviate."""
    embeddings_address: str | None = None
    """Where the embeddings service listens (host:port); empty means this machine at embeddings.port."""
    max_upload_bytes: Count = 100 * 1024 * 1024
    """Largest document accepted, in bytes."""
    chunk_chars: int = Field(default=1200, ge=50)
    """Target length of a chunk in characters."""
    chunk_overlap_chars: int = Field(default=200, ge=0)
    """Characters shared by neighbouring chunks."""
    vector_weight: float = Field(default=0.1, ge=0, le=1)
    """Weight of the vector list against BM25 when a search sets none (Weaviate's alpha). 0.1 is the only weight at which hybrid search ranked no worse than the better single list (BM25) on the German tuning questions with the default model, and it held on the held-out ones (docs/decisions.md, tests/quality); with a stronger embedding model measure again (python -m tests.quality.evaluate --sweep)."""
    keyword_evidence_min: float = Field(default=0.3, ge=0, le=1)
    """Hybrid search ranks by the vectors alone when fewer than this share of the question's words (3 letters or more) begin a word in BM25's ten best passages: an English question about German documents, whose few chance keyword matches would otherwise push the right passage down. 0.3 lets hybrid rank no worse than the better single list on the German and the English quality questions (docs/decisions.md); 0 turns it off. Weights of exactly 0 or 1 are kept."""
    fusion: Literal["rrf", "relative_score"] = "relative_score"
    """How hybrid search merges its BM25 and vector lists, alike in both stores: relative_score (each list's scores scaled to 0..1, then weighted; Weaviate's relativeScoreFusion) or rrf (reciprocal-rank fusion, weight / (60 + rank); Weaviate's rankedFusion). With rrf, hybrid search never reached the recall@5 of BM25 alone on the German tuning questions, at any weight (docs/decisions.md)."""
    allowed_url_hosts: list[str] = Field(default_factory=list)
    """Hosts on private, loopback or link-local addresses that URL ingest (the Dokumente tab's "Webseite hinzufügen") may fetch from anyway, by the name or address in the URL, for example the school's intranet wiki: "wiki.schule.lan" opens its ports 80 and 443 only, "wiki.schule.lan:8080" that one port ("[fd00::5]:8080" for an IPv6 address). Empty by default: every address that is not public is refused with PERMISSION_DENIED, also after a redirect, and so is an allowed host on any other port."""
    max_concurrent_ingests: CountOrAuto = None
    """Documents parsed and embedded at once; further uploads are received and then wait their turn in a fair queue
    (the user who has fewest running goes first). Empty means the CPUs the retrieval process may run on, at least 2:
    each parse is one process on one core, and ``schulki up`` gives retrieval its share of the core split."""
    ingests_per_user: CountOrAuto = None
    """Documents of one user parsed and embedded at once; that user's further uploads wait even while a slot is free,
    so a teacher's small upload does not wait behind a student's big ones. Empty means a quarter of
    max_concurrent_ingests, at least 1 (2 slots: 1; 16 slots: 4)."""
    max_queued_ingests: Count = 256
    """Uploads that may wait for a slot; beyond that new ones are refused at once with RESOURCE_EXHAUSTED."""
    max_queued_ingests_per_user: Count = 16
    """Uploads one user may have waiting for a slot; beyond that that user's new ones are refused with RESOURCE_EXHAUSTED."""
    max_pages: Count = 2000
    """Most pages of one PDF; a longer one is refused with RESOURCE_EXHAUSTED."""
    max_document_chars: Count = 5_000_000
    """Most characters of text one document may yield (about 2,500 book pages); more is refused with RESOURCE_EXHAUSTED. Tables are stopped while they are read, so a file that expands a thousandfold never gets far."""
    max_chunks_per_document: Count = 6000
    """Most chunks one document may make; more is refused with RESOURCE_EXHAUSTED."""
    parse_memory_mb: int = Field(default=1024, ge=256)
    """Address space of the process that parses one document, in MiB (RLIMIT_AS); a file that needs more is refused with RESOURCE_EXHAUSTED and the service keeps serving. A small file of every format parses within 200 MiB (XLSX needs more than 150); below 256 the parsers' libraries may not even load."""
    parse_timeout_s: Seconds = 120.0
    """How long parsing and chunking one document may take, in seconds; then its process is killed and the upload refused with RESOURCE_EXHAUSTED."""
    workspace_quota_mb: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: {"u-": 200, "k-": 1000})
    """Storage per workspace in MiB, by the start of the workspace's name (the gateway names a user's private workspace u-<id> and a class's k-<class>); the longest matching start wins, "" matches every name, and a workspace no entry matches (or one with 0) has no limit. A document counts with its file size or its text, whichever is larger; an upload over the quota is refused with RESOURCE_EXHAUSTED."""
    url_timeout_s: Seconds = 15.0
    """How long fetching a web page may take, in seconds."""
    embed_batch_texts: Count = 16
    """Chunks sent to the embeddings service in one call while ingesting; each call reports progress, and the embeddings service packs them into its own batches."""
    embeddings_timeout_s: Seconds = 120.0
    """How long one call to the embeddings service may take, in seconds."""
    yield_to_class: bool | None = None
    """Ingest yields to the class: before parsing and before each embedding batch it waits while chat requests wait in the inference service's line (retrieval/class_yield.py). Empty means yes, unless this process runs on CPUs of its own (runtime.cpu_cores, as ``schulki up``'s core split pins embeddings and retrieval apart from the chat): there an upload takes no CPU from the chat, and waiting only slows it (100 pages during a class of 30 on 2 cores: 282 s waiting against 29 s not, the class's time to first token the same). true: always; false: never, for a machine where embeddings have their own node or GPU."""
    inference_address: str | None = None
    """The inference service ingest yields to (host:port); empty means this machine at inference.port. When it cannot be asked, ingest does not wait."""
    yield_max_wait_s: Seconds = 10.0
    """Longest wait of one ingest step for the class's line to empty, in seconds, so that an upload still moves on during a class whose line never empties."""
    yield_share: Annotated[float, Field(ge=0)] = 0.5
    """All the waiting of one upload, as a share of the time it has worked so far: an upload during a class whose line never empties takes at most 1 + this share of its working time (0.5: 1.5×), where each step waiting its full yield_max_wait_s made a 100-page upload during a class of 30 take 18.5 times its quiet time on 2 cores without the core split (3.1 times with 0.5; benchmarks/core_split_bench.py)."""
    embed_batch_texts_in_class: Count = 4
    """Chunks per embedding call while answers are being generated (instead of embed_batch_texts): short steps, so the embeddings' cores are back for the chat soon and the next look at the line comes soon."""
    text_language: str = "German"
    """Language of the full-text index's stemmer in the embedded store (for example German, English); applies to new workspaces. Weaviate has no stemmer: with German its BM25 leaves German function words out of questions instead of English ones (weaviate_store.GERMAN_STOP_WORDS; applies to new collections)."""
    vector_index_min_rows: Count = 20_000
    """Chunks in a workspace from which the embedded store builds a vector index; below it, an exact search is fast enough."""
    optimize_every_documents: Count = 20
    """The embedded store compacts a workspace without a vector index and folds its new chunks into the full-text index after this many ingests (searched whole until then). A workspace with a vector index is folded in after every ingest, before the ingest returns, and searched through its indexes alone: rows outside them cost every search at a million chunks +20 ms for 1,000 and +170 ms for 20,000."""
    keep_versions_s: int = Field(default=60, ge=0)
    """Old table versions of the embedded store are removed after this many seconds (only then is deleted text gone from the disk)."""
    weaviate_grpc_port: Port = 50051
    """gRPC port of the Weaviate server (its HTTP port comes from weaviate_url)."""
    weaviate_collection: str = "SchulkiChunk"
    """Name of the Weaviate collection of chunks; the document manifests live in the same name with "Document" appended."""

    @model_validator(mode="after")
    def _url_hosts_readable(self) -> RetrievalConfig:
        from schulki.retrieval.url_addresses import allowed_host_entry  # not at the top: schulki.retrieval imports this module

        for entry in self.allowed_url_hosts:
            allowed_host_entry(entry)  # ValueError naming the entry
        return self

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> RetrievalConfig:
        # An overlap as long as the chunk would repeat every chunk for ever; the chunker refuses it only at the first upload.
        if self.chunk_overlap_chars >= self.chunk_chars:
            raise ValueError(f"chunk_overlap_chars ({self.chunk_overlap_chars}) must be below chunk_chars ({self.chunk_chars})")
        return self


class InferenceNodeConfig(Section):
    """One inference node the gateway sends chats to, and the model it is meant to serve."""

    address: str = Field(min_length=3)
    """host:port of the node."""
    model: str = ""
    """The name the node serves its model under (GetModelInfo's served_model). The node's own answer wins once it answers; this name keeps the model listed while the node is down."""


class AgentsConfig(Section):
    """The chat tab's agent mode: a bounded loop in which the chat model picks one of a few vetted server tools per step
    (search the user's documents, read a web page, save a note, summarize a document) until it answers
    (gateway/agents/, README "Agent-Modus")."""

    roles: list[Literal["student", "teacher"]] = Field(default_factory=list)
    """Roles that may use the agent mode before the admin sets it in the Admin tab (which then wins); empty by default: off for students and teachers. Admins may always use it."""
    max_steps: int = Field(default=5, ge=1, le=20)
    """Most tool calls and answers of one agent run; a run that has not answered by then ends with a German notice."""
    max_tokens: int = Field(default=4000, ge=64)
    """Most tokens (prompts and answers of every step, summaries included) one agent run may use; each counts against the user's daily quota as a chat's do."""
    step_tokens: int = Field(default=200, ge=16)
    """Most tokens of the model's answer in one step (the JSON of one action)."""
    result_chars: int = Field(default=1500, ge=100)
    """Most characters of a tool's result (hits, a web page's text, a summary) handed to the model as data in the next step."""


Role = Literal["student", "teacher", "admin"]
"""One of schulki's roles."""


class DirectoryMappingSection(Section):
    """How a school directory's groups (LDAP) or claim values (OIDC) become schulki's roles and classes.

    A name here is compared without regard to case with a group's name (its cn) or its whole DN (LDAP), or with a
    value of the claim (OIDC). Role and classes are read again at every sign-in: whoever left a class group has left
    the class (and its workspace) at the next sign-in."""

    role_groups: dict[str, Role] = Field(default_factory=dict)
    """Group (or claim value) → role, for example ``{"lehrer" = "teacher", "schueler" = "student"}``; a person in several gets the highest (admin, teacher, student)."""
    default_role: Role | None = None
    """The role of a person in none of role_groups; empty means such a person cannot sign in."""
    class_groups: dict[str, str] = Field(default_factory=dict)
    """Group (or claim value) → class name, for classes whose groups follow no pattern."""
    class_group_pattern: str = ""
    """A regular expression on group names (or claim values) whose first group is the class, for example ``^schule-(.+)$`` for UCS@school's ``<school>-<class>`` groups; empty means only class_groups."""


class LdapConfig(DirectoryMappingSection):
    """Sign-in through the school's LDAP directory (paedML, linuxmuster, UCS): the login form checks name and password there."""

    enabled: bool = False
    """Check the login form's name and password against the directory (before local accounts)."""
    url: str = ""
    """The directory server, ``ldaps://dc.schule.lan:636`` or ``ldap://dc.schule.lan:389`` (then with StartTLS). A password never crosses the network unencrypted: there is no plain mode."""
    start_tls: bool = True
    """For an ``ldap://`` url: switch to TLS (StartTLS) before any bind. Must stay on; ``ldaps://`` needs none."""
    ca_file: Path | None = None
    """The CA (PEM) of the directory server's certificate; empty means the system's CAs. The certificate and its name are always checked."""
    bind_dn: str = ""
    """A read-only account that searches for the person before their own bind; empty means an anonymous search."""
    bind_password_file: Path | None = None
    """A file holding bind_dn's password (a container secret)."""
    search_base: str = ""
    """Where people are searched, for example ``ou=schule,dc=schule,dc=lan``."""
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={name}))"
    """The search for the person; ``{name}`` is the name typed (escaped). Leave disabled accounts out here, for example UCS ``(!(shadowExpire=1))``, Active Directory / linuxmuster ``(!(userAccountControl:1.2.840.113556.1.4.803:=2))``."""
    id_attribute: str = "entryUUID"
    """The attribute that names a person for good (``entryUUID``; Active Directory: ``objectGUID``); empty uses the DN."""
    name_attribute: str = "uid"
    """The attribute whose value becomes the schulki user name (``uid``; Active Directory: ``sAMAccountName``)."""
    group_base: str = ""
    """Where groups are searched; empty means search_base."""
    group_filter: str = "(|(member={dn})(uniqueMember={dn}))"
    """The groups a person (or, for nested groups, a group) is in; ``{dn}`` is its DN, ``{name}`` its name (for posixGroup: ``(memberUid={name})``)."""
    nested_groups: bool = True
    """Follow groups in groups (a teacher in a subject group that is in the teachers' group), up to 8 levels."""
    timeout_s: Seconds = 10.0
    """How long one connection to the directory may take."""

    @model_validator(mode="after")
    def _encrypted(self) -> LdapConfig:
        if self.url.lower().startswith("ldap://") and not self.start_tls:
            raise ValueError(
                "gateway.ldap: an ldap:// url needs start_tls (or use ldaps://): passwords never cross the network unencrypted"
            )
        return self


class OidcConfig(DirectoryMappingSection):
    """Sign-in through the school's OpenID Connect provider (IServ, UCS@school's Keycloak, VIDIS): "Mit Schulkonto anmelden"."""

    enabled: bool = False
    """Show "Mit Schulkonto anmelden" on the login page."""
    issuer: str = ""
    """The provider's issuer URL (its discovery document is at ``<issuer>/.well-known/openid-configuration``)."""
    client_id: str = ""
    """schulki's client id at the provider."""
    client_secret_file: Path | None = None
    """A file holding the client secret (a container secret)."""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile"])
    """Scopes asked for; ``openid`` is always sent."""
    role_claim: str = "groups"
    """The ID token claim (a dotted path into it, for example ``realm_access.roles``) whose values role_groups maps."""
    class_claim: str = "groups"
    """The ID token claim whose values class_groups and class_group_pattern map."""
    name_claim: str = "preferred_username"
    """The claim that becomes the schulki user name when it is a valid, free name; otherwise a pseudonym. Pseudonymous providers (VIDIS) send none: that is fine."""
    ca_file: Path | None = None
    """The CA (PEM) of the provider's HTTPS certificate; empty means the system's CAs."""
    redirect_url: str = ""
    """The callback address registered at the provider, ``https://<gateway>/login/oidc/callback``; empty means the address the browser used."""
    timeout_s: Seconds = 10.0
    """How long one request to the provider may take."""


class GatewayConfig(Section):
    """Settings of the gateway (web UI and OpenAI-compatible API)."""

    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    """The chat tab's agent mode (off by default for students and teachers)."""

    host: str = "0.0.0.0"
    """Address the gateway listens on; students reach it here."""
    port: Port = 7860
    """Port of the web UI and the API."""
    database_url: str | None = None
    """SQLAlchemy URL of the accounts database; empty means a SQLite file (WAL) under the data folder, ``postgresql+psycopg://...`` for a shared server."""
    secret_key: SecretStr | None = None
    """Secret for pseudonymous user ids sent to the services; empty means one made up once and kept in the data folder."""
    inference_addresses: list[str] | None = None
    """Inference nodes (host:port); chats are spread over the healthy ones. Empty means this machine at inference.port."""
    inference_nodes: list[InferenceNodeConfig] = Field(default_factory=list)
    """Inference nodes with the model each serves (the roll-out writes these); they join inference_addresses. Each chat goes only to nodes serving the model it asks for, the one with the shortest line first."""
    nodes_file: Path | None = None
    """A JSON file with more inference nodes (a list of {"address", "model"}), read again with every health check, so nodes join without a restart; ``schulki up`` writes it as it starts one inference process per chat model."""
    default_model: str | None = None
    """The model the alias schulki-chat points at until an admin picks one in the Admin tab. Empty means the first model that is not the demo model, in name order."""
    embeddings_addresses: list[str] | None = None
    """Embeddings nodes; empty means this machine at embeddings.port."""
    transcription_addresses: list[str] | None = None
    """Transcription nodes; empty means this machine at transcription.port."""
    retrieval_addresses: list[str] | None = None
    """Retrieval nodes; empty means this machine at retrieval.port."""
    health_interval_s: Seconds = 3.0
    """How often the health of every node is checked; a node that fails is left out until it serves again."""
    session_hours: float = Field(default=12.0, gt=0)
    """How long a login lasts."""
    login_attempts: Count = 5
    """Failed logins allowed per account name from one address within login_window_s; then that address must wait (the account stays open from elsewhere)."""
    login_window_s: Seconds = 300.0
    """The window for counting failed logins, in seconds."""
    login_attempts_per_address: Count = 20
    """Failed logins allowed from one address (any names) within login_window_s before that address must wait."""
    login_attempts_per_account: Count = 20
    """Failed logins for one name from all addresses within login_window_s after which tries for it are slowed to one per login_backoff_s (never locked)."""
    login_backoff_s: float = Field(default=10.0, ge=0)
    """The slower pace, in seconds between tries, for a name under attack from many addresses."""
    login_concurrency: Count = 4
    """Password checks (argon2, 64 MiB each) running at once; further logins wait for one (login_wait_s, login_queue)."""
    login_concurrency_per_address: Count = 1
    """Password checks running at once for one address; a burst from one address is refused at once with 429 (but for one login that waits)."""
    login_wait_s: Seconds = 5.0
    """How long a login may wait for a free password check, in order of arrival, before it gets 429."""
    login_queue: Count = 64
    """Logins waiting for a password check at most; one per address, more (up to this) from nat_addresses. Beyond that 429 at once."""
    login_successes_per_account: Count = 10
    """Successful logins for one name (from all addresses) within login_window_s; more are refused with 429 before the password is checked, so a loop logging in as oneself cannot keep the password checks busy."""
    login_successes_per_address: Count = 30
    """Successful logins from one address (any names) within login_window_s; more are refused with 429 before the password is checked."""
    login_device_days: Count = 180
    """How long a browser counts as a known place for the name it logged in as (a signed cookie, kept after logout): failed logins for that name from others, at the same address too, neither block nor slow its logins."""
    sessions_per_user: Count = 10
    """Open login sessions per user; a new login beyond that closes the user's oldest session (the one that expires first)."""
    trusted_proxies: list[NetworkText] = Field(default_factory=list)
    """Addresses or networks (``10.0.0.2``, ``10.0.0.0/24``) of reverse proxies in front of the gateway: only from these is ``X-Forwarded-For`` believed, read from the right up to the first address that is not a listed proxy. Empty: the connection's own address is the client, whatever the header says."""
    nat_addresses: list[NetworkText] = Field(default_factory=list)
    """Addresses or networks under which many users reach the gateway (the school's NAT, a classroom router). Logins from them count per address against the login_nat_* limits instead of the per-address ones; the limits per name and address stay."""
    login_nat_attempts_per_address: Count = 200
    """Failed logins (any names) within login_window_s from one of nat_addresses before it must wait."""
    login_nat_successes_per_address: Count = 300
    """Successful logins (any names) within login_window_s from one of nat_addresses; more are refused with 429."""
    login_nat_concurrency_per_address: Count = 4
    """Password checks running at once for one of nat_addresses (login_concurrency still bounds them all)."""
    requests_per_minute: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {"student": 20, "teacher": 60, "admin": 120}
    )
    """Requests per minute per role (chat, embeddings, transcription, search); beyond that HTTP 429."""
    tokens_per_day: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {"student": 50_000, "teacher": 200_000, "admin": 1_000_000}
    )
    """Chat tokens (prompt and answer) per day per role; beyond that HTTP 429."""
    vector_stores_per_user: int = Field(default=5, ge=0)
    """Workspaces a user may create through POST /v1/vector_stores, besides their private one; each has its own storage quota, the one retrieval.workspace_quota_mb sets for "u-"."""
    api_ingests_per_user: int = Field(default=4, ge=1)
    """Files of one user that /v1/vector_stores processes at once; adding more answers HTTP 429 until one is done."""
    api_files_mb_per_user: int = Field(default=500, ge=1)
    """MiB of uploads through POST /v1/files one user may keep at once (they wait there to be added to a vector store, at most upload_retention_hours); beyond that HTTP 413."""
    ui_running_events: int = Field(default=1000, ge=1)
    """Events of the web page (a chat answer, a transcription, an upload, a status check) running at once across
    every user, per language of the page. Each runs as soon as it arrives, however many others of the same kind
    run (Gradio's own default is one at a time per event, which served a whole class one student after another);
    what really bounds a user is behind it: the engines' fair queues (inference.max_running_per_user,
    transcription.max_running_per_user, retrieval.ingests_per_user) and requests_per_minute. Beyond this number
    events wait in Gradio's line."""
    chat_retention_days: int = Field(default=30, ge=0)
    """Days stored chats are kept; the admin can change it in the Admin tab. 0 keeps no chats."""
    document_retention_days: int = Field(default=365, ge=1)
    """Days a document (its text and vectors) stays in a workspace after its upload; the admin can change it in the Admin tab."""
    transcript_retention_days: int = Field(default=30, ge=1)
    """Days a transcript's download files are kept; the admin can change it in the Admin tab."""
    backup_retention_days: int = Field(default=30, ge=1)
    """Days a backup in backup_dir is kept (backups cannot be edited, so a deleted user's documents leave them only when they expire); the admin can change it in the Admin tab."""
    upload_retention_hours: float = Field(default=1.0, gt=0)
    """Hours an upload may stay in the gateway's upload cache (a file a handler refused, or one left by a crash) before it is deleted."""
    backup_dir: Path | None = None
    """The folder where Weaviate's filesystem backup module writes its backups (mounted into the gateway), so expired backups are deleted; empty means the gateway deletes none. ``schulki backup`` writes its dated folders here too (empty: backups under the data folder), and Weaviate's part of each lands in the same folder, so Weaviate's BACKUP_FILESYSTEM_PATH must be this folder as Weaviate sees it."""
    backup_keep: Count = 7
    """How many of ``schulki backup``'s dated folders are kept; each run deletes the older ones after a backup that succeeded (backup_retention_days still removes any older than that)."""
    max_chat_tokens: Count = 512
    """Most tokens of one answer in the web UI, and the default for the API when a request sets none."""
    document_part_tokens: int = Field(default=0, ge=0)
    """Most tokens of document text in one part when a whole document is summarized or translated; 0 derives it from the chat model's context (what is left after the instruction and the answer)."""
    document_summary_tokens: int = Field(default=300, ge=8)
    """Most tokens of the summary of one part of a document; the final summary gets this many for "ein Absatz", twice as many for key points and three times as many for "eine Seite"."""
    document_translation_tokens: int = Field(default=0, ge=0)
    """Most tokens of the translation of one part of a document; 0 allows one and a half times the part's length (a translation is about as long as its source)."""
    document_question_passage_tokens: int = Field(default=0, ge=0)
    """Most tokens of document passages in the prompt of a question about the user's documents (the Dokumente tab, ``/v1/vector_stores/{id}/chat/completions``); the best passages go in first while they fit. 0 gives them all the chat model's context leaves after the conversation so far, the question and the answer (max_chat_tokens, or the request's max_tokens); counted with the model's tokenizer."""
    max_upload_bytes: Count = 100 * 1024 * 1024
    """Largest upload (document or recording) through the web UI or the API; larger bodies are refused with 413 while they stream in."""
    ui_upload_mb_per_user: int = Field(default=250, ge=1)
    """MiB of uploads through the web page (``/gradio_api/upload``) one user may hold at once; an upload waits in the user's own folder of the upload cache until its event is over (at most upload_retention_hours). Beyond that HTTP 413. Keep it at least max_upload_bytes, or the largest upload cannot pass."""
    ui_uploads_per_minute: int = Field(default=10, ge=1)
    """Upload requests through the web page one user may make per minute (one request may carry several files); beyond that HTTP 429 with Retry-After."""
    https: bool = True
    """Serve the web page and the API over HTTPS (browsers allow the microphone only there, and passwords cross the LAN encrypted). Turn off only behind a reverse proxy that speaks HTTPS itself."""
    tls_cert_file: Path | None = None
    """The gateway's HTTPS certificate (PEM, with its chain): the school's own, or one from the school CA the roll-out makes. Empty: a certificate made once under the data folder (tls/), for this machine's names and addresses, from a CA of its own whose certificate ``schulki up`` shows how to trust."""
    tls_key_file: Path | None = None
    """Private key (PEM) of tls_cert_file."""
    tls_names: list[str] = Field(default_factory=list)
    """Further host names or addresses the self-made certificate names (for example the name students type, ki.schule.example); this machine's own names and addresses are always in it."""
    redirect_port: Port | None = None
    """A port that answers plain HTTP only with a redirect to the HTTPS address (80 in the roll-out); empty means none."""
    public_port: Port | None = None
    """The HTTPS port browsers reach, where it differs from port (compose publishes the container's 7860 as schulki_stack_gateway_port, for example 443): the plain-HTTP redirect points there. Empty means port."""

    @property
    def redirect_https_port(self) -> int:
        """The port the plain-HTTP redirect sends browsers to: the published one, not the container's."""
        return self.public_port or self.port

    max_request_bytes: Count = 4 * 1024 * 1024
    """Largest request body on every route that is not an upload (the JSON API, Gradio's event routes, the login form); refused with 413 while it streams in, before it is parsed."""
    body_idle_timeout_s: Seconds = 30.0
    """A request body that sends nothing for this many seconds is refused with 408 (slow senders cannot hold connections)."""
    local_passwords: Literal["everyone", "admins"] = "everyone"
    """Who may sign in with a password kept by schulki itself: everyone, or only admins (the first admin, once the school's directory signs everyone else in)."""
    ldap: LdapConfig = Field(default_factory=LdapConfig)
    """Sign-in through the school's LDAP directory."""
    oidc: OidcConfig = Field(default_factory=OidcConfig)
    """Sign-in through the school's OpenID Connect provider."""
    trusted_origins: list[str] = Field(default_factory=list)
    """Other web origins (``https://host:port``) whose pages may send requests with a user's login; empty means only the gateway's own pages."""


class CoresConfig(Section):
    """How ``schulki up`` divides one machine's cores between the engines it starts (services/schulki/cores.py, docs/decisions.md).

    The chat keeps most cores for itself; embeddings, transcription and retrieval, which work in bursts (an upload, a
    recording), share the rest at a lower priority, so that an upload during a class's chat does not stall the chat.
    The thread settings of each engine (inference.threads, inference.batch_threads, embeddings.threads,
    transcription.threads), where set, win over the derived ones. The roll-out to several machines does not use this:
    there each service runs in its own container with its own settings."""

    split: bool = True
    """Divide the cores. Off: every engine sizes its threads to the whole machine and runs on every core, as before."""
    chat_cores: int | None = Field(default=None, ge=1)
    """Physical cores the chat (every inference process) keeps for itself; the rest are shared by embeddings, transcription and retrieval. Empty means all but a quarter, at least one left for the rest: 2 cores give 1 + 1, 4 give 3 + 1, 8 give 6 + 2, 16 give 12 + 4 (on one core everything shares it). The core count is what ``schulki up`` may use (its affinity mask, e.g. under taskset)."""
    pin: bool = True
    """Pin each service to its share of the CPUs (CPU affinity), so that an upload cannot run on the chat's cores. Off: only the thread counts and the priority divide the cores, and the kernel may move a busy engine to any idle core; try it on a machine that is also busy with other programs, where pinning was sometimes slower (docs/decisions.md)."""
    background_nice: int = Field(default=5, ge=0, le=19)
    """How much lower the priority (nice) of embeddings, transcription and retrieval is, so that where they share CPUs with the chat or the gateway, the class's chat goes first."""


class LessonsConfig(Section):
    """Tasks (Aufgaben) a teacher prepares for classes, the teacher's reads of the students' chats in them, and the emergency stop."""

    codes_allowed: bool = False
    """Whether a teacher may share a task by a code as well as with classes (for students without that class); the admin can change it in the Admin tab."""
    code_length: int = Field(default=10, ge=8, le=32)
    """Characters of a task's code (31 letters and digits that cannot be mistaken for one another): 10 give 8·10¹⁴ codes, none to guess."""
    code_attempts_per_hour: Count = 10
    """Codes one user may try per hour (right or wrong); beyond that HTTP 429 with the minutes to wait."""
    default_budget: int = Field(default=20_000, ge=1)
    """Tokens a new task gets unless the teacher sets another budget; drawn from the teacher's daily quota (gateway.tokens_per_day) when the task is made."""
    max_days: int = Field(default=14, ge=1)
    """Longest time window of a task, in days."""
    timezone: str = "Europe/Berlin"
    """The school's time zone: a teacher's start and end times are read in it, and shown in it."""
    task_retention_days: int = Field(default=30, ge=1)
    """Days a task and its students' chats are kept after the task's end; then both are deleted."""
    read_log_retention_days: int = Field(default=365, ge=1)
    """Days the log of teachers' reads of task chats is kept (the Admin tab shows it)."""
    context_passages: int = Field(default=3, ge=0, le=10)
    """Passages of the task's documents put before a student's question (the best hits of a search with the question)."""


class EvaluationConfig(Section):
    """Settings of ``schulki eval`` (what a quant costs) and of the quality floor the planner respects."""

    results_dir: Path | None = None
    """Folder of stored evaluation results (one JSON per host and model file). Empty means eval-results beside the evaluated files for ``schulki eval``, and <data_dir>/models/eval-results for ``schulki plan`` and the Admin tab."""
    max_mean_kld: float | None = Field(default=None, ge=0)
    """Quality floor: the planner never chooses a quant whose measured mean KL divergence (on a machine of the same kind) is above this. Empty means no floor."""
    context: int = Field(default=512, ge=16)
    """Tokens per perplexity window, as llama-perplexity's -c (512 is what published tables use)."""
    threads: CountOrAuto = None
    """CPU threads for an evaluation; empty means the number of physical cores."""
    gpu_layers: GpuLayers = -1
    """Layers offloaded to the GPU during an evaluation; -1 means all of them (CPU where there is no GPU)."""


class CategoryRule(Section):
    """What moderation does when a category of the rules file matches a question or an answer."""

    outcome: Literal["pass", "warn", "block"] = "block"
    """pass: nothing changes; warn: the answer comes with a German note; block: a fixed, kind German answer instead of the model's (for self-harm with the Nummer gegen Kummer and the TelefonSeelsorge), and the model is not asked (a question) or is stopped (an answer)."""
    notify: bool = False
    """Write a flag (who, when, category, outcome) that the teachers of the user's classes and the admins see in the Hinweise tab."""


class ModerationConfig(Section):
    """Local moderation of the chat (the Chat tab, /v1/chat/completions, task chats and questions about documents): the school's own rules, on its own machines (gateway/moderation/)."""

    enabled: bool = True
    """Check every chat question before the model is asked and every answer as it streams. Off: no rules are read and nothing is checked."""
    rules_file: Path | None = None
    """The school's rules (TOML: German word lists and regular expressions per category); empty means the shipped German defaults, services/schulki/gateway/moderation/rules_de.toml, which is also the template to copy."""
    self_harm: CategoryRule = Field(default_factory=lambda: CategoryRule(outcome="block", notify=True))
    """Self-harm and suicidal thoughts: by default the help answer, and the user's teachers see a flag."""
    violence: CategoryRule = Field(default_factory=lambda: CategoryRule(outcome="block", notify=True))
    """Threats, plans of violence, weapons and explosives."""
    sexual: CategoryRule = Field(default_factory=lambda: CategoryRule(outcome="block", notify=False))
    """Explicit sexual content and requests for it (not sex education)."""
    personal_data: CategoryRule = Field(default_factory=lambda: CategoryRule(outcome="warn", notify=False))
    """Telephone numbers, e-mail addresses, IBANs and street addresses: by default a note asks not to share them."""
    store_text: bool = False
    """Keep the flagged text (at most 500 characters) in the flag, for the teachers and admins to read. Off: a flag holds who, when, the category and the outcome only."""
    flag_retention_days: int = Field(default=90, ge=1)
    """Days a flag is kept before the hourly retention purge deletes it."""


class ComplianceConfig(Section):
    """What only the school knows for the documents ``schulki compliance`` writes (every other fact comes from the settings); empty fields show as "[bitte eintragen]"."""

    school_name: str = ""
    """The school, as the controller (Verantwortlicher) of the processing."""
    school_address: str = ""
    """The school's postal address."""
    controller_contact: str = ""
    """Who at the school answers for schulki (name, role, mail or phone), for the record of processing and the letter to parents."""
    data_protection_officer: str = ""
    """The school's (or the Schulträger's) data protection officer and how to reach them."""


class Config(BaseSettings):
    """All of schulki's settings."""

    model_config = SettingsConfigDict(
        env_prefix="SCHULKI_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    """Folder for models, stores and accounts on this machine."""
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    """Settings every service shares."""
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    """The inference service."""
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    """The embeddings service."""
    transcription: TranscriptionConfig = Field(default_factory=TranscriptionConfig)
    """The transcription service."""
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    """The retrieval service."""
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    """The gateway."""
    cores: CoresConfig = Field(default_factory=CoresConfig)
    """How ``schulki up`` divides this machine's cores between the engines."""
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    """``schulki eval`` and the planner's quality floor."""
    moderation: ModerationConfig = Field(default_factory=ModerationConfig)
    """Local moderation of chat questions and answers."""
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    """The school's own facts for ``schulki compliance``."""
    lessons: LessonsConfig = Field(default_factory=LessonsConfig)
    """Tasks for classes, the teacher's oversight and the emergency stop."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("SCHULKI_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class SettingsError(ValueError):
    """Settings that cannot be used: each problem names its key (``section.key``) so the admin finds the line."""


def _suggestion(section: BaseModel | type[BaseModel] | None, key: str) -> str:
    import difflib

    if section is None:
        return ""
    fields = type(section).model_fields if isinstance(section, BaseModel) else section.model_fields
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _section_model(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The settings class a key path leads into (through lists of sections too), for the "did you mean" hint."""
    import typing

    annotation: Any = Config
    for part in path:
        if isinstance(part, int):  # an item of a list of sections, such as gateway.inference_nodes.0
            args = typing.get_args(annotation)
            annotation = args[0] if args else None
            continue
        field = annotation.model_fields.get(part) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        annotation = field.annotation if field is not None else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def describe_settings_error(error: ValidationError) -> str:
    """One line per problem: ``unknown setting inference.contxt_length (did you mean context_length?)`` or the key and what is wrong."""
    lines = []
    for problem in error.errors():
        location = tuple(problem["loc"])
        key = ".".join(str(part) for part in location)
        if problem["type"] == "extra_forbidden":
            lines.append(f"unknown setting {key}" + _suggestion(_section_model(location[:-1]), str(location[-1])))
        else:
            message = str(problem["msg"]).removeprefix("Value error, ")
            lines.append(f"setting {key}: {message}" if key else f"settings: {message}")
    return "; ".join(lines)


def load_config(**values: Any) -> Config:
    """The settings from the environment and SCHULKI_CONFIG, as every command reads them at start.

    Raises SettingsError naming every unknown or invalid key, for example
    ``unknown setting inference.contxt_length (did you mean context_length?)``.
    """
    try:
        return Config(**values)
    except ValidationError as error:
        source = os.environ.get("SCHULKI_CONFIG")
        where = f" (in {source} or SCHULKI_* variables)" if source else " (in SCHULKI_* variables)"
        raise SettingsError("Einstellungen ungültig (invalid settings)" + where + ": " + describe_settings_error(error)) from None
