"""The "Wie denkt die KI?" tab in a real browser (Debian's Chromium, driven by Playwright), on the real default model.

A student types a beginning, sees the next tokens as bars, clicks one, and the
text grows by exactly that token (the bar's own token, as the inference
service gives it); then compares "Der Himmel ist blau." with "… lila." and sees
both perplexities and the most surprising word; the school's leaderboard is
empty and says how to measure. Then, once `schulki eval` has measured two
quants, a student sees the attention heat map of "Gut Ding braucht Weile" for
a layer and head of their choice and the leaderboard's table and plot. Each
model step counts against the student's quota. Screenshots go to
tests/artifacts/thinking-*.png.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, sync_api
from tests.conftest import ARTIFACTS, shared_tls
from tests.eval_support import THREADS, variants
from tests.gateway_stack import running_stack, stack_config

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    config = stack_config(folder)
    config.evaluation.results_dir = folder / "eval-results"
    with running_stack(folder, services=("inference",), config=config) as running:
        yield running


@pytest.fixture()
def measured(stack):
    """The default model and its Q2_K measured by `schulki eval` itself (short: two windows, four questions)."""
    files = variants()
    command = [sys.executable, "-c", "from schulki.cli import main; main()", "eval", str(files["Q4_K_M"]), str(files["Q2_K"])]
    options = ["--context", "128", "--windows", "2", "--max-questions", "4", "--threads", str(THREADS)]
    target = ["--results", str(stack.config.evaluation.results_dir), "--host", "schul-pc-1", "--no-nice", "--force"]
    subprocess.run([*command, *options, *target], check=True, capture_output=True, timeout=900)
    return files


@pytest.fixture()
def page(stack):
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"  # the gateway's test certificate
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(90_000)
        yield page
        context.close()
        browser.close()


def shoot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"thinking-{name}.png"), full_page=True)


def bar_labels(page) -> list[str]:
    return page.eval_on_selector_all("#thinking-choices label", "labels => labels.map(l => l.innerText)")


def test_a_student_extends_a_text_token_by_token_and_compares_two_sentences(page, stack):
    student = stack.add_user("denk-daria", "student", ("8c",))
    log_in(page, stack, "denk-daria", student.password)
    page.get_by_role("tab", name="Wie denkt die KI?").click()
    page.fill("#thinking-text textarea", "Der Himmel ist")
    tokens_before = stack.gateway.accounts.tokens_today(student.account.id)
    page.click("#thinking-show")
    page.wait_for_selector("#thinking-choices label")
    labels = bar_labels(page)
    assert len(labels) == 10
    percents = [float(label.split("%")[0].split()[-1].replace(",", ".")) for label in labels]
    assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.5
    assert all(label.startswith(("█", "▏", "▎", "▍", "▌", "▋", "▊", "▉")) for label in labels)
    assert stack.gateway.accounts.tokens_today(student.account.id) > tokens_before  # it counts like a chat
    shoot(page, "bars")

    # The second bar, so that the text grows by a token the student chose, not merely the likeliest one.
    chosen = labels[1]
    token = chosen[chosen.index("„") + 1 : chosen.rindex("“")].replace("␣", " ")
    page.locator("#thinking-choices label").nth(1).click()
    page.wait_for_function("expected => document.querySelector('#thinking-text textarea').value === expected", arg="Der Himmel ist" + token)
    page.wait_for_function("old => document.querySelector('#thinking-choices label').innerText !== old", arg=labels[0])
    assert len(bar_labels(page)) == 10  # the next step's bars are there
    shoot(page, "extended")

    page.click("#thinking-compare")
    page.wait_for_selector("#thinking-surprise table")
    rows = page.eval_on_selector_all("#thinking-surprise tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert [row[0] for row in rows] == ["Der Himmel ist blau.", "Der Himmel ist lila."]
    blue, purple = (float(row[1].replace(",", ".")) for row in rows)
    assert purple > blue  # "lila" surprises the model more than "blau"
    for sentence, _, surprise, *_ in rows:
        assert surprise in sentence.rstrip(".").split()[1:]  # a whole word of the sentence, never its first
    shoot(page, "perplexity")

    page.click("#leaderboard-load")  # nothing measured yet: the tab says how to measure
    page.wait_for_function("() => document.querySelector('#leaderboard-status').innerText.includes('schulki eval')")
    assert "Noch keine Messungen" in page.inner_text("#leaderboard-status")


def cells(page, selector: str) -> list[list[str]]:
    """The rows of a Gradio 6 table (drawn as rows of grid cells, not as a <table> body)."""
    script = "rows => rows.map(r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))"
    return page.eval_on_selector_all(f"{selector} .virtual-row", script)


def test_a_student_sees_the_attention_heat_map_and_the_schools_leaderboard(page, stack, measured):
    student = stack.add_user("denk-dario", "student", ("8c",))
    log_in(page, stack, "denk-dario", student.password)
    page.get_by_role("tab", name="Wie denkt die KI?").click()
    page.fill("#attention-text textarea", "Gut Ding braucht Weile")
    tokens_before = stack.gateway.accounts.tokens_today(student.account.id)
    page.click("#attention-show")
    page.wait_for_function("() => document.querySelector('#attention-summary').innerText.includes('Schichten')")
    assert "18 Schichten" in page.inner_text("#attention-summary")
    page.wait_for_selector("#attention-map .virtual-row")
    first = cells(page, "#attention-map")
    # the start token first; Gemma reads "Weile" as two tokens
    assert [row[0] for row in first] == ["0: (Textanfang)", "1: Gut", "2: ␣Ding", "3: ␣braucht", "4: ␣We", "5: ile"]
    for i, row in enumerate(first):
        values = [float(cell) for cell in row[1:]]
        assert abs(sum(values) - 100) < 0.5 and all(v == 0 for v in values[i + 1 :])  # each row 100 %, nothing later
    assert stack.gateway.accounts.tokens_today(student.account.id) > tokens_before  # it counts like a chat
    shoot(page, "attention")

    # read before picking: read after, the new table may already be there, and then no change ever comes
    shown = page.inner_text("#attention-map .virtual-body")
    page.click("#attention-layer input")  # another layer: the same tokens, another table
    page.get_by_role("option", name="18", exact=True).click()
    page.wait_for_function("old => document.querySelector('#attention-map .virtual-body').innerText !== old", arg=shown)
    assert cells(page, "#attention-map") != first

    page.click("#leaderboard-load")
    page.wait_for_function("() => document.querySelector('#leaderboard-status').innerText.includes('2 Messungen')")
    page.wait_for_selector("#leaderboard-table .virtual-row")
    rows = cells(page, "#leaderboard-table")
    assert sorted(row[1] for row in rows) == ["Q2_K", "Q4_K_M"] and {row[2] for row in rows} == {"schul-pc-1"}
    perplexities = [float(row[4]) for row in rows]
    assert perplexities == sorted(perplexities)  # best first
    page.wait_for_selector("#leaderboard-plot img")
    shoot(page, "leaderboard")
    # the picture is drawn and loads under the page's policy
    page.wait_for_function(
        "() => { const i = document.querySelector('#leaderboard-plot img'); return i.complete && i.naturalWidth === 960; }"
    )
