"""The one table of document formats: the parser and the upload field both follow it."""

from __future__ import annotations

import importlib
import inspect

import pytest
from schulki.retrieval.formats import BY_EXTENSION, EXTENSIONS, FORMATS
from schulki.retrieval.parsing import SUPPORTED_EXTENSIONS, format_of, parse_file
from schulki.runtime.errors import InvalidInput


@pytest.mark.parametrize("file_format", FORMATS, ids=lambda f: f.name)
def test_every_format_names_a_parser_that_takes_a_path_and_a_job(file_format):
    module, function = file_format.parser.split(":")
    parser = getattr(importlib.import_module(f"schulki.retrieval.parsing.{module}"), function)
    assert list(inspect.signature(parser).parameters) == ["path", "job"]
    assert file_format.content in ("pdf", "zip", "text")
    assert bool(file_format.zip_member) == (file_format.content == "zip")
    assert all(e.startswith(".") and e == e.lower() for e in file_format.extensions)


def test_the_upload_field_offers_exactly_what_ingest_accepts():
    from schulki.gateway.ui.documents import FILE_TYPES

    assert list(EXTENSIONS) == FILE_TYPES
    assert set(FILE_TYPES) == SUPPORTED_EXTENSIONS == set(BY_EXTENSION)
    assert len(EXTENSIONS) == len(set(EXTENSIONS))


def test_every_extension_of_a_format_gives_that_format_s_name(tmp_path):
    for extension, file_format in BY_EXTENSION.items():
        assert format_of(f"Datei{extension.upper()}") == file_format.name
    path = tmp_path / "notizen.markdown"
    path.write_text("# Titel\n\nEin Absatz.\n")
    assert parse_file(path, path.name).format == "md"
    path = tmp_path / "seite.htm"
    path.write_text("<html><body><h1>Titel</h1><p>Ein Absatz.</p></body></html>")
    assert parse_file(path, path.name).format == "html"


def test_a_mislabelled_file_is_refused_with_the_format_s_label(tmp_path):
    path = tmp_path / "brief.docx"
    path.write_text("nur Text, kein Word-Dokument")
    with pytest.raises(InvalidInput, match=r"kein Word-Dokument \(DOCX\)"):
        parse_file(path, path.name)


def test_an_unknown_extension_is_refused_naming_the_table_s_extensions():
    with pytest.raises(InvalidInput, match=r"\.exe wird nicht unterstützt") as caught:
        format_of("spiel.exe")
    assert all(extension in str(caught.value) for extension in EXTENSIONS)


def test_restructuredtext_is_read_as_paragraphs_under_their_section_titles(tmp_path):
    path = tmp_path / "anleitung.rst"
    path.write_text(
        "=====\nWasser\n=====\n\nEinleitung.\n\nVersuch\n-------\n\nDas Wasser wird erhitzt.\nDann verdampft es.\n\n----\n\nEnde.\n"
    )
    document = parse_file(path, path.name)
    assert document.format == "rst" and document.title == "Wasser"
    assert [(p.section, p.text) for p in document.passages] == [
        ("Wasser", "Einleitung."),
        ("Versuch", "Das Wasser wird erhitzt.\nDann verdampft es."),
        ("Versuch", "Ende."),
    ]
