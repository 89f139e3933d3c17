"""Markdown that cannot make a student's browser fetch anything or send a form: answers, documents and file names.

Model answers quote documents a teacher (or anyone with a web address) put
into a class's store, so they carry whatever markup those held. Gradio's own
sanitiser (amuchina, in its frontend) keeps ``<img>``, ``srcset``,
``<video poster>``, SVG ``<image>`` and ``<form>``: a hidden
``![bild](http://host/?q=…)`` made the browser send a question to that host.

``safe_markdown`` renders the Markdown here (markdown-it, CommonMark with GFM
tables and strike-through), then keeps only an allowlist of tags and
attributes of the rendered HTML: text structure, code, tables and links to
http(s)/mailto or the gateway itself; no images, media, SVG, MathML, frames or
forms. The result is one line of HTML whose text has newlines and the
characters that could still make a tag, link, image or code fence written as
character references, so Gradio's Markdown renderer passes it through as one
HTML block and finds nothing left to turn into an image. The
Content-Security-Policy (security_headers) is the second wall.

``plain`` is for names that are shown as text inside Markdown (file names,
web addresses, titles): every character Markdown or HTML would act on is
written as a character reference.
"""

from __future__ import annotations

import functools
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import gradio as gr
from gradio.components.chatbot import TextMessage
from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable(["table", "strikethrough"])

ALLOWED_TAGS = frozenset(
    "p br hr h1 h2 h3 h4 h5 h6 strong em b i u s del ins code pre kbd samp sub sup blockquote "
    "ul ol li dl dt dd table thead tbody tfoot tr th td caption a span div abbr mark small".split()
)
# Dropped with everything inside: what they hold is markup to run, show from elsewhere, or fill in and send.
DROPPED_WITH_CONTENT = frozenset(
    "script style template svg math iframe frame frameset object embed applet form select textarea button "
    "noscript noembed noframes video audio picture canvas map head title xmp plaintext dialog".split()
)
VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr image".split())
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}, "code": {"class"}, "abbr": {"title"}}
LINK_SCHEMES = ("http", "https", "mailto", "")
# Every character Markdown (CommonMark, GFM) acts on: a name is given to markdown-it with these as references.
MARKDOWN_PUNCTUATION = frozenset("\\`*_{}[]()<>#+-.!|~:@&\"'=$")
# In the sanitised HTML's text, the characters that could still make a tag, a link or image, or a fenced block (a
# mermaid diagram) should Gradio's renderer read it as Markdown after all; the rest stays readable for API clients.
SYNTAX_IN_OUTPUT = frozenset("\\`[]<>&\"'~\n\r")


def _reference(text: str, characters: frozenset[str] = SYNTAX_IN_OUTPUT) -> str:
    return "".join(f"&#{ord(char)};" if char in characters else char for char in text)


def plain(text: str) -> str:
    """A name or address shown as exactly these characters inside Markdown: no link, image, emphasis or tag."""
    return _reference(" ".join(str(text).split()), MARKDOWN_PUNCTUATION)


def _safe_href(href: str) -> bool:
    try:
        scheme = urlsplit(href.strip()).scheme.lower()
    except ValueError:
        return False
    return scheme in LINK_SCHEMES and not href.strip().startswith("//")


def _kept_attributes(tag: str, attrs: list[tuple[str, str | None]]) -> list[str]:
    """The attributes of an allowed tag that stay, each written ` name="value"` with its value escaped."""
    kept = []
    for name, value in attrs:
        if name not in ALLOWED_ATTRIBUTES.get(tag, ()) or value is None:
            continue
        if name == "href" and not _safe_href(value):
            continue
        if name == "class" and not value.startswith("language-"):
            continue
        kept.append(f' {name}="{_reference(value)}"')
    return kept


class _Sanitizer(HTMLParser):
    """Keeps the allowlisted tags and attributes of rendered HTML; text is kept (as references), the rest dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []  # allowlisted tags opened and not yet closed, to close them at the end
        self.dropping: list[str] = []  # the stack of dropped elements we are inside

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.dropping:
            if tag in DROPPED_WITH_CONTENT and tag not in VOID_TAGS:
                self.dropping.append(tag)
            return
        if tag in DROPPED_WITH_CONTENT:
            self.dropping.append(tag)
            return
        if tag not in ALLOWED_TAGS:
            if tag == "img":  # an image leaves its description, as a screen reader would
                alt = dict(attrs).get("alt")
                if alt:
                    self.out.append(_reference(f"[{alt}]"))
            return
        kept = _kept_attributes(tag, attrs)
        if tag == "a":
            kept.append(' rel="noopener noreferrer nofollow" target="_blank"')
        self.out.append(f"<{tag}{''.join(kept)}>")
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.dropping:
            return
        self.handle_starttag(tag, attrs)
        if tag in self.open and self.open[-1] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.dropping:
            if tag == self.dropping[-1]:
                self.dropping.pop()
            return
        if tag in self.open:
            while self.open:  # close what was left open inside it too: the output stays well-formed
                inner = self.open.pop()
                self.out.append(f"</{inner}>")
                if inner == tag:
                    break

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(_reference(data))

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{tag}>" for tag in reversed(self.open))


def sanitize_html(markup: str) -> str:
    """Rendered HTML with only the allowlisted tags and attributes, on one line."""
    sanitizer = _Sanitizer()
    sanitizer.feed(markup)
    return sanitizer.result()


CACHED_BLOCK_CHARS = 16_384


@functools.lru_cache(maxsize=4096)
def _rendered_block(block: str) -> str:
    return sanitize_html(_MARKDOWN.render(block))


def _rendered(block: str) -> str:
    # small blocks only: the cache holds a few MiB at most, whatever a whole-document translation streams
    return _rendered_block(block) if len(block) <= CACHED_BLOCK_CHARS else sanitize_html(_MARKDOWN.render(block))


def blocks(text: str) -> list[str]:
    """The text cut after each blank line outside a fenced code block: its Markdown blocks, more or less.

    An answer streams in one token at a time and is shown whole each time; rendering each finished block once
    (cached) and only the last one again keeps that linear instead of quadratic (docs/decisions.md: 0.09 ms a
    token instead of 1.9 ms for a 4,000-character answer). Each block is sanitised on its own, so a cut
    never lets markup through; a list or a reference link across a blank line is only shown as two pieces."""
    found, start, offset, fence = [], 0, 0, ""
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip(" ")
        marker = stripped[:3]
        if len(line) - len(stripped) <= 3 and marker in ("```", "~~~") and (not fence or marker == fence):
            fence = "" if fence else marker
        offset += len(line)
        if not fence and not line.strip() and offset > start:
            found.append(text[start:offset])
            start = offset
    if start < len(text):
        found.append(text[start:])
    return found


def safe_markdown(text: str) -> str:
    """Markdown rendered and sanitised, as one HTML block that Gradio's renderer shows as it is."""
    if not text or not text.strip():
        return ""
    return f'<div class="schulki-markdown">{"".join(_rendered(block) for block in blocks(text))}</div>'


def safe_markdown_box(*args: Any, **kwargs: Any) -> gr.Markdown:
    """A gr.Markdown whose every value (returned or streamed) reaches the browser through safe_markdown.

    The component's postprocess is wrapped on the instance: a subclass would make Gradio write a .pyi stub
    beside this module at import (into a read-only installation too)."""
    box = gr.Markdown(*args, **kwargs)
    original = box.postprocess

    def postprocess(value: Any) -> Any:
        shown = original(value)
        return safe_markdown(shown) if isinstance(shown, str) else shown

    box.postprocess = postprocess  # type: ignore[method-assign]
    if isinstance(box.value, str):
        box.value = safe_markdown(box.value)
    return box


def safe_chatbot(*args: Any, **kwargs: Any) -> gr.Chatbot:
    """A gr.Chatbot whose text messages reach the browser through safe_markdown; the chat itself (a gr.State beside
    it) stays Markdown, so the model and the stored chat never see the HTML."""
    chatbot = gr.Chatbot(*args, **kwargs)
    original = chatbot.postprocess

    def postprocess(value: Any) -> Any:
        shown = original(value)
        for message in shown.root:
            for part in message.content if isinstance(message.content, list) else [message.content]:
                if isinstance(part, TextMessage):
                    part.text = safe_markdown(part.text)
        return shown

    chatbot.postprocess = postprocess  # type: ignore[method-assign]
    return chatbot
