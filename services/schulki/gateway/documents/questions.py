"""Questions about a user's documents: find the best passages, then let the user's model answer with them, citing them.

One use case behind two doors: the Dokumente tab and ``POST /v1/vector_stores/{id}/chat/completions`` both call
``Gateway.ask_documents``, which hands over to ``answer_question`` here. In order:

1. the workspace must be one the user may read (``workspaces.workspace_access``, else WorkspaceRefused), the model
   is the one a chat would get (``ChatModels.resolve``), and the question counts as one request against the user's
   quota before anything is searched;
2. the prompt's fixed part (the conversation so far and the question) and the answer's tokens are counted with the
   model's own tokenizer (the inference service's CountTokens; where a node offers no count, estimated at
   ``document_parts.BYTES_PER_TOKEN`` bytes a token); what the model's context leaves is the passage budget, which
   ``gateway.document_question_passage_tokens`` may cap;
3. the search query is the question together with the user's previous questions (``FOLLOW_UP_QUESTIONS``), so a
   follow-up such as "Und wann war das?" finds what the conversation is about;
4. passages go in best-first while they fit the budget (``choose_passages``); rows of a table become one Markdown
   table, and a counting question gets a small table whole when it fits (``document_context``);
5. the answer streams through ``Gateway.chat`` (token reservation, fair queue, the model's nodes), the passages
   numbered [1], [2] … in the prompt as in the ``Cited`` event that comes first.

The model's first piece is awaited before ``Cited`` is yielded, so every refusal (quota, a prompt the model's
template rejects) is raised before a caller commits to a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import grpc

from schulki.gateway.documents.parts import estimate_tokens
from schulki.gateway.documents.question_context import build_context, whole_tables
from schulki.gateway.nodes.clients import Services
from schulki.inference.v1 import inference_service_pb2 as inference_pb

if TYPE_CHECKING:
    from schulki.config import GatewayConfig

ANSWER_PROMPT = (
    "Beantworte die Frage nur mit den folgenden Auszügen aus Dokumenten. Wenn sie die Antwort nicht enthalten, sag das. "
    "Antworte kurz und auf Deutsch.\n\n{context}\n\nFrage: {question}"
)
"""The last message of the prompt: the passages found for this question, then the question (earlier turns stay plain)."""
NO_PASSAGES = "In diesem Arbeitsbereich wurde nichts Passendes gefunden. (Nothing matching was found in this workspace.)"
"""The answer when the search finds nothing: the model is not asked to answer from no passages."""
FOLLOW_UP_QUESTIONS = 2
"""Earlier questions of the user that join the search query of a follow-up (the answers stay out: a small model's
answer can be wrong, and its words would steer the search)."""
MAX_QUERY_CHARS = 2000
"""Longest search query (its end is kept: the newest question); the retrieval service takes at most 4,000 characters."""
HISTORY_SHARE = 0.5
"""At most this share of what the context leaves after the question and the answer goes to the conversation so far;
older turns are left out first, so a long conversation never pushes out the passages."""
MARGIN_TOKENS = 16
"""Tokens kept free besides the counted prompt and answer: where the passages meet, their tokens may merge differently."""
COUNT_BASE = "Text:"
"""The message a text is counted behind (CountTokens refuses an empty conversation); its tokens are taken off again."""
MESSAGE_TOKENS = 8
"""Tokens the chat template adds per message, where the tokens are estimated rather than counted."""
MIN_CANDIDATES = 4
"""Passages the search returns at least (the old fixed number)."""
MAX_CANDIDATES = 40
"""Passages the search returns at most: each is counted, and more than 40 rarely fit a context."""
SHORT_PASSAGE_TOKENS = 100
"""Tokens of a short passage (a table row, a short paragraph): the search returns enough of them to fill the budget."""


class QuestionRefused(Exception):
    """A question that cannot be answered as asked: ``status`` is the HTTP status (400), the message German with English."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


@dataclass(frozen=True)
class Turn:
    """One earlier message of the conversation: the user's question ("user") or the answer it got ("assistant")."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class DocumentQuestion:
    """A question about the documents of one workspace, with the conversation it follows and how to answer it."""

    workspace: str
    question: str
    history: tuple[Turn, ...] = ()
    model: str | None = None
    """The model asked for; None or "schulki-chat" is the user's preselected model, as in the chat."""
    max_tokens: int | None = None
    """Longest answer; None is ``gateway.max_chat_tokens``."""
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    instructions: str = ""
    """Instructions of the caller (an API client's system message), sent as the system message."""


@dataclass(frozen=True)
class Passage:
    """A passage the prompt holds, under its number; ``tokens`` as counted (or estimated) for the budget."""

    number: int
    source: str
    page: int
    section: str
    document_id: str
    chunk_index: int
    score: float
    text: str
    tokens: int


@dataclass(frozen=True)
class Cited:
    """The first event: the passages given to the model (best first), the model that answers, the search query, the budget."""

    passages: tuple[Passage, ...]
    model: str
    query: str
    budget: int


@dataclass(frozen=True)
class Piece:
    """The next piece of the answer's text; ``replaces``: moderation's fixed answer, shown in place of what came before."""

    text: str
    replaces: bool = False


@dataclass(frozen=True)
class Finished:
    """The last event: why the answer ended ("stop" or "length") and the tokens it used."""

    reason: str
    prompt_tokens: int
    completion_tokens: int


AnswerEvent = Cited | Piece | Finished
FINISH_REASONS = {inference_pb.FINISH_REASON_STOP: "stop", inference_pb.FINISH_REASON_LENGTH: "length"}


# -- pure rules (unit-tested) ------------------------------------------------------------------------------------------


def passage_budget(context_length: int, fixed_tokens: int, answer_tokens: int, cap: int = 0) -> int:
    """Tokens left for passages: the context less the prompt without passages, the answer and a margin; at most ``cap`` when set."""
    room = context_length - fixed_tokens - answer_tokens - MARGIN_TOKENS
    return max(0, min(room, cap) if cap else room)


def choose_passages(costs: Sequence[int], budget: int) -> list[int]:
    """The indices of the passages (given best first) that go in: each while it still fits; one that does not fit is
    passed over, and a shorter one after it may still go in."""
    chosen: list[int] = []
    used = 0
    for index, cost in enumerate(costs):
        if used + cost <= budget:
            chosen.append(index)
            used += cost
    return chosen


def search_depth(budget: int) -> int:
    """How many passages to ask the search for: enough short ones to fill the budget, within MIN/MAX_CANDIDATES."""
    return max(MIN_CANDIDATES, min(MAX_CANDIDATES, budget // SHORT_PASSAGE_TOKENS))


def retrieval_query(question: str, history: Sequence[Turn]) -> str:
    """The search query: the user's last FOLLOW_UP_QUESTIONS earlier questions, then this one (cut from the front)."""
    earlier = [turn.content.strip() for turn in history if turn.role == "user" and turn.content.strip()]
    query = "\n".join([*earlier[-FOLLOW_UP_QUESTIONS:], question.strip()]) if FOLLOW_UP_QUESTIONS else question.strip()
    return query[-MAX_QUERY_CHARS:]


def keep_recent(costs: Sequence[int], roles: Sequence[str], allowance: int) -> int:
    """How many of the newest turns fit ``allowance`` tokens, the kept part starting with a question (templates alternate)."""
    kept, used = 0, 0
    for cost in reversed(costs):
        if used + cost > allowance:
            break
        kept, used = kept + 1, used + cost
    while kept and roles[len(roles) - kept] != "user":
        kept -= 1
    return kept


# -- counting with the model's tokenizer -------------------------------------------------------------------------------


class TokenCounter:
    """Tokens as the model counts them (CountTokens on a node of the model), or estimated where its node offers no count."""

    def __init__(self, services: Services, model: str, context_length: int, empty_message_tokens: int | None) -> None:
        self.services, self.model, self.context_length = services, model, context_length
        self._empty = empty_message_tokens
        """Tokens of a conversation of one message COUNT_BASE: a text's tokens are those of COUNT_BASE and the text less these."""

    @property
    def exact(self) -> bool:
        return self._empty is not None

    @classmethod
    async def open(cls, services: Services, model: str) -> TokenCounter:
        """A counter for ``model``: its context length from CountTokens, or from the nodes' model info where it is missing."""
        try:
            counted = await services.count_tokens([{"role": "user", "content": COUNT_BASE}], model)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return cls(services, model, services.context_length(model), None)
        return cls(services, model, counted.context_length, counted.token_count)

    async def prompt(self, messages: list[dict[str, str]]) -> int:
        """Tokens of a whole prompt once the model's chat template is applied."""
        if self._empty is None:
            return sum(estimate_tokens(message["content"]) + MESSAGE_TOKENS for message in messages)
        return (await self.services.count_tokens(messages, self.model)).token_count

    async def texts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as the content of a message (counted at once, one call each)."""
        if self._empty is None:
            return [estimate_tokens(text) + MESSAGE_TOKENS for text in texts]
        empty = self._empty
        counted = await asyncio.gather(
            *(self.services.count_tokens([{"role": "user", "content": f"{COUNT_BASE}\n{t}"}], self.model) for t in texts)
        )
        return [max(1, response.token_count - empty) for response in counted]


# -- the prompt --------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What the prompt is built from: the kept conversation, the counter, and the tokens left for passages."""

    head: list[dict[str, str]]
    counter: TokenCounter
    answer_tokens: int
    budget: int


def _answer_tokens(settings: GatewayConfig, question: DocumentQuestion, context_length: int) -> int:
    answer = question.max_tokens or settings.max_chat_tokens
    if answer >= context_length:
        raise QuestionRefused(
            f"max_tokens ({answer}) passt nicht in den Kontext des Modells ({context_length} Tokens). "
            f"(max_tokens must be below the model's context of {context_length} tokens.)",
            param="max_tokens",
        )
    return answer


async def _plan(services: Services, settings: GatewayConfig, question: DocumentQuestion, model: str) -> _Plan:
    """Count the question and the conversation, drop the oldest turns that do not fit, and size the passage budget.

    QuestionRefused(400) when the question alone (with the answer's tokens) does not fit the model's context."""
    counter = await TokenCounter.open(services, model)
    context = counter.context_length
    answer = _answer_tokens(settings, question, context)
    system = [{"role": "system", "content": question.instructions}] if question.instructions.strip() else []
    last = [{"role": "user", "content": ANSWER_PROMPT.format(context="", question=question.question)}]
    alone = await counter.prompt(system + last)
    if alone + answer + MARGIN_TOKENS > context:
        raise QuestionRefused(
            f"Die Frage ist zu lang: {alone} Tokens, mit der Antwort ({answer}) passen höchstens {context - answer - MARGIN_TOKENS}. "
            f"Kürze sie. (The question takes {alone} tokens; with the answer's {answer} the model's context of {context} "
            "tokens holds no more.)",
            param="messages",
            code="context_length_exceeded",
        )
    turns = list(question.history)
    costs = await counter.texts([turn.content for turn in turns]) if turns else []
    allowance = int((context - alone - answer - MARGIN_TOKENS) * HISTORY_SHARE)
    kept = turns[len(turns) - keep_recent(costs, [turn.role for turn in turns], allowance) :] if turns else []
    head = system + [{"role": turn.role, "content": turn.content} for turn in kept]
    fixed = await counter.prompt(head + last) if kept else alone
    cap = settings.document_question_passage_tokens
    return _Plan(head, counter, answer, passage_budget(context, fixed, answer, cap))


def _numbered(hits: Sequence[Any]) -> dict[tuple[str, int], int]:
    return {(hit.document_id, hit.chunk_index): number for number, hit in enumerate(hits, start=1)}


def _cite(numbers: dict[tuple[str, int], int]) -> Any:
    """How the prompt names a passage: "1: biologie.pdf, S. 2" (the brackets come from build_context)."""

    def cite(hit: Any) -> str:
        where = f"{hit.source}, S. {hit.page}" if hit.page else hit.source
        number = numbers.get((hit.document_id, hit.chunk_index))
        return f"{number}: {where}" if number else where

    return cite


async def _context_text(services: Services, question: DocumentQuestion, chosen: list[Any], plan: _Plan) -> str:
    """The passages as the prompt's context; a counting question's small tables whole, when they still fit the budget."""
    cite = _cite(_numbered(chosen))
    plain = build_context(chosen, cite)
    expanded, whole = await whole_tables(services, question.workspace, question.question, chosen)
    if not whole:
        return plain
    with_tables = build_context(expanded, cite, whole)
    (tokens,) = await plan.counter.texts([with_tables])
    return with_tables if tokens <= plan.budget else plain


async def _fill(services: Services, question: DocumentQuestion, hits: list[Any], plan: _Plan) -> tuple[list[dict[str, str]], list[Passage]]:
    """The prompt with the passages that fit, best first; passages are dropped from the end while the counted prompt is too long."""
    blocks = [f"[{_cite({})(hit)}]\n{hit.text}" for hit in hits]
    costs = await plan.counter.texts(blocks)
    chosen = choose_passages(costs, plan.budget)
    while True:
        picked = [hits[i] for i in chosen]
        context = await _context_text(services, question, picked, plan)
        messages = [*plan.head, {"role": "user", "content": ANSWER_PROMPT.format(context=context, question=question.question)}]
        tokens = await plan.counter.prompt(messages)
        if tokens + plan.answer_tokens + MARGIN_TOKENS <= plan.counter.context_length or not chosen:
            break
        chosen.pop()  # the passages' tokens merged differently where they meet: the last one goes
    if not chosen:
        raise QuestionRefused(
            f"Neben Frage und Gespräch bleibt im Kontext des Modells kein Platz für Auszüge ({plan.budget} Tokens). "
            "Kürze die Frage oder beginne ein neues Gespräch. (No passage fits beside the question and the conversation.)",
            param="messages",
            code="context_length_exceeded",
        )
    passages = [
        Passage(n, h.source, h.page, h.section, h.document_id, h.chunk_index, h.score, h.text, costs[i])
        for n, (i, h) in enumerate(zip(chosen, picked, strict=True), start=1)
    ]
    return messages, passages


# -- the use case ------------------------------------------------------------------------------------------------------


def check_question(question: DocumentQuestion) -> None:
    """A question with no text is refused before anything is counted."""
    if not question.question.strip():
        raise QuestionRefused("Bitte schreib zuerst eine Frage. (The question is empty.)", param="messages")


async def _answer_events(chat: AsyncIterator[Any], first: Any) -> AsyncIterator[AnswerEvent]:
    """The model's events as Piece and Finished, starting with the first one, which was awaited already."""
    event = first
    while event is not None:
        if event.HasField("finish"):
            usage = event.finish.usage
            yield Finished(FINISH_REASONS.get(event.finish.reason, "stop"), usage.prompt_tokens, usage.completion_tokens)
        else:
            yield Piece(event.text)
        event = await anext(chat, None)


class Ask(Protocol):
    """The answer's model call, counted as part of the question's one request (the Gateway's token reservation)."""

    def __call__(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float | None, stop: list[str], seed: int | None
    ) -> AsyncIterator[Any]: ...


async def answer_question(
    services: Services, settings: GatewayConfig, question: DocumentQuestion, model: str, ask: Ask
) -> AsyncGenerator[AnswerEvent, None]:
    """Answer a question about a workspace's documents: ``Cited`` first, then ``Piece`` by piece, then ``Finished``.

    The Gateway checked the workspace, chose the model and counted the request; raises QuestionRefused (400),
    QuotaExceeded, ServiceDown and the services' gRPC errors, all before the first event."""
    plan = await _plan(services, settings, question, model)
    query = retrieval_query(question.question, question.history)
    hits = await services.search(question.workspace, query, top_k=search_depth(plan.budget))
    if not hits:
        yield Cited((), model, query, plan.budget)
        yield Piece(NO_PASSAGES)
        yield Finished("stop", 0, 0)
        return
    messages, passages = await _fill(services, question, hits, plan)
    # the chat is an async generator (typed as the iterator it hands out): closing it cancels the call.
    chat = cast(AsyncGenerator[Any, None], ask(messages, plan.answer_tokens, question.temperature, list(question.stop), question.seed))
    async with contextlib.aclosing(chat):  # a caller that stops listening cancels the model's answer
        first = await anext(chat)  # refusals come here, before anything is yielded
        yield Cited(tuple(passages), model, query, plan.budget)
        async for event in _answer_events(chat, first):
            yield event
