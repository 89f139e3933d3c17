"""Work on a whole stored document: summarize it (map-reduce) or translate it, part by part, through the gateway's chat.

Both are async generators of events: ``Progress`` ("Teil 3 von 12"), ``Text``
(the result so far) and finally ``Done``. They run through a ``DocumentSession``
that ``Gateway.summarize_document`` and ``Gateway.translate_document`` give them:
every call to the model goes through the gateway's chat (token reservation,
daily quota, fair queue, model routing); the whole job counts as one request
against the per-minute limit (``begin``) and its tokens against the daily
quota, like a chat. Closing the generator (the UI's
Stop button, a client that disconnects from the API) cancels the running call
and no further part is sent to the model.

The base demo model seldom keeps the page references it is asked to keep, so
the gateway adds them itself where the model's text lacks them: each part's
summary ends with its pages, and a final summary without any page reference
is followed by the part summaries with their pages.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from schulki.config import GatewayConfig
from schulki.gateway.documents.parts import (
    Part,
    estimate_tokens,
    group_into_parts,
    page_reference,
    part_budget,
    remove_overlap,
)
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

LENGTHS: dict[str, tuple[str, str, int]] = {
    "paragraph": ("ein Absatz", "Schreibe einen einzigen Absatz.", 1),
    "page": ("eine Seite", "Schreibe etwa eine Seite in mehreren Absätzen.", 3),
    "lesson": ("Stichpunkte für den Unterricht", "Schreibe Stichpunkte (mit „- “), die eine Lehrkraft im Unterricht nutzen kann.", 2),
}
"""Summary lengths: key → (German label, instruction, how many times document_summary_tokens the final summary may use)."""
LANGUAGES: dict[str, tuple[str, str]] = {
    "de": ("Deutsch", "Deutsche"),
    "en": ("English", "Englische"),
    "fr": ("Français", "Französische"),
    "it": ("Italiano", "Italienische"),
    "es": ("Español", "Spanische"),
    "tr": ("Türkçe", "Türkische"),
    "uk": ("Українська", "Ukrainische"),
    "ar": ("العربية", "Arabische"),
    "pl": ("Polski", "Polnische"),
}
"""Translation targets: ISO code → (the language's own name, German name after "ins")."""
PAGE_REFERENCE = re.compile(r"\s?\(?\bS\.\s*(\d+)(?:\s*[–-]\s*(\d+))?\)?")
"""A page reference such as "(S. 3–5)" or "S. 3" in a model's text."""
MAP_PROMPT = (
    "Fasse den folgenden Teil eines Dokuments ({pages}) auf Deutsch in wenigen Sätzen zusammen. "
    "Die Marken [S. n] zeigen, auf welcher Seite der Text steht: nenne bei jedem Punkt die Seiten in der Form (S. 3–5)."
)
REDUCE_PROMPT = (
    "Hier sind Zusammenfassungen von Teilen eines Dokuments, jede mit ihren Seiten. Fasse sie auf Deutsch zusammen. {length} "
    "Nenne bei jedem Punkt die Seiten, aus denen er stammt, in der Form (S. 3–5)."
)
TRANSLATE_PROMPT = (
    "Du bist ein Übersetzer. Übersetze den folgenden Text ins {language}. "
    "Behalte die Absätze bei (eine Leerzeile zwischen zwei Absätzen).{heading} Gib nur die Übersetzung aus."
)
HEADING_HINT = " Die erste Zeile ist eine Überschrift: gib ihre Übersetzung als erste Zeile aus."


class DocumentRefused(Exception):
    """A request about a document that cannot be served: ``status`` is the HTTP status (400, 404), the message German with English."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Progress:
    """Work on part ``part`` of ``parts`` has begun; ``stage``: "summary", "combine" (part summaries merged) or "translation"."""

    part: int
    parts: int
    stage: str

    def message(self, lang: str = "de") -> str:
        if self.stage == "combine":
            return f"Zusammenführen {self.part} von {self.parts}" if lang == "de" else f"Combining {self.part} of {self.parts}"
        return f"Teil {self.part} von {self.parts}" if lang == "de" else f"Part {self.part} of {self.parts}"


@dataclass
class Text:
    """The result so far (Markdown)."""

    text: str


@dataclass
class Block:
    """A heading or a paragraph of a translated document."""

    kind: str  # "heading" or "paragraph"
    text: str


@dataclass
class Done:
    """The finished result: its Markdown text, and for a translation its headings and paragraphs."""

    text: str
    source: str
    parts: int
    blocks: list[Block] = field(default_factory=list)


Event = Progress | Text | Done


class DocumentSession(Protocol):
    """What whole-document work may use of the gateway, for one user (``context._DocumentSession``), in a workspace the
    Gateway checked the user may read."""

    settings: GatewayConfig

    def resolve_model(self, model: str | None) -> str: ...

    def model_context(self, model: str) -> int: ...

    async def export_document(self, workspace: str, document_id: str) -> retrieval_pb.ExportDocumentResponse: ...

    def begin(self) -> None:
        """The job starts: one request against the user's per-minute limit."""

    def ask(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float, model: str
    ) -> AsyncIterator[inference_pb.ChatResponse]: ...


@dataclass
class _Loaded:
    source: str
    parts: list[Part]
    model: str
    context: int


async def _load(
    session: DocumentSession, workspace: str, document_id: str, model: str | None, answer_tokens: int, answer_per_input: float
) -> _Loaded:
    """The document as parts for ``model``; DocumentRefused for a document without text."""
    if not isinstance(document_id, str) or not document_id:
        raise DocumentRefused(400, "Bitte wähle ein Dokument. (document_id is required.)")
    chosen = session.resolve_model(model)
    context = session.model_context(chosen)
    exported = await session.export_document(workspace, document_id)
    budget = session.settings.document_part_tokens or part_budget(context, answer_tokens, answer_per_input)
    try:
        parts = group_into_parts(remove_overlap(exported.chunks), budget)
    except ValueError:
        raise DocumentRefused(
            400, f"Der Kontext des Modells ({context} Tokens) ist für diese Aufgabe zu klein. (The model's context is too small.)"
        ) from None
    if not parts:
        raise DocumentRefused(400, "Das Dokument enthält keinen Text. (The document has no text.)")
    return _Loaded(exported.document.source, parts, chosen, context)


async def _ask(session: DocumentSession, model: str, instruction: str, text: str, max_tokens: int, context: int) -> AsyncIterator[str]:
    """The model's answer so far, piece by piece; max_tokens is lowered where the prompt leaves less room."""
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": text}]
    room = context - estimate_tokens(instruction + text) - 32
    answer = ""
    async for event in session.ask(messages, max(1, min(max_tokens, room)), 0.2, model):
        if not event.HasField("finish"):
            answer += event.text
            yield answer


async def _answer(session: DocumentSession, model: str, instruction: str, text: str, max_tokens: int, context: int) -> str:
    answer = ""
    async for answer_so_far in _ask(session, model, instruction, text, max_tokens, context):
        answer = answer_so_far
    return answer.strip()


def _real_pages(text: str, first: int, last: int) -> str:
    """The text without the page references that name a page outside first..last (a small model invents pages)."""

    def keep(match: re.Match) -> str:
        numbers = [int(n) for n in match.groups() if n]
        return match.group(0) if all(first <= n <= last for n in numbers) else ""

    return PAGE_REFERENCE.sub(keep, text) if first else text


def _with_pages(text: str, first: int, last: int) -> str:
    """The text with its page reference at the end, unless it names a page of first..last already; invented pages removed."""
    reference = page_reference(first, last)
    text = _real_pages(text, first, last).strip()
    if not reference or PAGE_REFERENCE.search(text):
        return text
    return f"{text} ({reference})" if text else f"({reference})"


async def summarize_document(
    session: DocumentSession, workspace: str, document_id: str, length: str = "paragraph", model: str | None = None
) -> AsyncGenerator[Event, None]:
    """Summarize a whole document: each part with its pages, then the part summaries combined (in rounds while they do not fit).

    ``length``: "paragraph" (ein Absatz), "page" (eine Seite) or "lesson" (Stichpunkte für den Unterricht).
    Raises DocumentRefused (404 for a workspace the account may not read, 400 for a bad length), QuotaExceeded,
    ServiceDown, and grpc errors of the services (NOT_FOUND for an unknown document).
    """
    if length not in LENGTHS:
        raise DocumentRefused(400, f"Unbekannte Länge „{length}“; erlaubt: {', '.join(LENGTHS)}. (Unknown length.)")
    _label, length_instruction, factor = LENGTHS[length]
    part_tokens = session.settings.document_summary_tokens
    final_tokens = part_tokens * factor
    loaded = await _load(session, workspace, document_id, model, max(part_tokens, final_tokens), 0.0)
    session.begin()  # the whole job is one request; its tokens count like a chat's
    parts = loaded.parts
    budget = session.settings.document_part_tokens or part_budget(loaded.context, final_tokens)
    summaries: list[tuple[str, int, int]] = []  # (text with pages, first page, last page)
    if len(parts) == 1:
        source = parts[0].marked_text()
        instruction = f"{MAP_PROMPT.format(pages=parts[0].pages() or 'ganzes Dokument')} {length_instruction}"
        summaries = [("", parts[0].first_page, parts[0].last_page)]
        yield Progress(1, 1, "summary")
    else:
        for part in parts:
            yield Progress(part.index + 1, len(parts), "summary")
            prompt = MAP_PROMPT.format(pages=part.pages() or "ohne Seiten")
            text = await _answer(session, loaded.model, prompt, part.marked_text(), part_tokens, loaded.context)
            summaries.append((_with_pages(text, part.first_page, part.last_page), part.first_page, part.last_page))
        # part summaries that do not fit into one prompt are combined in groups of neighbours, in rounds
        while len(summaries) > 1 and sum(estimate_tokens(text) + 2 for text, _f, _l in summaries) > budget:
            groups = _groups(summaries, budget)
            if len(groups) >= len(summaries):
                break
            combined = []
            for number, group in enumerate(groups, start=1):
                yield Progress(number, len(groups), "combine")
                first = min((f for _t, f, _l in group if f), default=0)
                last = max((la for _t, _f, la in group), default=0)
                joined = "\n\n".join(t for t, _f, _l in group)
                prompt = REDUCE_PROMPT.format(length="Schreibe wenige Sätze.")
                text = joined if len(group) == 1 else await _answer(session, loaded.model, prompt, joined, part_tokens, loaded.context)
                combined.append((_with_pages(text, first, last), first, last))
            summaries = combined
        source = "\n\n".join(text for text, _first, _last in summaries)
        instruction = REDUCE_PROMPT.format(length=length_instruction)
    final = ""
    async for final in _ask(session, loaded.model, instruction, source, final_tokens, loaded.context):
        yield Text(final)
    first = min((f for _t, f, _l in summaries if f), default=0)
    final = _real_pages(final, first, max((la for _t, _f, la in summaries), default=0)).strip()
    if first and not PAGE_REFERENCE.search(final):
        if len(summaries) == 1:
            final = _with_pages(final, summaries[0][1], summaries[0][2])
        else:
            final += "\n\n**Aus den einzelnen Teilen:**\n" + "\n".join(f"- {text}" for text, _f, _l in summaries)
    yield Text(final)
    yield Done(final, loaded.source, len(parts))


def _groups(summaries: list[tuple[str, int, int]], budget: int) -> list[list[tuple[str, int, int]]]:
    """Neighbouring summaries in groups that fit into ``budget`` tokens (at least two to a group, so every round shrinks the list)."""
    groups: list[list[tuple[str, int, int]]] = [[]]
    used = 0
    for item in summaries:
        cost = estimate_tokens(item[0]) + 2
        if len(groups[-1]) >= 2 and used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += cost
    return groups


def _parse_translation(answer: str, heading: str | None) -> list[Block]:
    """Headings and paragraphs of a translated segment; ``heading``: the source heading when the segment starts a section."""
    lines = [line.rstrip() for line in answer.strip().split("\n")]
    blocks: list[Block] = []
    if heading is not None:
        filled = [line for line in lines if line.strip()]
        if len(filled) >= 2:  # the model kept the heading as its first line
            first = lines.index(filled[0])
            blocks.append(Block("heading", filled[0].lstrip("#").strip() or heading))
            lines = lines[first + 1 :]
        else:
            blocks.append(Block("heading", heading))
    for raw in re.split(r"\n\s*\n", "\n".join(lines)):
        paragraph = raw.strip()
        if paragraph.startswith("#"):
            blocks.append(Block("heading", paragraph.lstrip("#").strip()))
        elif paragraph:
            blocks.append(Block("paragraph", paragraph))
    return blocks


def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(f"## {b.text}" if b.kind == "heading" else b.text for b in blocks)


async def translate_document(
    session: DocumentSession, workspace: str, document_id: str, language: str, model: str | None = None
) -> AsyncGenerator[Event, None]:
    """Translate a whole document into ``language`` (a key of LANGUAGES), part by part, keeping headings and paragraphs.

    Each part is sent section by section, a section's heading as its first line. Raises as summarize_document;
    DocumentRefused(400) for a language that is not offered.
    """
    if language not in LANGUAGES:
        raise DocumentRefused(
            400, f"Unbekannte Sprache „{language}“; erlaubt: {', '.join(LANGUAGES)}. (Unknown language; allowed: {', '.join(LANGUAGES)}.)"
        )
    cap = session.settings.document_translation_tokens
    loaded = await _load(session, workspace, document_id, model, 32, 1.5)
    session.begin()
    target = LANGUAGES[language][1]
    blocks: list[Block] = []
    section = ""
    for part in loaded.parts:
        yield Progress(part.index + 1, len(loaded.parts), "translation")
        for segment_section, text in part.segments():
            heading = segment_section if segment_section and segment_section != section else None
            section = segment_section
            source = f"{heading}\n\n{text}" if heading else text
            instruction = TRANSLATE_PROMPT.format(language=target, heading=HEADING_HINT if heading else "")
            tokens = cap or int(estimate_tokens(source) * 1.5) + 32
            answer = await _answer(session, loaded.model, instruction, source, tokens, loaded.context)
            blocks += _parse_translation(answer, heading)
            yield Text(to_markdown(blocks))
    markdown = to_markdown(blocks)
    yield Done(markdown, loaded.source, len(loaded.parts), blocks)
