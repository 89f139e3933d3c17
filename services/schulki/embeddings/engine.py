"""The embedding engine: one GGUF embedding model in llama.cpp, many texts per batch.

Texts are tokenized, cut to the model's limit, and packed into llama.cpp
batches of up to ``batch_tokens`` tokens and ``max_sequences_per_batch``
texts, each text its own sequence, so one forward pass embeds several short
texts. The model's pooling (mean for
all-MiniLM-L6-v2, as its GGUF says) gives one vector per sequence, which we
normalise to length 1. All llama.cpp work runs on one worker thread, because
a llama context is not thread safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from schulki.config import EmbeddingsConfig
from schulki.runtime.errors import ModelLoadError, NotReady

if TYPE_CHECKING:
    from llama_cpp import Llama

    from schulki.runtime.llama_adapter import Batch

log = logging.getLogger("schulki.embeddings")


@dataclass
class EmbeddingInfo:
    """Facts about the loaded embedding model."""

    model_name: str
    file_name: str
    quant: str
    dimension: int
    max_tokens: int
    """Most tokens of one text that go into its vector, special tokens included."""
    pooling: str

    @property
    def truncation_rule(self) -> str:
        return f"first {self.max_tokens} tokens kept (the model's start and end tokens included), the rest ignored"


@dataclass
class Embedded:
    """The vector of one text."""

    vector: np.ndarray
    token_count: int
    truncated: bool


MAX_CHARS_PER_TOKEN = 64
"""More characters than any one token of a real vocabulary spans."""

_POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


class EmbeddingEngine:
    """A loaded GGUF embedding model."""

    def __init__(self, model_path: Path, config: EmbeddingsConfig):
        self.model_path = model_path
        self.config = config
        self._llama: Llama | None = None
        self._batch: Batch | None = None
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._sequences = 1
        self._add_end = False
        self.info: EmbeddingInfo | None = None

    def load(self) -> EmbeddingInfo:
        """Load the model in embedding mode; raise ModelLoadError with a one-line reason if it cannot be."""
        from schulki.runtime import llama_adapter

        batch = self.config.batch_tokens
        if batch < 8:
            raise ModelLoadError(f"embeddings.batch_tokens must be at least 8, not {batch}")
        started = time.perf_counter()
        # Encoder models attend to the whole sequence, so a sequence must fit into
        # one micro-batch: n_ubatch = n_batch = n_ctx = batch_tokens.
        llama, _ = llama_adapter.load_llama(
            self.model_path,
            "embedding model",
            embedding=True,
            n_ctx=batch,
            n_batch=batch,
            n_ubatch=batch,
            n_threads=self.config.threads,
            n_threads_batch=self.config.threads,
            n_gpu_layers=self.config.gpu_layers,
            flash_attn=self.config.flash_attention,
        )
        pooling = llama_adapter.llama_pooling_type(llama.ctx)
        if pooling not in (1, 2, 3):
            llama.close()
            raise ModelLoadError(
                f"{self.model_path.name} pools its tokens as {_POOLING_NAMES.get(pooling, pooling)!r}; "
                "an embedding model with mean, cls or last pooling is needed"
            )
        self._llama = llama
        self._batch = llama_adapter.Batch(batch)
        vocab = llama_adapter.llama_model_get_vocab(llama.model)
        # BERT-like vocabularies end every text with [SEP]; a cut text must end with it too.
        self._add_end = bool(llama_adapter.llama_vocab_get_add_eos(vocab) or llama_adapter.llama_vocab_get_add_sep(vocab))
        self._sequences = max(1, min(self.config.max_sequences_per_batch, llama.context_params.n_seq_max))
        limit = llama_adapter.model_of(llama).n_ctx_train() or batch
        if self.config.max_tokens_per_text:
            limit = min(limit, self.config.max_tokens_per_text)
        metadata = llama.metadata
        self.info = EmbeddingInfo(
            model_name=metadata.get("general.name") or self.model_path.stem,
            file_name=self.model_path.name,
            quant=llama_adapter.llama_quant(llama),
            dimension=llama.n_embd(),
            max_tokens=max(2, min(limit, batch)),
            pooling=_POOLING_NAMES[pooling],
        )
        log.info(
            "loaded %s (%s, %d dimensions, %s pooling, up to %d tokens per text, %d texts per batch) in %.1f s",
            self.info.model_name,
            self.info.quant,
            self.info.dimension,
            self.info.pooling,
            self.info.max_tokens,
            self._sequences,
            time.perf_counter() - started,
        )
        return self.info

    def close(self) -> None:
        """Free the model once running work is done."""
        self._worker.shutdown(wait=True)
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    async def embed(self, texts: list[str]) -> list[Embedded]:
        """Embed texts on the worker thread; one Embedded per text, in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self.embed_blocking, texts)

    def _ready(self) -> tuple[Llama, EmbeddingInfo]:
        """The model and its facts; NotReady before load() and after close()."""
        if self._llama is None or self.info is None:
            raise NotReady("Das Embedding-Modell ist nicht geladen. (the embedding model is not loaded)")
        return self._llama, self.info

    def tokens(self, text: str) -> tuple[list[int], bool]:
        """A text's tokens cut to the model's limit, and whether it was cut."""
        llama, info = self._ready()
        limit = info.max_tokens
        # No token is longer than MAX_CHARS_PER_TOKEN characters, so the rest of a huge text
        # cannot count; not tokenizing it keeps an 8 MB text from holding up everyone else.
        cut = len(text) > limit * MAX_CHARS_PER_TOKEN
        if cut:
            text = text[: limit * MAX_CHARS_PER_TOKEN]
        tokens = llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if len(tokens) <= limit and not cut:
            return tokens, False
        if len(tokens) <= limit:
            return tokens, True
        if self._add_end:
            return tokens[: limit - 1] + tokens[-1:], True
        return tokens[:limit], True

    def embed_blocking(self, texts: list[str]) -> list[Embedded]:
        """Embed texts in as few llama.cpp batches as they fit into; call only on the worker thread."""
        from schulki.runtime import llama_adapter

        llama, info = self._ready()
        batch = self._batch
        assert batch is not None, "loaded with its batch"
        budget = self.config.batch_tokens
        results: list[Embedded] = []
        pending: list[tuple[list[int], bool]] = []
        used = 0

        def run_batch() -> None:
            llama_adapter.sequences_batch(batch, [tokens for tokens, _ in pending])
            llama_adapter.clear_memory(llama.ctx)
            status = llama_adapter.decode(llama.ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status}")
            for seq_id, (tokens, truncated) in enumerate(pending):
                vector = llama_adapter.sequence_embedding(llama.ctx, seq_id, info.dimension)
                norm = float(np.linalg.norm(vector))
                results.append(Embedded(vector / norm if norm > 0 else vector, len(tokens), truncated))
            pending.clear()

        for text in texts:
            tokens, truncated = self.tokens(text)
            if pending and (used + len(tokens) > budget or len(pending) >= self._sequences):
                run_batch()
                used = 0
            pending.append((tokens, truncated))
            used += len(tokens)
        if pending:
            run_batch()
        llama_adapter.clear_memory(llama.ctx)
        return results
