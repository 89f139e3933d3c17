"""The chat engine: one llama.cpp model, its chat template, and token-by-token generation.

The engine owns the model and one llama context with ``parallel_sequences``
sequences; the batch worker (batching.py) runs every generation on its own
thread, because a llama context is not thread safe. The service never touches
llama.cpp itself: it asks the engine to count tokens, then holds one of the
scheduler's turns (one per sequence) while the engine generates.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from schulki.config import InferenceConfig
from schulki.inference.attention import AttentionMaps, AttentionReader
from schulki.inference.batching import BatchDecoder, BatchStats, Piece, Request
from schulki.inference.fill_in import FimTokens, fill_in_the_middle_prompt, fim_tokens_of
from schulki.inference.grammar import CompiledGrammar, Grammars
from schulki.inference.logprobs import TokenLogprobs
from schulki.inference.tool_calls import ToolFormat, tool_format_of
from schulki.inference.types import Generation, GenerationResult, ModelInfo
from schulki.models.gguf import quant_name
from schulki.runtime.errors import InvalidInput, NotReady
from schulki.runtime.llama_adapter import buffer_sizes
from schulki.runtime.threads import Bridge

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaModel
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_cpp import llama_context_p
    from llama_cpp.llama_types import ChatCompletionRequestMessage, ChatCompletionTool

log = logging.getLogger("schulki.inference")

# Used only when a GGUF carries no chat template of its own (base models such as the
# default Gemma 3 270M): the turn format its family was trained with, else ChatML.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% set system = namespace(text='') %}"
    "{% for m in messages %}{% if m.role == 'system' %}{% set system.text = system.text + m.content + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{% if m.role == 'user' %}{{ system.text }}{% set system.text = '' %}{% endif %}"
    "{{ m.content | trim }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FALLBACK_TEMPLATES = {"gemma": GEMMA_TEMPLATE, "gemma2": GEMMA_TEMPLATE, "gemma3": GEMMA_TEMPLATE}


class ChatEngine:
    """A loaded GGUF chat model with its chat template, decoding up to ``parallel_sequences`` answers at once."""

    def __init__(self, model_path: Path, config: InferenceConfig, parallel: int | None = None, backlog: Callable[[], int] | None = None):
        """``backlog``: how many requests wait for a turn in front of the engine (read from the batch worker's thread)."""
        self.model_path = model_path
        self._backlog = backlog
        self.config = config
        self.parallel = parallel or config.parallel_sequences or 1
        self._model: LlamaModel | None = None
        self._ctx: llama_context_p | None = None
        self._decoder: BatchDecoder | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._grammars: Grammars | None = None
        self.tool_format = ToolFormat(native=False)
        """How this model's prompt shows tools and how it writes calls (tool_calls.py); set when it loads."""
        self.info: ModelInfo | None = None
        self._attention: AttentionReader | None = None

    @property
    def stats(self) -> BatchStats:
        """Counters of the batch worker (requests, prompt tokens, of them reused from cached cells)."""
        return self._ready_decoder().stats

    @property
    def vocabulary_size(self) -> int:
        """Token ids of the model run from 0 to this, exclusive."""
        from schulki.runtime import llama_adapter as lc

        return int(lc.llama_vocab_n_tokens(self._ready_model()[0].vocab))

    @property
    def running(self) -> int:
        """Sequences decoding (or reading their prompt) right now."""
        return self._decoder.running if self._decoder else 0

    def load(self) -> ModelInfo:
        """Load the model and make its context; raise ModelLoadError with a one-line reason if it cannot be."""
        from schulki.runtime import llama_adapter as lc

        started = time.perf_counter()
        c = self.config
        model, lines = lc.load_model(self.model_path, gpu_layers=c.gpu_layers)
        self._model = model
        params = lc.llama_context_default_params()
        params.n_seq_max = self.parallel
        params.n_ctx = c.context_length * self.parallel  # every sequence gets its own stream of context_length cells
        params.n_batch = params.n_ubatch = c.batch_size
        threads = c.threads or max(multiprocessing.cpu_count() // 2, 1)
        params.n_threads = threads
        params.n_threads_batch = c.batch_threads or threads
        params.flash_attn_type = lc.flash_attn_type(c.flash_attention)
        params.type_k = params.type_v = _GGML_TYPES[c.kv_cache_type]
        params.swa_full = c.full_swa_cache
        params.kv_unified = False
        params.no_perf = True
        self._ctx, context_lines = lc.new_context(model, params)
        lines += context_lines
        metadata = model.metadata()
        arch = metadata.get("general.architecture", "")
        template = metadata.get("tokenizer.chat_template") or FALLBACK_TEMPLATES.get(arch, CHATML_TEMPLATE)
        eos, bos = model.token_eos(), model.token_bos()
        self._formatter = lc.chat_formatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
        )
        self._grammars = Grammars(model.vocab)
        self.tool_format = tool_format_of(self._formatter, template)
        n_ctx_seq = lc.llama_n_ctx_seq(self._ctx)
        n_swa = 0 if c.full_swa_cache else lc.llama_model_n_swa(model.model)
        self._decoder = BatchDecoder(
            self._ctx, model, slots=self.parallel, n_batch=c.batch_size, n_ctx_seq=n_ctx_seq, n_swa=n_swa, backlog=self._backlog
        )
        layers = int(metadata.get(f"{arch}.block_count", 0) or 0)
        gpu_layers = c.gpu_layers if c.gpu_layers >= 0 else layers
        self.info = ModelInfo(
            model_name=metadata.get("general.name") or self.model_path.stem,
            file_name=self.model_path.name,
            quant=quant_name(metadata, model.desc()),
            context_length=n_ctx_seq,
            training_context_length=model.n_ctx_train(),
            gpu_layers=min(gpu_layers, layers) if lc.llama_supports_gpu_offload() else 0,
            layer_count=layers,
            parallel_sequences=self.parallel,
            buffers=buffer_sizes(lines),
        )
        log.info(
            "loaded %s (%s, %d parallel sequences of %d tokens) in %.1f s",
            self.info.model_name,
            self.info.quant,
            self.parallel,
            n_ctx_seq,
            time.perf_counter() - started,
        )
        return self.info

    def close(self) -> None:
        """Free the model once the worker has stopped."""
        from schulki.runtime import llama_adapter as lc

        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        if self._ctx is not None:
            lc.llama_free(self._ctx)
            self._ctx = None
        self._grammars = None
        if self._attention is not None:
            self._attention.close()
            self._attention = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def _ready_model(self) -> tuple[LlamaModel, Jinja2ChatFormatter]:
        if self._model is None or self._formatter is None:
            raise NotReady("Das Modell ist nicht geladen. (the model is not loaded)")
        return self._model, self._formatter

    def _ready_decoder(self) -> BatchDecoder:
        if self._decoder is None:
            raise NotReady("Das Modell ist nicht geladen. (the model is not loaded)")
        return self._decoder

    def chat_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Apply the model's chat template (with ``tools`` in OpenAI's shape, for a template that renders them) and
        tokenize; safe to call beside a generation."""
        model, formatter = self._ready_model()
        try:
            # llama-cpp-python types messages as OpenAI's TypedDicts; the template reads role and content, which these have.
            result = formatter(
                messages=cast("list[ChatCompletionRequestMessage]", messages), tools=cast("list[ChatCompletionTool] | None", tools)
            )
        except Exception as error:  # the template rejected the conversation
            raise InvalidInput(f"Das Modell kann dieses Gespräch nicht verarbeiten: {error}") from None
        return model.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    def grammar(self, schema_text: str) -> CompiledGrammar:
        """The grammar of a JSON schema (compiled once, then cached); InvalidInput naming the problem if it has none."""
        if self._grammars is None:
            raise NotReady("Das Modell ist nicht geladen. (the model is not loaded)")
        return self._grammars.compile(schema_text)

    def grammar_of_gbnf(self, gbnf: str) -> CompiledGrammar:
        """A grammar written in GBNF (a tool call's), compiled once, then cached."""
        if self._grammars is None:
            raise NotReady("Das Modell ist nicht geladen. (the model is not loaded)")
        return self._grammars.compile_gbnf(gbnf)

    def tokens_of(self, text: str) -> list[int]:
        """Plain text as the model's tokens (no chat template, no special tokens)."""
        return self._ready_model()[0].tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def raw_prompt_tokens(self, text: str) -> list[int]:
        """A prompt as it is, without a chat template: BOS where the model wants one, special tokens written as text
        taken as such (llama-server's /completion does the same)."""
        return self._ready_model()[0].tokenize(text.encode("utf-8"), add_bos=True, special=True)

    @property
    def fim_tokens(self) -> FimTokens | None:
        """The model's fill-in-the-middle tokens; None for a model that has none (a chat model)."""
        return fim_tokens_of(self._ready_model()[0].vocab)

    def fill_in_tokens(self, prefix: str, suffix: str, extra_files: list[tuple[str, str]], prompt: str, max_tokens: int) -> list[int]:
        """The prompt of a fill-in-the-middle request in the model's FIM format (fill_in.py); InvalidInput for a model
        without FIM tokens."""
        fim = self.fim_tokens
        if fim is None:
            name = self.info.model_name if self.info else self.model_path.name
            raise InvalidInput(
                f"Das Modell {name} kann keine Lücken füllen (es hat keine Fill-in-the-Middle-Tokens); nimm ein Code-Modell. "
                "(This model has no fill-in-the-middle tokens: suffix and infill need a code model such as Qwen2.5-Coder.)"
            )
        model = self._ready_model()[0]
        prompt_tokens = model.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) if prompt else []
        return fill_in_the_middle_prompt(
            self.tokens_of,
            fim,
            prefix,
            suffix,
            extra_files,
            prompt_tokens,
            n_batch=self.config.batch_size,
            n_predict=max_tokens,
            n_ctx=self.info.context_length if self.info else self.config.context_length,
        )

    def text_tokens(self, text: str) -> list[int]:
        """A plain text as the model reads it on its own: its start token (where the model has one), then the text's
        tokens; no chat template, and special tokens written in the text stay plain text."""
        model = self._ready_model()[0]
        return model.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def attention(self, text: str) -> AttentionMaps:
        """The attention weights of a short plain text, from a small context of their own (attention.py)."""
        model = self._ready_model()[0]
        if self._attention is None:
            c = self.config
            threads = c.threads or max(multiprocessing.cpu_count() // 2, 1)
            self._attention = AttentionReader(model, c.attention_max_tokens, c.attention_max_layers, c.attention_time_limit_s, threads)
        return self._attention.read(self.text_tokens(text))

    def has_start_token(self, tokens: list[int]) -> bool:
        """Whether ``tokens`` (a prompt tokenized with the start token where the model wants one) begin with a start
        token that is not part of the text."""
        model = self._ready_model()[0]
        return bool(tokens) and model.add_bos_token() and tokens[0] == model.token_bos()

    def piece(self, token: int) -> bytes:
        """The bytes of one token."""
        return bytes(self._ready_model()[0].detokenize([token]))

    async def generate(self, job: Generation) -> AsyncIterator[str | TokenLogprobs | GenerationResult]:
        """Yield text pieces as they are generated (each token's log-probabilities before its text, when the job asks),
        then the GenerationResult.

        The job joins the running batch at the next step. Closing the iterator
        early (the caller cancelled) takes it out within one step, and its slot
        is free again when this returns.
        """
        pieces: Bridge[str | TokenLogprobs | GenerationResult] = Bridge()
        ended = pieces.loop.create_future()

        def deliver(item: Piece) -> None:  # on the loop: the batch worker hands over per step
            pieces.put_here(item)
            if not isinstance(item, (str, TokenLogprobs)) and not ended.done():
                ended.set_result(None)

        request = Request(job, pieces.loop, deliver)
        decoder = self._ready_decoder()
        decoder.submit(request)
        try:
            while True:
                item = await pieces.get()
                if isinstance(item, GenerationResult):
                    yield item
                    return
                if isinstance(item, TokenLogprobs):
                    yield item
                    continue
                # Send what piled up while the consumer was busy as one piece.
                item += "".join(pieces.ready(lambda piece: isinstance(piece, str)))  # type: ignore[arg-type]
                yield item
        finally:
            if not ended.done():
                request.cancelled.set()
                decoder.wake()
                await asyncio.shield(ended)


_GGML_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}
"""ggml type ids for the KV cache element types the settings allow."""
