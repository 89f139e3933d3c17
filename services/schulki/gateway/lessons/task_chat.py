"""A student's answer inside a task: the task's instructions as system prompt, its documents as context, its budget.

The Gateway (``Gateway.task_chat``) hands in what it alone holds: the
request count against the student's rate, the search in the task's
workspace and the inference call. Here the task is checked (the student
takes part, it is open), the prompt is built, the task's budget reserved,
and the answer streamed under the running-answers registry, so that the
teacher's stop or the task's end ends it within a second; the student's
conversation is stored with what the answer really used, also when it was
cut off.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from schulki.gateway.accounts.database import Account
from schulki.gateway.accounts.quotas import estimate_prompt_tokens
from schulki.gateway.lessons.running import AnswerStopped
from schulki.gateway.lessons.tasks import Lessons, TaskRefused, TaskView
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

MAX_MESSAGE_CHARS = 4000
ENDED_NOTES = {
    "paused": "⏸️ *Die Lehrkraft hat die Aufgabe pausiert; die Antwort wurde hier beendet.*",
    "closed": "⏹️ *Die Aufgabe ist zu Ende; die Antwort wurde hier beendet.*",
    "not_yet": "⏹️ *Die Aufgabe ist noch nicht offen.*",
}
"""What a cut-off answer ends with, by the reason it was cut off."""

Search = Callable[[str, str, int], Awaitable[list[retrieval_pb.Hit]]]
Chat = Callable[[list[dict[str, str]], int, str], AsyncIterator[inference_pb.ChatResponse]]


@dataclass
class TaskTurn:
    """The student's conversation so far, as it grows while the answer streams; ``ended`` names why it was cut off."""

    messages: list[dict[str, str]]
    sources: list[str] = field(default_factory=list)
    ended: str | None = None


def refusal(lessons: Lessons, view: TaskView, reason: str) -> TaskRefused:
    """The German answer to a request in a task that is not open now."""
    if reason == "paused":
        return TaskRefused(
            423, "Diese Aufgabe ist pausiert. Deine Lehrkraft kann sie wieder freigeben. (This task is paused.)", "task_paused"
        )
    if reason == "not_yet":
        when = lessons.show_time(view.starts_at)
        return TaskRefused(403, f"Diese Aufgabe beginnt erst am {when}. (This task has not started yet.)", "task_not_started")
    when = lessons.show_time(view.ends_at)
    return TaskRefused(403, f"Diese Aufgabe ist geschlossen: sie endete am {when}. (This task is closed.)", "task_closed")


def _system_prompt(view: TaskView, hits: list[retrieval_pb.Hit]) -> str:
    parts = [view.instructions or "Du bist ein hilfsbereiter Assistent für Schülerinnen und Schüler. Antworte auf Deutsch."]
    if hits:
        parts.append("Material aus den Dokumenten der Aufgabe:")
        parts.extend(f"[{hit.source}{', S. ' + str(hit.page) if hit.page else ''}] {hit.text}" for hit in hits)
    return "\n\n".join(parts)


async def task_answer(
    lessons: Lessons,
    account: Account,
    task_id: object,
    message: object,
    max_tokens: int,
    admit: Callable[[], None],
    search: Search,
    chat: Chat,
) -> AsyncGenerator[TaskTurn, None]:
    """Check the task and the message, count the request, and stream the answer as the growing conversation."""
    view = await run_in_threadpool(lessons.taking_part, account, task_id)
    classes = frozenset(account.classes) | frozenset(view.classes)
    reason = await run_in_threadpool(lessons.closed_reason, view.id, frozenset(account.classes))
    if reason:
        raise refusal(lessons, view, reason)
    text = message.strip() if isinstance(message, str) else ""
    if not text:
        raise TaskRefused(400, "Bitte schreibe zuerst eine Nachricht. (Write a message first.)", "empty_message")
    if len(text) > MAX_MESSAGE_CHARS:
        raise TaskRefused(400, f"Die Nachricht ist zu lang: höchstens {MAX_MESSAGE_CHARS} Zeichen.", "message_too_long")
    await run_in_threadpool(admit)
    history = await run_in_threadpool(lessons.conversation, account, view.id)
    hits = await search(view.workspace, text, lessons.config.context_passages) if view.workspace and lessons.config.context_passages else []
    prompt = [{"role": "system", "content": _system_prompt(view, hits)}, *history, {"role": "user", "content": text}]
    prompt_tokens = estimate_prompt_tokens(prompt)
    granted = await run_in_threadpool(lessons.reserve, view.id, prompt_tokens, max_tokens)
    if granted is None:
        raise TaskRefused(429, "Das Token-Budget dieser Aufgabe ist aufgebraucht. Sag deiner Lehrkraft Bescheid.", "task_budget_spent")
    turn = TaskTurn([*history, {"role": "user", "content": text}, {"role": "assistant", "content": ""}])
    turn.sources = list(dict.fromkeys(hit.source for hit in hits))
    reserved, used, streamed = prompt_tokens + granted, None, False

    def still_open() -> str | None:
        return lessons.closed_reason(view.id, frozenset(account.classes))

    answer = turn.messages[-1]
    try:
        yield turn
        try:
            async for event in lessons.running.watched(chat(prompt, granted, view.model), view.id, classes, still_open):
                if event.HasField("finish"):
                    used = event.finish.usage.total_tokens
                else:
                    streamed = True
                    answer["content"] += event.text
                    yield turn
        except AnswerStopped as stopped:
            turn.ended = stopped.reason
            answer["content"] = (answer["content"].rstrip() + "\n\n" + ENDED_NOTES.get(stopped.reason, ENDED_NOTES["closed"])).strip()
        if turn.sources:
            answer["content"] += "\n\n*Quellen: " + ", ".join(turn.sources) + "*"
        yield turn
    finally:
        # a cut-off answer keeps its reservation once text went out (as the chat quota does); one that never began costs nothing
        spent = used if used is not None else (reserved if streamed else 0)
        lessons.settle(view.id, account.id, reserved, spent, turn.messages if streamed or turn.ended else None)
