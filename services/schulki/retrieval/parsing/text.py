"""Plain text, Markdown and reStructuredText: paragraphs, and for the latter two their headings as sections."""

from __future__ import annotations

import re
from pathlib import Path

from schulki.retrieval.documents import ParsedDocument, Passage
from schulki.retrieval.parsing.common import ParseJob, Progress, charge, clean, read_text

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])( *\1){2,} *$")
_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:._])\1{2,}\s*$")


def parse_plain(path: Path, job: ParseJob) -> ParsedDocument:
    """Paragraphs of a plain text file."""
    return parse_text(path, markdown=False, progress=job.progress)


def parse_markdown(path: Path, job: ParseJob) -> ParsedDocument:
    """Paragraphs of a Markdown file under its headings."""
    return parse_text(path, markdown=True, progress=job.progress)


def parse_rst(path: Path, job: ParseJob) -> ParsedDocument:
    """Paragraphs of a reStructuredText file; an underlined line (======, ------, ~~~~~~ ...) starts a section."""
    text = read_text(path)
    charge(len(text))
    passages: list[Passage] = []
    section = ""
    lines: list[str] = []
    for line in text.split("\n"):
        if _RST_ADORNMENT.match(line):
            if lines and lines[-1].strip():
                title = lines.pop()
                passages.extend(Passage(text=p, section=section) for p in _paragraphs("\n".join(lines)))
                lines.clear()
                section = clean(title)
            continue  # an overline or a transition is not text
        lines.append(line)
    passages.extend(Passage(text=p, section=section) for p in _paragraphs("\n".join(lines)))
    job.progress(1, 1)
    return ParsedDocument(format="rst", passages=passages, title=next((p.section for p in passages if p.section), ""))


def parse_text(path: Path, *, markdown: bool, progress: Progress) -> ParsedDocument:
    """Paragraphs of a text file; in Markdown, "# Heading" and underlined headings start sections."""
    text = read_text(path)
    charge(len(text))  # one huge line is stopped here, before it is split and cleaned
    passages = _markdown_passages(text) if markdown else [Passage(text=p) for p in _paragraphs(text)]
    progress(1, 1)
    title = next((p.section for p in passages if p.section), "") if markdown else ""
    return ParsedDocument(format="md" if markdown else "txt", passages=passages, title=title)


def _paragraphs(text: str) -> list[str]:
    return [c for c in (clean(p) for p in re.split(r"\n\s*\n", text)) if c]


def _markdown_passages(text: str) -> list[Passage]:
    passages: list[Passage] = []
    section = ""
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        passages.extend(Passage(text=p, section=section) for p in _paragraphs("\n".join(lines)))
        lines.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue  # the fence markers are not text
        if not in_fence:
            heading = _ATX_HEADING.match(line)
            if heading:
                flush()
                section = clean(heading.group(2))
                continue
            if _SETEXT_UNDERLINE.match(line) and lines and lines[-1].strip():
                title = lines.pop()
                flush()
                section = clean(title)
                continue
            if _THEMATIC_BREAK.match(line):
                lines.append("")  # a rule between paragraphs, not text
                continue
        lines.append(line)
    flush()
    return passages
