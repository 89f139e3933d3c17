"""Mail: one EML file, or every mail of an MBOX mailbox, each with subject, sender and date."""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, cast

from schulki.retrieval.documents import ParsedDocument, Passage
from schulki.retrieval.parsing.common import ParseJob, clean, decode_text
from schulki.retrieval.parsing.web import html_to_text
from schulki.runtime.errors import InvalidInput

NO_SUBJECT = "(ohne Betreff)"


def parse_eml(path: Path, job: ParseJob) -> ParsedDocument:
    """One mail; its subject is the section and the title."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    passage = mail_passage(message)
    if passage is None:
        raise InvalidInput("Die E-Mail enthält keinen Text. (mail without text)")
    job.progress(1, 1)
    return ParsedDocument(format="eml", passages=[passage], title=passage.section)


def _read_mail(file: IO[bytes]) -> EmailMessage:
    return email.message_from_binary_file(file, policy=email.policy.default)


def parse_mbox(path: Path, job: ParseJob) -> ParsedDocument:
    """Every mail of a mailbox in order; each mail's subject is its section."""
    # typeshed types mbox's factory as making mboxMessage only; _read_mail makes the EmailMessage mail_passage reads.
    box = mailbox.mbox(str(path), factory=_read_mail, create=False)  # type: ignore[arg-type]
    try:
        keys = box.keys()
        passages = []
        for done, key in enumerate(keys, start=1):
            passage = mail_passage(cast(EmailMessage, box[key]))
            if passage is not None:
                passages.append(passage)
            job.progress(done, len(keys))
    finally:
        box.close()
    return ParsedDocument(format="mbox", passages=passages, title=path.stem)


def mail_passage(message: EmailMessage) -> Passage | None:
    """A mail as text: "Betreff / Von / Datum" lines, then its body; None when it has no body text."""
    subject = _header(message, "Subject") or NO_SUBJECT
    sender = _header(message, "From")
    date = _header(message, "Date")
    with contextlib.suppress(TypeError, ValueError, IndexError):  # a date it cannot read is kept as written
        date = parsedate_to_datetime(date).strftime("%d.%m.%Y %H:%M") if date else ""
    body = clean(_body(message))
    if not body and subject == NO_SUBJECT:
        return None
    head = [f"Betreff: {subject}", f"Von: {sender}" if sender else "", f"Datum: {date}" if date else ""]
    text = "\n".join(h for h in head if h) + ("\n\n" + body if body else "")
    return Passage(text=text, section=subject)


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError, AttributeError):  # a header too malformed to parse
        return ""
    return clean(str(value or "")).replace("\n", " ")


def _body(message: EmailMessage) -> str:
    """The plain text body, else the HTML body as text; attachments are left out."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except (KeyError, AttributeError):
        part = None
    if part is None:
        if message.is_multipart():
            return ""
        part = message
    try:
        content = part.get_content()
    except (LookupError, ValueError, AttributeError, KeyError):
        payload = part.get_payload(decode=True) or b""
        content = decode_text(payload) if isinstance(payload, bytes) else str(payload)
    if isinstance(content, bytes):
        content = decode_text(content)
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        return html_to_text(content)
    return content.replace("\r\n", "\n")
