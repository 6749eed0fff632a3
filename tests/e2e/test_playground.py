"""The web playground in a real browser, against the real server on the tiny model.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_playground.py

A user sends a message, sees the answer stream in, clicks thumbs-down, suggests a better answer,
and that correction comes out of `export_feedback(db, "sft", ...)` as a training row. Skipped
where Chromium or playwright is missing. Chromium runs with networking features off and every
console error, page error and failed request fails the test.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from seektune.serve.feedback import FeedbackStore, export_feedback

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
QUESTION = "How long do I have to return something?"
CORRECTION = "Returns are accepted within 45 days of delivery."

# Records every text the assistant message showed (MutationObserver sees each render, even
# several within one network read), so the test can tell a streamed answer from one set at once.
WATCH_RENDERS = """
() => {
  window.__renders = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const el = r.target.closest ? r.target.closest('[data-testid="assistant-message"]') : null;
      if (!el) continue;
      for (const node of r.addedNodes) if (node.nodeType === Node.TEXT_NODE) window.__renders.push(node.data);
    }
  }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true});
}
"""


def _chromium() -> str:
    path = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
    if not path:
        pytest.skip("no chromium executable (looked at /usr/bin/chromium and PATH)")
    return path


@contextmanager
def serving(app):
    """uvicorn in a background thread on a free port; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # start-up loads the model
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def browser_page(problems: list[str]):
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(60_000)
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
            yield page
        finally:
            browser.close()


def chat_and_correct(page, base_url: str) -> str:
    """Drive the page like a user; returns the completion id the feedback went to."""
    page.goto(base_url + "/", wait_until="load")
    assert page.title() == "seektune playground"
    # (wait_for_function would eval a string, which the page's Content-Security-Policy forbids)
    page.wait_for_selector("#model option", state="attached")
    models = page.eval_on_selector_all("#model option", "opts => opts.map(o => o.value)")
    assert models and page.input_value("[data-testid=model-select]") == models[0]

    page.click("text=Settings")
    page.fill("#temperature", "0")  # greedy: the tiny model's answer is the same every run
    page.fill("#max-tokens", "24")
    page.evaluate(WATCH_RENDERS)
    page.fill("[data-testid=message-input]", QUESTION)
    page.click("[data-testid=send-button]")

    page.wait_for_selector("[data-testid=user-message]")
    assert page.inner_text("[data-testid=user-message]") == QUESTION
    page.wait_for_selector("[data-testid=feedback]:not([hidden])")  # shown once the stream ended with [DONE]
    assert page.is_hidden("[data-testid=message-error]")
    answer = page.text_content("[data-testid=assistant-message]")
    renders = [r for r in page.evaluate("window.__renders") if r]
    assert answer and renders[-1] == answer
    assert len(set(renders)) >= 2, f"the answer arrived in one piece, not streamed: {renders}"
    assert all(answer.startswith(r) for r in renders), "each partial render is a prefix of the answer"
    if page.is_visible("[data-testid=reasoning]"):
        assert page.get_attribute("[data-testid=reasoning]", "open") is None  # reasoning starts collapsed

    completion_id = page.get_attribute("[data-testid=feedback]", "data-completion-id")
    assert completion_id
    page.click("[data-testid=thumbs-down]")
    page.wait_for_selector("[data-testid=feedback-status]:has-text('Thanks')")
    assert page.get_attribute("[data-testid=thumbs-down]", "aria-pressed") == "true"
    page.click("[data-testid=suggest-button]")
    page.fill("[data-testid=correction-input]", CORRECTION)
    page.click("[data-testid=submit-correction]")
    page.wait_for_selector("[data-testid=feedback-status]:has-text('used for training')")
    assert page.is_hidden("[data-testid=correction-form]")
    return completion_id


def test_playground_streams_and_its_correction_becomes_an_sft_row(tiny_llama, tmp_path):
    _chromium()  # skip before loading a model when there is no browser
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from seektune.serve.app import ServeSettings, create_app

    db = tmp_path / "feedback.sqlite"
    problems: list[str] = []
    with serving(create_app(ServeSettings(target=str(tiny_llama), feedback_db=db))) as base_url, \
            browser_page(problems) as page:
        completion_id = chat_and_correct(page, base_url)
    assert problems == []

    [completion] = [c for c in FeedbackStore(db).completions() if c["id"] == completion_id]
    assert [(f["rating"], f["correction"]) for f in completion["feedback"]] == [("down", None), ("down", CORRECTION)]
    out = tmp_path / "sft.jsonl"
    counts = export_feedback(db, "sft", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert counts["rows"] == 1 and rows == [{
        "messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": CORRECTION}],
        "meta": {"origin": f"feedback:{completion_id}", "model": completion["model"]},
    }]


def test_playground_asks_for_the_key_and_shows_server_errors_inline(tiny_llama, tmp_path):
    _chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from seektune.serve.app import ServeSettings, create_app

    # no completion slot at all: every chat request gets the server's 429, fast
    settings = ServeSettings(target=str(tiny_llama), feedback_db=tmp_path / "feedback.sqlite", api_key="s3cret",
                             max_concurrency=0)
    problems: list[str] = []
    with serving(create_app(settings)) as base_url, browser_page(problems) as page:
        page.goto(base_url + "/", wait_until="load")  # the page itself loads without the key
        page.wait_for_selector("[data-testid=banner]:not([hidden])")
        banner = page.inner_text("[data-testid=banner]")
        assert "401" in banner and "API key" in banner

        page.fill("[data-testid=api-key]", "s3cret")
        page.press("[data-testid=api-key]", "Enter")
        page.wait_for_selector("#model option", state="attached")
        assert page.is_hidden("[data-testid=banner]")
        assert page.evaluate("localStorage.getItem('seektune.apiKey')") == "s3cret"

        page.fill("[data-testid=message-input]", QUESTION)
        page.press("[data-testid=message-input]", "Enter")
        page.wait_for_selector("[data-testid=message-error]:not([hidden])")
        error = page.inner_text("[data-testid=message-error]")
        assert "429" in error and "concurrent requests" in error and "try again" in error
        assert page.is_hidden("[data-testid=feedback]")  # nothing to rate
        assert page.is_enabled("[data-testid=send-button]")

        page.reload(wait_until="load")  # the key is remembered
        page.wait_for_selector("#model option", state="attached")
        assert page.input_value("[data-testid=api-key]") == "s3cret"
    # the browser logs each non-2xx response it was expecting; nothing else may appear
    expected = {f"console error: Failed to load resource: the server responded with a status of {code}"
                for code in ("401 (Unauthorized)", "429 (Too Many Requests)")}
    assert set(problems) == expected, problems
