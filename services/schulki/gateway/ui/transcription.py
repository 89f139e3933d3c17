"""The Transkription tab: upload or record, segments appear as they are recognised, language shown, txt/srt/vtt download."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.nodes.clients import file_chunks
from schulki.gateway.ui.common import account_of, discard_upload, handles_errors, status_banner
from schulki.gateway.web.i18n import Strings
from schulki.transcription.export import to_srt, to_txt, to_vtt

LANGUAGES = [
    ("Deutsch", "de"),
    ("English", "en"),
    ("Français", "fr"),
    ("Italiano", "it"),
    ("Español", "es"),
    ("Türkçe", "tr"),
    ("Українська", "uk"),
    ("العربية", "ar"),
    ("Polski", "pl"),
    ("Русский", "ru"),
]
LANGUAGE_NAMES = dict((code, name) for name, code in LANGUAGES)


def timestamp(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:02d}:{rest:02d}"


def build_transcription_tab(gateway: Gateway, s: Strings, timer: gr.Timer, demo: gr.Blocks) -> None:
    status_banner(gateway, s, ("transcription",), timer, demo, "transcription_status")
    with gr.Row():
        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label=s["recording"], elem_id="recording", buttons=["download"])
        with gr.Column():
            language = gr.Dropdown([(s["auto_detect"], ""), *LANGUAGES], value="", label=s["language"], elem_id="transcription-language")
            run = gr.Button(s["transcribe"], variant="primary", elem_id="transcribe")
            detected = gr.Markdown(elem_id="detected-language")
    text = gr.Textbox(label=s["segments"], lines=12, interactive=False, elem_id="transcript")
    with gr.Row():
        txt = gr.DownloadButton(s["download_txt"], visible=False, elem_id="download-txt")
        srt = gr.DownloadButton(s["download_srt"], visible=False, elem_id="download-srt")
        vtt = gr.DownloadButton(s["download_vtt"], visible=False, elem_id="download-vtt")

    @handles_errors(s)
    async def transcribe(path: str | None, chosen: str, request: gr.Request) -> AsyncIterator[tuple[object, ...]]:
        hidden = gr.DownloadButton(visible=False)
        segments, lines, shown_language = [], [], ""
        try:  # the recording is not kept, also when it is refused: only the transcript, in the user's own folder
            account = account_of(gateway, request, s)
            if not path:
                raise gr.Error(s["no_recording"])
            async for event in gateway.transcribe(account, file_chunks(Path(path)), Path(path).name, chosen or ""):
                kind = event.WhichOneof("event")
                if kind == "language":
                    info = event.language
                    shown_language = s["detected_language"].format(
                        language=LANGUAGE_NAMES.get(info.language, info.language), probability=info.probability
                    )
                elif kind == "segment":
                    segments.append(event.segment)
                    lines.append(f"[{timestamp(event.segment.start)}] {event.segment.text.strip()}")
                elif kind == "summary" and event.summary.empty_reason:
                    lines.append(event.summary.empty_reason)
                else:
                    continue
                yield "\n".join(lines), shown_language, hidden, hidden, hidden
        finally:
            discard_upload(path)
        folder = gateway.user_files(account) / uuid.uuid4().hex
        folder.mkdir()
        files = []
        for button, suffix, export in ((txt, "txt", to_txt), (srt, "srt", to_srt), (vtt, "vtt", to_vtt)):
            target = folder / f"transkript.{suffix}"
            target.write_text(export(segments), encoding="utf-8")
            # Gradio serves its cached copy to anyone who knows the path; the gateway serves it only to this user
            cached = await button.async_move_resource_to_block_cache(str(target))
            assert cached is not None, "Gradio returns the cached path of the file it was given"
            gateway.file_owners.add(cached, account.id)
            files.append(gr.DownloadButton(value=cached, visible=True))
        yield "\n".join(lines), shown_language, *files

    run.click(transcribe, [audio, language], [text, detected, txt, srt, vtt], api_name="transcribe")
