"""Continuous batching: one llama context decodes every running sequence in one batch per step.

One worker thread owns the llama context (a context is not thread safe). Each
step it builds one ``llama_batch`` from

- one token for every sequence that is answering (its last sampled token), and
- the next chunk of every prompt still being read, as far as the batch has room,

decodes it, and samples the next token of each answering sequence with that
sequence's own native sampler chain. A request joins at the next step; one
that finishes, hits a stop string or is cancelled leaves at once, so its slot
serves the next request one step later. A long prompt is read in chunks of at
most one batch, so the answers already running get a token every step while
it is read, and a request cancelled while its prompt is read is gone within one
chunk. When a step frees slots while requests wait in the fair queue in front
of the engine, the worker gives them a moment (a quarter of a step, at most
20 ms) to arrive, so they join the very next step.

Every slot is one llama.cpp sequence with its own stream of KV cells
(``n_seq_max`` = slots, ``kv_unified`` off, as llama-server runs with ``-np``).
What a slot computed stays in its cells after the request ends: the next
request that starts with the same tokens (the next turn of a conversation, or a
system prompt many students share) reads only what differs. A slot whose own
cells share less than another slot's are copied over first
(``llama_memory_seq_cp``). With the sliding-window cache of Gemma 3, cells
older than the window get overwritten, and the reuse is taken only where the
window still covers it (llama-server's own check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from schulki.inference.logprobs import LogprobReader, LogprobRequest, TokenLogprobs
from schulki.inference.sampling import SamplerChain
from schulki.inference.types import Generation, GenerationResult, StopText

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaModel
    from llama_cpp.llama_cpp import llama_context_p

Piece: TypeAlias = str | TokenLogprobs | GenerationResult | BaseException
"""What a request's caller receives: text pieces (each generated token's log-probabilities before its text, when asked
for), then the result (or an error)."""

log = logging.getLogger("schulki.inference")

HANDOFF_SHARE = 0.25
HANDOFF_MAX_S = 0.02
"""After a step that freed slots while requests wait in the fair queue, the worker waits for their arrival at most this
share of a step, and at most this long (see BatchDecoder._await_successors)."""

MIN_COPY_GAIN = 32
"""A slot copies another slot's cells only when that saves at least this many prompt tokens."""


@dataclass
class Request:
    """One generation handed to the worker; ``deliver`` runs on ``loop`` with each piece, then the result."""

    job: Generation
    loop: asyncio.AbstractEventLoop
    deliver: Callable[[Piece], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class BatchStats:
    """Counters for benchmarks and the log: how much prompt work prefix reuse saved."""

    requests: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    steps: int = 0
    generated_tokens: int = 0
    slot_copies: int = 0
    handoffs: int = 0
    """Requests that took a slot freed while they waited in the fair queue."""
    handoff_steps: int = 0
    """Steps those slots stayed empty before the waiting request joined, summed (0 each: it joined the next step)."""


class _Slot:
    """One sequence of the context: its cached tokens and, while busy, the request it serves."""

    def __init__(self, seq_id: int):
        self.seq_id = seq_id
        self.cached: list[int] = []
        """Tokens whose KV cells this sequence holds, from position 0."""
        self.request: Request | None = None
        self.sampler: SamplerChain | None = None
        self.prompt: list[int] = []
        self.fed = 0
        """Prompt tokens already in the cells."""
        self.pending: int | None = None
        """The last sampled token, decoded in the next step."""
        # Both set by _start before the slot serves a request, and read only while it does.
        self.text: StopText
        self.result: GenerationResult
        self.index = -1
        """Position in the current batch whose logits this slot samples from, or -1."""
        self.chunk_index = -1
        """Position in the current batch of the first prompt token this slot reads in this step."""
        self.started = 0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchDecoder:
    """The worker thread that runs every sequence of one llama context in shared steps."""

    def __init__(
        self,
        ctx: llama_context_p,
        model: LlamaModel,
        *,
        slots: int,
        n_batch: int,
        n_ctx_seq: int,
        n_swa: int,
        backlog: Callable[[], int] | None = None,
    ):
        """``backlog`` tells, from the worker thread, how many requests wait for a turn in front of the engine."""
        from schulki.runtime import llama_adapter as lc

        if slots > n_batch:
            raise ValueError(f"parallel sequences ({slots}) must not exceed the batch size ({n_batch})")
        self._lc = lc
        self._ctx = ctx
        self._mem = lc.llama_get_memory(ctx)
        self._model = model
        self._vocab = model.vocab
        self._n_vocab = lc.llama_vocab_n_tokens(model.vocab)
        self._n_batch = n_batch
        self.n_ctx_seq = n_ctx_seq
        self._n_swa = n_swa
        self._batch = lc.Batch(n_batch)
        # Per token id, whether it ends an answer and its text: each lookup is three short calls into llama.cpp,
        # and every call into a C library lets the worker thread lose the GIL to the server's threads and wait
        # to take it back. Both are fixed per vocabulary, so they are asked once per token id.
        self._ends: dict[int, bool] = {}
        self._pieces: dict[int, bytes] = {}
        self._logprobs = LogprobReader(ctx, self._n_vocab, self._piece)
        self._slots = [_Slot(i) for i in range(slots)]
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._outbox: list[tuple[Request, Piece]] = []
        self._waiting: deque[Request] = deque()
        self._admitted = 0
        self._backlog = backlog
        self._freed = 0
        """Slots freed during the current pass of the worker loop."""
        self._owed: deque[int] = deque()
        """For each slot freed while requests waited in the fair queue, the step count when it was freed."""
        self._last_step_s = 0.0
        self.stats = BatchStats()
        self.running = 0
        self._thread = threading.Thread(target=self._run, name="llama-batch", daemon=True)
        self._thread.start()

    # --- called from other threads -------------------------------------------------------------

    def submit(self, request: Request) -> None:
        self._inbox.put(request)

    def wake(self) -> None:
        """Make an idle worker look at its slots (a cancellation arrived)."""
        self._inbox.put(None)

    def close(self) -> None:
        """Stop the worker after the current step and free the batch; requests still running end as cancelled."""
        self._inbox.put(_STOP)
        self._thread.join()
        self._batch.close()

    # --- the worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        early: list[object] = []
        while True:
            busy = any(s.request for s in self._slots) or self._waiting
            items, early = early, []
            if not items:
                with contextlib.suppress(queue.Empty):
                    items.append(self._inbox.get() if not busy else self._inbox.get_nowait())
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(self._inbox.get_nowait())
            for item in items:
                if item is _STOP:
                    self._stop_all()
                    return
                if isinstance(item, Request):
                    self._waiting.append(item)
            self._freed = 0
            try:
                self._drop_cancelled()
                self._admit()
                if any(s.request for s in self._slots):
                    self._step()
            except Exception as error:
                log.exception("decode step failed")
                for slot in self._slots:
                    if slot.request is not None:
                        self._end(slot, error=error)
                        self._forget(slot)
            self._flush()
            if self._freed and any(s.request for s in self._slots):
                early = self._await_successors(self._freed)

    def _await_successors(self, freed: int) -> list[object]:
        """Give the requests waiting in the fair queue a moment to take the slots just freed, so that they join the next
        step instead of the one after it (at 16 sequences on 2 CPU cores a step takes about 150 ms). Their turns are
        handed out on the event loop once it has the results just flushed, which takes a few loop iterations; the running
        sequences wait at most a quarter of a step (and never more than HANDOFF_MAX_S) for them."""
        if self._backlog is None or self._backlog() == 0:
            return []
        deadline = time.monotonic() + min(HANDOFF_SHARE * self._last_step_s, HANDOFF_MAX_S)
        items: list[object] = []
        arrived = 0
        while arrived < freed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._inbox.get(timeout=remaining)
            except queue.Empty:
                break
            items.append(item)
            if item is _STOP:
                break
            arrived += isinstance(item, Request)
        return items

    def _emit(self, request: Request, item: Piece) -> None:
        self._outbox.append((request, item))

    def _flush(self) -> None:
        """Hand this step's pieces to their event loops, one wake-up per loop and step rather than one per token:
        on a busy machine every extra hand-over of the GIL between threads costs the decoding a time slice."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Request, Piece]]] = {}
        for request, item in self._outbox:
            by_loop.setdefault(request.loop, []).append((request, item))
        self._outbox = []
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown): nobody waits for these answers any more
                loop.call_soon_threadsafe(_deliver_all, items)

    def _stop_all(self) -> None:
        for slot in self._slots:
            if slot.request is not None:
                slot.result.finish_reason = "cancelled"
                self._end(slot)
        while self._waiting:
            self._emit(self._waiting.popleft(), RuntimeError("Der Dienst wird beendet. (The service is shutting down.)"))
        self._flush()

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._waiting if r.cancelled.is_set()]:
            self._waiting.remove(request)
            self._emit(request, _cancelled_result(request))
        for slot in self._slots:
            if slot.request is not None and slot.request.cancelled.is_set():
                slot.result.finish_reason = "cancelled"
                self._end(slot)

    def _admit(self) -> None:
        while self._waiting:
            free = [s for s in self._slots if s.request is None]
            if not free:
                return
            request = self._waiting.popleft()
            prompt = request.job.prompt_tokens
            slot = max(free, key=lambda s: common_prefix(s.cached, prompt))
            try:
                self._start(slot, request)
            except Exception as error:
                log.exception("could not start a sequence")
                self._emit(request, error)
                self._forget(slot)

    def _start(self, slot: _Slot, request: Request) -> None:
        lc, mem = self._lc, self._mem
        prompt = list(request.job.prompt_tokens)
        limit = len(prompt) - 1  # the last prompt token is always decoded: its logits give the first answer token
        if _scores_prompt(request.job):
            limit = 0  # each prompt token's logits are needed, so none comes from cached cells
        reuse = min(common_prefix(slot.cached, prompt), limit)
        donor = max((s for s in self._slots if s is not slot), key=lambda s: common_prefix(s.cached, prompt), default=None)
        if donor is not None:
            shared = min(common_prefix(donor.cached, prompt), limit)
            if shared >= reuse + MIN_COPY_GAIN:
                lc.llama_memory_seq_cp(mem, donor.seq_id, slot.seq_id, -1, -1)
                slot.cached = list(donor.cached)
                reuse = shared
                self.stats.slot_copies += 1
        if not lc.llama_memory_seq_rm(mem, slot.seq_id, reuse, -1):
            reuse = 0
        if reuse > 0:
            # A sliding-window cache may have overwritten cells the reused prefix still needs.
            pos_min = lc.llama_memory_seq_pos_min(mem, slot.seq_id)
            if pos_min < 0 or pos_min > max(0, reuse - self._n_swa):
                reuse = 0
        if reuse == 0:
            lc.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
        slot.cached = prompt[:reuse]
        slot.fed = reuse
        slot.prompt = prompt
        slot.pending = None
        slot.request = request
        slot.sampler = SamplerChain(request.job.sampling, self._n_vocab, prompt, grammar=request.job.grammar)
        slot.text = StopText(request.job.stop)
        slot.result = GenerationResult(finish_reason="length")
        self._admitted += 1
        slot.started = self._admitted
        self.stats.requests += 1
        if self._owed:
            self.stats.handoffs += 1
            self.stats.handoff_steps += self.stats.steps - self._owed.popleft()
        self.stats.prompt_tokens += len(prompt)
        self.stats.reused_tokens += reuse
        self.running = sum(1 for s in self._slots if s.request is not None)

    def _add(self, n: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        self._batch.put(n, token, pos, seq_id, logits)

    def _step(self) -> None:
        lc = self._lc
        n = 0
        fed: list[tuple[_Slot, list[int]]] = []
        answering = [(s, s.pending) for s in self._slots if s.request is not None and s.pending is not None]
        reading = sorted((s for s in self._slots if s.request is not None and s.pending is None), key=lambda s: s.started)
        for slot, pending in answering:
            self._add(n, pending, len(slot.cached), slot.seq_id, True)
            slot.index = n
            fed.append((slot, [pending]))
            n += 1
        for slot in reading:
            room = self._n_batch - n
            if room <= 0:
                slot.index = -1
                continue
            chunk = slot.prompt[slot.fed : slot.fed + room]
            last = slot.fed + len(chunk) == len(slot.prompt)
            every = slot.request is not None and _scores_prompt(slot.request.job)
            slot.chunk_index = n
            for i, token in enumerate(chunk):
                self._add(n, token, len(slot.cached) + i, slot.seq_id, every or (last and i == len(chunk) - 1))
                n += 1
            slot.index = n - 1 if last else -1
            fed.append((slot, chunk))
        self._batch.size = n
        started = time.perf_counter()
        rc = lc.decode(self._ctx, self._batch)
        self._last_step_s = time.perf_counter() - started
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.stats.steps += 1
        self._sample_all(fed, len(answering))

    def _sample_all(self, fed: list[tuple[_Slot, list[int]]], answering: int) -> None:
        """After a decode: note what each slot read, then pick and send the next token of each slot that samples."""
        sampled: list[tuple[_Slot, int]] = []
        for slot, tokens in fed:
            slot.cached.extend(tokens)
            if slot.pending is None:
                self._send_prompt_logprobs(slot, len(tokens))
                slot.fed += len(tokens)
            slot.pending = None
            if slot.index < 0:
                continue
            assert slot.request is not None and slot.sampler is not None, "a slot that serves a request has its sampler"
            asked = slot.request.job.logprobs
            if slot.request.job.max_tokens == 0:  # the prompt was all it asked about: its scores, or what would follow it
                if asked is not None and asked.following:
                    self._emit(slot.request, self._logprobs.following(slot.index, asked))
                self._end(slot)
                continue
            sampled.append((slot, slot.sampler.sample(self._ctx, slot.index)))
        # The sampler chains work on their own copies of the rows: the logits are still the model's own distribution.
        found = self._answer_logprobs(sampled, answering)
        for slot, token in sampled:
            reason = self._take(slot, token, found.get(slot.seq_id))
            if reason is None:
                slot.pending = token
            else:
                slot.result.finish_reason = reason
                self._end(slot)

    def _answer_logprobs(self, sampled: list[tuple[_Slot, int]], answering: int) -> dict[int, TokenLogprobs]:
        """The log-probabilities of the sampled tokens of the sequences that asked for them, by sequence id. The
        answering sequences hold the batch's first rows, one each: theirs are read together, in a few numpy calls for
        all rows (each numpy call on a large array lets go of the GIL, which on a busy machine costs a time slice)."""
        asking: list[tuple[_Slot, int, LogprobRequest]] = []
        for slot, token in sampled:
            asked = slot.request.job.logprobs if slot.request is not None else None
            if asked is not None:
                asking.append((slot, token, asked))
        if not asking:
            return {}
        together = [(slot, token, asked) for slot, token, asked in asking if slot.index < answering and asked.temperature == 1.0]
        items = self._logprobs.rows(answering, [(slot.index, token, asked.top) for slot, token, asked in together])
        found = {slot.seq_id: item for (slot, _, _), item in zip(together, items, strict=True)}
        for slot, token, asked in asking:
            if slot.seq_id not in found:
                found[slot.seq_id] = self._logprobs.at(slot.index, token, asked)
        return found

    def _send_prompt_logprobs(self, slot: _Slot, count: int) -> None:
        """For a request that scores its prompt: the log-probability of each prompt token the chunk just read predicts."""
        request = slot.request
        if request is None or not _scores_prompt(request.job):
            return
        assert request.job.logprobs is not None, "a request that scores its prompt asked for logprobs"
        # The logits at prompt position p predict token p + 1; the chunk's last row predicts the first answer token.
        predicted = slot.prompt[slot.fed + 1 : slot.fed + 1 + count]
        for item in self._logprobs.prompt(slot.chunk_index, predicted, request.job.logprobs):
            self._emit(request, item)

    def _piece(self, token: int) -> bytes:
        data = self._pieces.get(token)
        if data is None:
            data = self._pieces[token] = self._model.detokenize([token])
        return data

    def _take(self, slot: _Slot, token: int, logprobs: TokenLogprobs | None = None) -> str | None:
        """Send what a sampled token adds to the answer (after its log-probabilities, when asked for); return the finish
        reason when the answer ends here."""
        ends = self._ends.get(token)
        if ends is None:
            ends = self._ends[token] = bool(self._lc.llama_vocab_is_eog(self._vocab, token))
        if ends:
            return "stop"
        result, request = slot.result, slot.request
        assert request is not None, "only a slot that serves a request samples"
        if logprobs is not None:
            self._emit(request, logprobs)
        result.completion_tokens += 1
        self.stats.generated_tokens += 1
        piece = slot.text.push(self._piece(token))
        if piece:
            self._emit(request, piece)
        if slot.text.stopped:
            return "stop"
        if result.completion_tokens >= request.job.max_tokens or len(slot.prompt) + result.completion_tokens >= self.n_ctx_seq:
            return "length"
        return None

    def _end(self, slot: _Slot, error: BaseException | None = None) -> None:
        """Hand the caller its result (or error) and free the slot; its cells stay as a prefix cache."""
        request = slot.request
        assert request is not None, "_end frees a slot that serves a request"
        slot.request = None
        slot.pending = None
        self._freed += 1
        if self._backlog is not None and self._backlog() > 0:
            self._owed.append(self.stats.steps)
        if slot.sampler is not None:
            slot.sampler.close()
            slot.sampler = None
        self.running = sum(1 for s in self._slots if s.request is not None)
        if error is not None:
            self._emit(request, error)
            return
        tail = slot.text.flush() if slot.result.finish_reason != "cancelled" else ""
        if tail:
            self._emit(request, tail)
        self._emit(request, slot.result)

    def _forget(self, slot: _Slot) -> None:
        """Drop a slot's cells when their content is unknown (after an error)."""
        self._lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.cached = []


class _Stop:
    pass


def _deliver_all(items: list[tuple[Request, Piece]]) -> None:
    for request, item in items:
        request.deliver(item)


_STOP = _Stop()


def _scores_prompt(job: Generation) -> bool:
    return job.logprobs is not None and job.logprobs.prompt


def _cancelled_result(request: Request) -> GenerationResult:
    return GenerationResult(finish_reason="cancelled")
