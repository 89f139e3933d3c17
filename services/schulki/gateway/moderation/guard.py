"""Moderation applied to one chat: the user's question before the model is asked, the answer as it streams.

The question: a category whose outcome is ``block`` answers with the fixed text of ``answers.BLOCKED`` and the
model is not asked at all; ``warn`` lets the model answer after a German note; ``notify`` (with any outcome)
writes a flag for the user's teachers and the admins.

The answer: each word is read once, as it completes, together with as many words before it as a term spans and
the last ``PATTERN_CHARS`` characters for the patterns (a phrase may straddle pieces), so the cost per piece stays
the same however long the answer grows. Text is passed on only up to the last complete word, so a blocked word
never reaches the user: on a block the model is
stopped, and the fixed answer follows (the chat tab replaces what it showed; the API's stream ends with
``finish_reason`` ``content_filter``). A request with log-probabilities gets every piece as it comes, since its
token events belong to their pieces: there the cut comes after the piece that completed the match.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from schulki.config import ModerationConfig
from schulki.gateway.accounts.database import Account
from schulki.gateway.moderation.answers import BLOCKED, WARNED
from schulki.gateway.moderation.flags import Flags
from schulki.gateway.moderation.rules import CATEGORIES, PATTERN_CHARS, Hit, Rules, words
from schulki.inference.v1 import inference_service_pb2 as inference_pb


class Classifier(Protocol):
    """A local model that names the categories of a text, beside the rules (none is built: see docs/decisions.md)."""

    def categories(self, text: str) -> list[str]: ...


class Moderation:
    """The school's rules and settings, and the flags; ``guard`` applies them to one chat."""

    def __init__(self, settings: ModerationConfig, flags: Flags, classifier: Classifier | None = None) -> None:
        self.settings = settings
        self.rules = Rules.load(settings.rules_file) if settings.enabled else None
        self.flags = flags
        self.classifier = classifier

    def find(self, text: str, folded: list[str] | None = None) -> list[Hit]:
        """The categories of a text whose outcome is not a silent pass (the rules, then the classifier if any);
        ``folded``: the normalised words to read the terms in, where they are known already."""
        if self.rules is None:
            return []
        hits = self.rules.find(text) if folded is None else self.rules.find_in(folded, text)
        if self.classifier is not None:
            named = {hit.category for hit in hits}
            hits += [Hit(c, "") for c in self.classifier.categories(text) if c in CATEGORIES and c not in named]
        return [hit for hit in hits if self._acts(hit.category)]

    def _acts(self, category: str) -> bool:
        rule = getattr(self.settings, category)
        return rule.outcome != "pass" or rule.notify

    def outcome(self, category: str) -> str:
        return str(getattr(self.settings, category).outcome)

    def with_outcome(self, hits: list[Hit], outcome: str) -> list[str]:
        """The categories of ``hits`` whose outcome is ``outcome`` ("block" or "warn"), in the order found."""
        return [hit.category for hit in hits if self.outcome(hit.category) == outcome]

    async def _notify(self, account: Account, hits: list[Hit], direction: str, text: str) -> None:
        for hit in hits:
            rule = getattr(self.settings, hit.category)
            if rule.notify:
                kept = text if self.settings.store_text else None
                await run_in_threadpool(self.flags.add, account.id, hit.category, rule.outcome, direction, kept)

    async def screen(self, account: Account, text: str) -> str | None:
        """A question that gets no streamed chat answer (an agent's task): the fixed answer where a category blocks
        it, else None; flags are written as for a chat's question, and a warning is only flagged."""
        blocking, _ = await self._judged(account, text, "input")
        return BLOCKED[blocking[0]] if blocking else None

    async def screen_answer(self, account: Account, text: str) -> tuple[str, bool]:
        """An answer that is not streamed (an agent's, written whole): the fixed answer in its place where a category
        blocks it, a warning's German note before it; flags as for a chat's answer. Returns the text and whether it
        was replaced."""
        blocking, warned = await self._judged(account, text, "output")
        if blocking:
            return BLOCKED[blocking[0]], True
        return "\n\n".join([*(WARNED[category] for category in dict.fromkeys(warned)), text]), False

    async def _judged(self, account: Account, text: str, direction: str) -> tuple[list[str], list[str]]:
        """A whole text read by the rules, its flags written: the categories that block it and those that warn."""
        hits = self.find(text)
        await self._notify(account, hits, direction, text)
        return self.with_outcome(hits, "block"), self.with_outcome(hits, "warn")

    def guard(
        self,
        account: Account,
        messages: list[dict[str, str]],
        events: AsyncGenerator[inference_pb.ChatResponse, None],
        whole_words: bool,
        admit: Callable[[], None],
        notes: bool = True,
    ) -> GuardedAnswer:
        """The chat's events with the rules applied; ``events`` is not started when the question is blocked, and
        ``admit`` counts the blocked question as a request instead (a loop of blocked questions meets the per-minute
        limit, not an ever longer flag table). ``whole_words``: hold back the last, unfinished word of the answer
        (False for requests with log-probabilities). ``notes``: False for an answer whose shape the client parses (a
        JSON schema, tool calls), which a German note would break: there a warning is only flagged."""
        return GuardedAnswer(self, account, messages, events, whole_words, admit, notes)


def _text(text: str) -> inference_pb.ChatResponse:
    return inference_pb.ChatResponse(text=text)


def _finish() -> inference_pb.ChatResponse:
    return inference_pb.ChatResponse(finish=inference_pb.ChatFinish(reason=inference_pb.FINISH_REASON_STOP, usage=inference_pb.Usage()))


def _word_end(text: str) -> int:
    """Where the last complete word of a growing text ends (after its last space or punctuation)."""
    for index in range(len(text) - 1, -1, -1):
        if not text[index].isalnum():
            return index + 1
    return 0


class GuardedAnswer:
    """One chat's events under moderation; ``filtered`` turns True when a fixed answer replaced the model's."""

    def __init__(
        self,
        moderation: Moderation,
        account: Account,
        messages: list[dict[str, str]],
        events: AsyncGenerator[inference_pb.ChatResponse, None],
        whole_words: bool,
        admit: Callable[[], None],
        notes: bool = True,
    ) -> None:
        self._moderation, self._account, self._messages, self._events = moderation, account, messages, events
        self._whole_words, self._admit, self._notes = whole_words, admit, notes
        self.filtered = False
        self._said = "", 0  # the answer's text so far and how much of it went out

    async def events(self) -> AsyncGenerator[inference_pb.ChatResponse, None]:
        moderation = self._moderation
        if moderation.rules is None:
            async for event in self._events:
                yield event
            return
        last = self._messages[-1] if self._messages else {}
        question = str(last.get("content") or "") if last.get("role") == "user" else ""
        hits = moderation.find(question) if question else []
        blocking = moderation.with_outcome(hits, "block")
        if blocking:
            await self._events.aclose()  # never started: the model is not asked, no tokens are reserved
            self._admit()  # QuotaExceeded (429) for one request too many, before a flag is written
            await moderation._notify(self._account, hits, "input", question)
            self.filtered = True
            yield _text(BLOCKED[blocking[0]])
            yield _finish()
            return
        await moderation._notify(self._account, hits, "input", question)
        warned = moderation.with_outcome(hits, "warn")
        if warned and self._notes:
            yield _text("\n\n".join(WARNED[category] for category in warned) + "\n\n")
        try:
            async for event in self._answer(set(warned)):
                yield event
        except Exception:
            # the answer broke off (a node lost mid-answer): the word held back goes out too, once it passes the
            # rules, so the user sees all the model wrote before the break; then the error
            rest = self._rest_at_break()
            if rest:
                yield _text(rest)
            raise

    def _rest_at_break(self) -> str:
        """The text of the answer not yet passed on (the word being written), if no blocking rule matches it."""
        text, sent = self._said
        rest = text[sent:]
        hits = self._moderation.find(text[-PATTERN_CHARS - len(rest) :]) if rest else []
        return "" if self._moderation.with_outcome(hits, "block") else rest

    async def _answer(self, noted: set[str]) -> AsyncIterator[inference_pb.ChatResponse]:
        moderation, rules = self._moderation, self._moderation.rules
        assert rules is not None
        text, sent, scanned, flagged, later = "", 0, 0, set[str](), set[str]()
        folded: list[str] = []  # the normalised words of the answer up to ``scanned``, each normalised once
        try:
            async for event in self._events:
                if event.WhichOneof("event") not in ("text", "finish"):  # a token's log-probability, a whole tool call
                    yield event
                    continue
                finished = event.HasField("finish")
                if not finished:
                    text += event.text
                end = len(text) if finished else _word_end(text)  # read at word ends, whatever is passed on when
                if end > scanned:
                    # only the new words, with as many before them as a term spans, and the last characters for the
                    # patterns: the same small cost per piece however long the answer grows
                    new = words(text[scanned:end])
                    folded += new
                    recent = folded[-(rules.longest_words + len(new)) :]
                    window = text[text.rfind(" ", 0, max(0, end - PATTERN_CHARS)) + 1 : end]
                    hits = [hit for hit in moderation.find(window, recent) if hit.category not in flagged]
                    scanned = end
                    flagged.update(hit.category for hit in hits)
                    await moderation._notify(self._account, hits, "output", text)
                    blocking = moderation.with_outcome(hits, "block")
                    if blocking:
                        self.filtered = True
                        yield _text(("\n\n" if sent else "") + BLOCKED[blocking[0]])
                        yield _finish()
                        return  # the finally below stops the model
                    later.update(category for category in moderation.with_outcome(hits, "warn") if category not in noted)
                if finished:
                    if sent < len(text):
                        yield _text(text[sent:])
                    if later and self._notes:  # the notes for what the answer itself touched, after it
                        yield _text("\n\n" + "\n\n".join(WARNED[c] for c in CATEGORIES if c in later))
                    yield event
                elif not self._whole_words:
                    sent = len(text)
                    yield event
                elif end > sent:
                    yield _text(text[sent:end])
                    sent = end
                self._said = text, sent
        finally:
            await self._events.aclose()
