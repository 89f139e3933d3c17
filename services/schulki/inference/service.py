"""The InferenceService: chat, token counting and model facts over gRPC."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc

from schulki.config import InferenceConfig
from schulki.inference.engine import ChatEngine
from schulki.inference.logprobs import MAX_TOP_LOGPROBS, LogprobRequest, TokenChoice, TokenLogprobs
from schulki.inference.tool_calls import CallWatcher, call_gbnf, checked_tools, conversation, template_tools
from schulki.inference.types import Generation, GenerationResult, ModelInfo, Sampling
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc
from schulki.runtime.errors import Busy, InvalidInput, NotReady
from schulki.runtime.fair_queue import FairScheduler
from schulki.runtime.logs import content

log = logging.getLogger("schulki.inference")

FINISH_REASONS = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH, "tool_calls": pb.FINISH_REASON_TOOL_CALLS}
MAX_STOP_SEQUENCES = 8
MAX_NEXT_TEMPERATURE = 5.0
"""NextTokens' temperature slider ends here: at 5 the distribution of a small model is nearly flat already."""
GREEDY = Sampling(temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0)
"""Scoring a text and the next-token list sample nothing; their jobs still carry a chain, the cheapest."""


class InferenceService(pb_grpc.InferenceServiceServicer):
    """Serves one GGUF chat model to many callers, fairly."""

    service_name = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name

    def __init__(self, config: InferenceConfig, model_path: Path):
        from schulki.inference.fit_check import parallel_sequences

        self.config = config
        parallel = parallel_sequences(config, model_path)
        self.engine = ChatEngine(model_path, config, parallel=parallel, backlog=lambda: self.scheduler.queue_length)
        # One turn per sequence of the engine's batch: the fair queue decides who decodes, the engine how.
        self.scheduler = FairScheduler(
            slots=parallel,
            max_queued=config.max_queued,
            max_queued_per_user=config.max_queued_per_user,
            max_running_per_user=config.max_running_per_user,
        )
        self._loaded = False
        self.served_model = ""

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_InferenceServiceServicer_to_server(self, server)

    async def start(self) -> None:
        from schulki.inference.fit_check import check_fits

        await asyncio.to_thread(check_fits, self.config, self.engine.model_path, parallel=self.engine.parallel)
        await asyncio.to_thread(self.engine.load)
        from schulki.models.served import served_name

        self.served_model = served_name(self.engine.model_path.name, self.config.model_name)
        log.info("serving as %s", self.served_model)
        self._loaded = True

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)

    def _require_loaded(self) -> ModelInfo:
        """The loaded model's facts; NotReady while it loads."""
        info = self.engine.info
        if not self._loaded or info is None:
            raise NotReady("Das Modell wird noch geladen. (The model is still loading.)")
        return info

    async def _prompt_tokens(self, messages: Sequence[pb.Message]) -> list[int]:
        """A conversation's tokens (tool calls and results in it written in the model's tool format, tool_calls.py)."""
        return await asyncio.to_thread(self.engine.chat_tokens, conversation(messages, None, self.engine.tool_format))

    def _sampling(self, request: pb.ChatRequest) -> Sampling:
        s, c = request.sampling, self.config
        temperature = (
            s.temperature
            if s.HasField("temperature")
            else (request.temperature if request.HasField("temperature") else c.default_temperature)
        )
        sampling = Sampling(
            temperature=temperature,
            top_p=s.top_p if s.HasField("top_p") else c.default_top_p,
            top_k=s.top_k if s.HasField("top_k") else c.default_top_k,
            repeat_penalty=s.repeat_penalty if s.HasField("repeat_penalty") else c.default_repeat_penalty,
            seed=s.seed if s.HasField("seed") else None,
            presence_penalty=s.presence_penalty if s.HasField("presence_penalty") else 0.0,
            frequency_penalty=s.frequency_penalty if s.HasField("frequency_penalty") else 0.0,
            min_p=s.min_p if s.HasField("min_p") else 0.0,
            logit_bias=dict(s.logit_bias),
        )
        if not 0.0 <= sampling.temperature <= 2.0:
            raise InvalidInput(f"temperature must be between 0 and 2, not {sampling.temperature:g}")
        if not 0.0 < sampling.top_p <= 1.0:
            raise InvalidInput(f"top_p must be above 0 and at most 1, not {sampling.top_p:g}")
        if sampling.top_k < 0:
            raise InvalidInput(f"top_k must not be negative, not {sampling.top_k}")
        if sampling.repeat_penalty <= 0:
            raise InvalidInput(f"repeat_penalty must be positive, not {sampling.repeat_penalty:g}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(sampling, name) <= 2.0:
                raise InvalidInput(f"{name} must be between -2 and 2, not {getattr(sampling, name):g}")
        if not 0.0 <= sampling.min_p <= 1.0:
            raise InvalidInput(f"min_p must be between 0 and 1, not {sampling.min_p:g}")
        n_vocab = self.engine.vocabulary_size
        for token, bias in sampling.logit_bias.items():
            if not 0 <= token < n_vocab:
                raise InvalidInput(f"logit_bias names token {token}, but the model's tokens are 0 to {n_vocab - 1}")
            if not -100.0 <= bias <= 100.0:
                raise InvalidInput(f"logit_bias for token {token} must be between -100 and 100, not {bias:g}")
        return sampling

    async def Chat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ChatResponse]:
        n_ctx = self._require_loaded().context_length
        sampling = self._sampling(request)
        logprobs = _chat_logprobs(request)
        if len(request.stop_sequences) > MAX_STOP_SEQUENCES:
            raise InvalidInput(f"at most {MAX_STOP_SEQUENCES} stop sequences, not {len(request.stop_sequences)}")
        if request.HasField("max_tokens") and request.max_tokens <= 0:
            raise InvalidInput(f"max_tokens must be positive, not {request.max_tokens}")
        if request.HasField("max_tokens") and request.max_tokens >= n_ctx:
            raise InvalidInput(f"max_tokens {request.max_tokens} does not fit into the context of {n_ctx} tokens")
        tools, tool_format = checked_tools(request), self.engine.tool_format
        shown = template_tools(tools) if tool_format.native else None
        prompt = await asyncio.to_thread(self.engine.chat_tokens, conversation(request.messages, tools, tool_format), shown)
        max_tokens = _answer_room(
            prompt, request.max_tokens if request.HasField("max_tokens") else None, n_ctx, "Kürze ihn oder beginne einen neuen Chat."
        )
        log.info("chat: %d prompt tokens, max %d, last message %s", len(prompt), max_tokens, content(request.messages[-1].content))
        grammar = await asyncio.to_thread(self.engine.grammar, request.json_schema) if request.HasField("json_schema") else None
        if (gbnf := call_gbnf(tools, tool_format)) is not None:
            grammar = await asyncio.to_thread(self.engine.grammar_of_gbnf, gbnf)
        watcher = CallWatcher(tools, tool_format) if tools.active else None
        job = Generation(
            prompt_tokens=prompt,
            max_tokens=max_tokens,
            sampling=sampling,
            stop=list(request.stop_sequences),
            grammar=grammar,
            logprobs=logprobs,
        )
        user = request.user or context.peer()
        result: GenerationResult | None = None
        async with self.scheduler.turn(user):
            async for item in self.engine.generate(job):
                if isinstance(item, GenerationResult):
                    result = item  # the last item: generate ends here
                elif isinstance(item, TokenLogprobs):
                    yield pb.ChatResponse(token=_token_proto(item))
                elif (text := watcher.push(item) if watcher else item) != "":
                    yield pb.ChatResponse(text=text)
        assert result is not None, "a generation that does not raise ends with its result"
        finish_reason = result.finish_reason
        if watcher is not None:
            calls, rest = watcher.end(finish_reason)
            if rest:
                yield pb.ChatResponse(text=rest)
            for call in calls:
                yield pb.ChatResponse(tool_call=call)
            finish_reason = "tool_calls" if calls else finish_reason
        # The turn is handed on before the finish is sent, so the next request can join the engine's next step.
        usage = pb.Usage(
            prompt_tokens=len(prompt), completion_tokens=result.completion_tokens, total_tokens=len(prompt) + result.completion_tokens
        )
        log.info("chat done: %s after %d tokens", finish_reason, result.completion_tokens)
        yield pb.ChatResponse(finish=pb.ChatFinish(reason=FINISH_REASONS[finish_reason], usage=usage))

    async def Complete(self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CompleteResponse]:
        """A raw prompt continued, or with ``fill_in_the_middle`` the gap between a prefix and a suffix filled (fill_in.py);
        streamed as Chat streams an answer. Editors send one such request per keystroke: the prompt starts with what the
        last one computed, so the engine's prefix cache reads only what changed."""
        n_ctx = self._require_loaded().context_length
        sampling = self._sampling(pb.ChatRequest(sampling=request.sampling))  # Complete has no shortcut temperature field
        if len(request.stop_sequences) > MAX_STOP_SEQUENCES:
            raise InvalidInput(f"at most {MAX_STOP_SEQUENCES} stop sequences, not {len(request.stop_sequences)}")
        logprobs = _complete_logprobs(request)
        scoring = logprobs is not None and logprobs.prompt
        # 0 reads a plain prompt only (echo, or its scores); a gap to fill needs at least one token
        fill = request.HasField("fill_in_the_middle")
        if request.HasField("max_tokens") and not (1 if fill else 0) <= request.max_tokens < n_ctx:
            least = "positive" if fill else "0 or more"
            raise InvalidInput(f"max_tokens must be {least} and less than the context of {n_ctx} tokens, not {request.max_tokens}")
        if scoring and request.HasField("fill_in_the_middle"):
            raise InvalidInput("prompt_logprobs cannot score a fill-in-the-middle prompt: it has no single text to score")
        if request.HasField("fill_in_the_middle"):
            fill = request.fill_in_the_middle
            extra = [(f.file_name, f.text) for f in fill.extra_files]
            wanted = request.max_tokens if request.HasField("max_tokens") else 0
            prompt = await asyncio.to_thread(self.engine.fill_in_tokens, fill.prefix, fill.suffix, extra, request.prompt, wanted)
        else:
            prompt = await asyncio.to_thread(self.engine.raw_prompt_tokens, request.prompt)
        if not prompt:
            raise InvalidInput("Der Prompt ist leer. (The prompt is empty.)")
        max_tokens = _answer_room(prompt, request.max_tokens if request.HasField("max_tokens") else None, n_ctx, "Kürze ihn.")
        log.info("complete: %d prompt tokens, max %d, prompt %s", len(prompt), max_tokens, content(request.prompt))
        job = Generation(
            prompt_tokens=prompt, max_tokens=max_tokens, sampling=sampling, stop=list(request.stop_sequences), logprobs=logprobs
        )
        if scoring and not await asyncio.to_thread(self.engine.has_start_token, prompt):
            # Nothing predicts a text's first token: OpenAI's echo gives it without a log-probability.
            first = TokenChoice(prompt[0], await asyncio.to_thread(self.engine.piece, prompt[0]), 0.0)
            yield pb.CompleteResponse(unscored=_choice_proto(first))
        async for response in self._stream_job(job, request.user or context.peer()):
            yield response

    async def _stream_job(self, job: Generation, user: str) -> AsyncIterator[pb.CompleteResponse]:
        """Generate within one of the user's turns: text pieces, then the finish with the usage."""
        result: GenerationResult | None = None
        # A job that scores its prompt gets the log-probabilities of its prompt tokens (all but the first) first.
        prompt_scores = len(job.prompt_tokens) - 1 if job.logprobs is not None and job.logprobs.prompt else 0
        async with self.scheduler.turn(user):
            async for item in self.engine.generate(job):
                if isinstance(item, GenerationResult):
                    result = item
                elif isinstance(item, TokenLogprobs) and prompt_scores > 0:
                    prompt_scores -= 1
                    yield pb.CompleteResponse(prompt_token=_token_proto(item))
                elif isinstance(item, TokenLogprobs):
                    yield pb.CompleteResponse(token=_token_proto(item))
                else:
                    yield pb.CompleteResponse(text=item)
        assert result is not None, "a generation that does not raise ends with its result"
        prompt_tokens = len(job.prompt_tokens)
        usage = pb.Usage(
            prompt_tokens=prompt_tokens, completion_tokens=result.completion_tokens, total_tokens=prompt_tokens + result.completion_tokens
        )
        log.info("complete done: %s after %d tokens", result.finish_reason, result.completion_tokens)
        yield pb.CompleteResponse(finish=pb.ChatFinish(reason=FINISH_REASONS[result.finish_reason], usage=usage))

    async def _plain_text(self, text: str, least: int) -> list[int]:
        """The tokens of a plain text (start token first) for scoring or the next tokens; at least ``least`` of them."""
        n_ctx = self._require_loaded().context_length
        if not text.strip():
            raise InvalidInput("Der Text ist leer. (The text is empty.)")
        tokens = await asyncio.to_thread(self.engine.text_tokens, text)
        if len(tokens) < least:
            raise InvalidInput(
                f"Der Text ist zu kurz: mindestens {least} Tokens. (The text has {len(tokens)}; at least {least} are needed.)"
            )
        if len(tokens) >= n_ctx:
            raise InvalidInput(
                f"Der Text ist zu lang: {len(tokens)} Tokens, es passen höchstens {n_ctx - 1}. "
                f"(The text has {len(tokens)} tokens; the context holds {n_ctx}.)"
            )
        return tokens

    async def _run(self, job: Generation, user: str) -> list[TokenLogprobs]:
        """Run a job for its log-probabilities under a turn of the fair queue, as a chat runs."""
        found: list[TokenLogprobs] = []
        async with self.scheduler.turn(user):
            async for item in self.engine.generate(job):
                if isinstance(item, TokenLogprobs):
                    found.append(item)
        return found

    async def ScoreText(self, request: pb.ScoreTextRequest, context: grpc.aio.ServicerContext) -> pb.ScoreTextResponse:
        top = _top_logprobs(request.top_logprobs)
        tokens = await self._plain_text(request.text, least=2)
        log.info("score text: %d tokens, text %s", len(tokens), content(request.text))
        job = Generation(prompt_tokens=tokens, max_tokens=0, sampling=GREEDY, logprobs=LogprobRequest(top=top, prompt=True))
        scored = await self._run(job, request.user or context.peer())
        if len(scored) != len(tokens) - 1:
            raise RuntimeError(f"scored {len(scored)} of {len(tokens) - 1} tokens")
        perplexity = math.exp(-sum(item.chosen.logprob for item in scored) / len(scored))
        first = TokenChoice(tokens[0], await asyncio.to_thread(self.engine.piece, tokens[0]), 0.0)
        return pb.ScoreTextResponse(tokens=[_token_proto(item) for item in scored], perplexity=perplexity, first=_choice_proto(first))

    async def NextTokens(self, request: pb.NextTokensRequest, context: grpc.aio.ServicerContext) -> pb.NextTokensResponse:
        if not 1 <= request.count <= MAX_TOP_LOGPROBS:
            raise InvalidInput(f"count must be from 1 to {MAX_TOP_LOGPROBS}, not {request.count}")
        temperature = request.temperature if request.HasField("temperature") else 1.0
        if not 0.0 < temperature <= MAX_NEXT_TEMPERATURE:
            raise InvalidInput(f"temperature must be above 0 and at most {MAX_NEXT_TEMPERATURE:g}, not {temperature:g}")
        tokens = await self._plain_text(request.text, least=1)
        log.info("next tokens: %d tokens, text %s", len(tokens), content(request.text))
        asked = LogprobRequest(top=request.count, temperature=temperature, following=True)
        job = Generation(prompt_tokens=tokens, max_tokens=0, sampling=GREEDY, logprobs=asked)
        found = await self._run(job, request.user or context.peer())
        if not found:
            raise RuntimeError("the next token's log-probabilities did not arrive")
        return pb.NextTokensResponse(tokens=[_choice_proto(c) for c in found[0].alternatives], prompt_tokens=len(tokens))

    async def Attention(self, request: pb.AttentionRequest, context: grpc.aio.ServicerContext) -> pb.AttentionResponse:
        """The attention weights of a short sentence, per layer and head (attention.py); refused while the class works."""
        self._require_loaded()
        if not request.text.strip():
            raise InvalidInput("Der Satz ist leer. (The text is empty.)")
        if self.scheduler.queue_length or self.engine.running:
            # One evaluation without flash attention beside the class's answers would slow every one of them.
            raise Busy(
                "Die Klasse arbeitet gerade mit dem Modell; die Aufmerksamkeits-Ansicht wartet, bis es frei ist. "
                f"(The model is busy: {self.engine.running} running, {self.scheduler.queue_length} waiting.)"
            )
        log.info("attention: text %s", content(request.text))
        maps = await asyncio.to_thread(self.engine.attention, request.text)
        pieces = [await asyncio.to_thread(self.engine.piece, token) for token in maps.tokens]
        return pb.AttentionResponse(
            tokens=[pb.TokenChoice(token_id=token, piece=piece) for token, piece in zip(maps.tokens, pieces, strict=True)],
            layer_count=maps.layer_count,
            layers=[
                pb.AttentionLayer(layer=layer, heads=[pb.AttentionHead(weights=head.ravel().tolist()) for head in heads])
                for layer, heads in maps.layers.items()
            ],
            unavailable=maps.unavailable,
            seconds=maps.seconds,
            architecture=maps.architecture,
        )

    async def CountTokens(self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext) -> pb.CountTokensResponse:
        info = self._require_loaded()
        tokens = await self._prompt_tokens(request.messages)
        return pb.CountTokensResponse(token_count=len(tokens), context_length=info.context_length)

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetModelInfoResponse:
        info = self._require_loaded()
        return pb.GetModelInfoResponse(
            model_name=info.model_name,
            quant=info.quant,
            context_length=info.context_length,
            training_context_length=info.training_context_length,
            gpu_layers=info.gpu_layers,
            layer_count=info.layer_count,
            weights_bytes=info.buffers.weights,
            kv_cache_bytes=info.buffers.kv_cache,
            compute_buffer_bytes=info.buffers.compute,
            parallel_sequences=info.parallel_sequences,
            queue_length=self.scheduler.queue_length,
            running_sequences=self.engine.running,
            file_name=info.file_name,
            served_model=self.served_model,
        )


def _top_logprobs(top: int) -> int:
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InvalidInput(f"top_logprobs must be from 0 to {MAX_TOP_LOGPROBS}, not {top}")
    return top


def _chat_logprobs(request: pb.ChatRequest) -> LogprobRequest | None:
    """What a chat asks for: nothing, each token's log-probability, or that and ``top_logprobs`` alternatives."""
    if not request.logprobs and not request.HasField("top_logprobs"):
        return None
    return LogprobRequest(top=_top_logprobs(request.top_logprobs))


def _complete_logprobs(request: pb.CompleteRequest) -> LogprobRequest | None:
    """What a completion asks for: nothing, or each token's log-probability with alternatives, the prompt's too."""
    if not request.HasField("logprobs"):
        if request.prompt_logprobs:
            raise InvalidInput("prompt_logprobs needs logprobs set (0 to 20 alternatives)")
        return None
    return LogprobRequest(top=_top_logprobs(request.logprobs), prompt=request.prompt_logprobs)


def _choice_proto(choice: TokenChoice) -> pb.TokenChoice:
    return pb.TokenChoice(token_id=choice.token, piece=choice.piece, logprob=choice.logprob)


def _token_proto(item: TokenLogprobs) -> pb.TokenLogprob:
    return pb.TokenLogprob(chosen=_choice_proto(item.chosen), alternatives=[_choice_proto(c) for c in item.alternatives])


def _answer_room(prompt: list[int], max_tokens: int | None, n_ctx: int, advice: str) -> int:
    """The tokens an answer may take after ``prompt``: ``max_tokens`` (None: all the context leaves); InvalidInput,
    in German first with ``advice``, for a prompt that fills the context or an answer that would not fit beside it."""
    room = n_ctx - len(prompt)
    if room <= 0:
        raise InvalidInput(
            f"Der Text ist zu lang: {len(prompt)} Tokens, es passen höchstens {n_ctx - 1}. {advice} "
            f"(The prompt has {len(prompt)} tokens; the context holds {n_ctx}.)"
        )
    wanted = room if max_tokens is None else max_tokens
    if wanted > room:
        raise InvalidInput(
            f"Prompt ({len(prompt)} tokens) plus max_tokens ({wanted}) exceed the context of {n_ctx} tokens; "
            f"at most {room} tokens can be generated."
        )
    return wanted
