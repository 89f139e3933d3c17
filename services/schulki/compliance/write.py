"""Write the compliance pack: each document as Markdown and as PDF, into one folder."""

from __future__ import annotations

from pathlib import Path

from schulki.compliance.documents import DOCUMENTS
from schulki.compliance.facts import gather
from schulki.compliance.pdf import write_pdf
from schulki.config import Config


def write_pack(config: Config, folder: Path) -> list[Path]:
    """The documents of the live settings in ``folder`` (created if missing); the paths written, .md before .pdf."""
    folder.mkdir(parents=True, exist_ok=True)
    facts = gather(config)
    written = []
    for name, (title, build) in DOCUMENTS.items():
        markdown = build(facts)
        target = folder / f"{name}.md"
        target.write_text(markdown, encoding="utf-8")
        written += [target, write_pdf(markdown, title, folder / f"{name}.pdf")]
    return written
