"""The review page in a real browser, driven by the keyboard only, and its decisions read back as training data.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_review_page.py

A reviewer accepts pair 1 (the page first asks for their name), edits pair 2's answer, rejects pair 3
with a reason, sees pair 4's hostile text as text, meets a pair another tab changed (409: reloaded)
and undoes a decision; after a reload the page shows the three decisions, `read_rows` on the store
yields exactly the accepted and edited rows, and `seektune prepare` on a recipe whose data is the store
keeps exactly those two. Skipped where Chromium or playwright is missing; every console error, page
error, dialog and failed request beyond the one expected 409 fails the test. SEEKTUNE_SCREENSHOTS=DIR
keeps a screenshot of the page there (otherwise it goes to the test's tmp_path).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from seektune.data.io import RawRow, read_rows
from seektune.data.review import ReviewStore
from seektune.runs import RunDir
from tests.conftest import cli, write_recipe
from tests.e2e.test_playground import _chromium, browser_page, serving

HOSTILE = "<img src=x onerror=alert(1)>"
CHUNK = ("Returns\n\nYou can return any item within 30 days of delivery. Refunds go to the original payment method "
         "within 5 business days. Opened software cannot be returned.\n\nShipping\n\nOrders over 50 euros ship free.")
NEW_ANSWER = "Refunds go back to the card you paid with, usually within a week."
REASON = "duplicate: the source does not say this"
EXPECTED_CONSOLE = {"console error: Failed to load resource: the server responded with a status of 409 (Conflict)"}


def record(n: int, question: str, answer: str, support, *, chunk: str = CHUNK, warnings=(), facts=(),
           document: str = "handbook.md", kind: str = "factual") -> dict:
    chunk_id = f"{document}#c{n}"
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "meta": {"id": f"p{n}", "origin": chunk_id, "kind": kind, "synthetic": True, "facts": list(facts),
                     "support": [list(s) for s in support], "warnings": list(warnings),
                     "source": {"document": document, "chunk_id": chunk_id, "text": chunk,
                                "sha256": hashlib.sha256(chunk.encode()).hexdigest(), "page": None,
                                "heading": "Returns"}}}


def span(text: str) -> tuple[int, int]:
    start = CHUNK.index(text)
    return start, start + len(text)


RECORDS = [
    record(1, "How long do I have to return an item?", "You have 30 days from delivery.",
           [span("within 30 days of delivery")], facts=["30 days"]),
    record(2, "Where does my refund go?", "To the original payment method within 5 business days.",
           [span("Refunds go to the original payment method within 5 business days")],
           facts=["original payment method", "5 business days"]),
    record(3, "Can I return opened software?", "Yes, opened software can be returned within 30 days.",
           [span("Opened software cannot be returned")], warnings=["answer_partly_unsupported"]),
    record(4, f"What does {HOSTILE} mean?", f"It is markup: {HOSTILE}", [(0, 7)],
           chunk=f"Security note: {HOSTILE} is text.", document="security.md", kind="out_of_scope"),
    record(5, "Is shipping free?", "Yes, for orders over 50 euros.", [span("Orders over 50 euros ship free.")]),
]


def shown(page, pair_id: str) -> None:
    page.wait_for_selector(f'[data-testid=pair][data-id="{pair_id}"]:not([hidden])')


def statuses(page) -> list[str]:
    return page.eval_on_selector_all("[data-testid=queue-item]", "items => items.map(i => i.dataset.status)")


def counts(page) -> dict[str, int]:
    return {s: int(page.text_content(f"[data-testid=count-{s}]"))
            for s in ("pending", "accepted", "edited", "rejected")}


def review_by_keyboard(page, base_url: str, store: ReviewStore, screenshot: Path) -> None:
    keys = page.keyboard
    page.goto(base_url + "/", wait_until="load")
    shown(page, "p1")
    assert page.text_content("[data-testid=question]") == RECORDS[0]["messages"][0]["content"]
    assert page.eval_on_selector_all("[data-testid=chunk] mark", "ms => ms.map(m => m.textContent)") == [
        "within 30 days of delivery"]
    assert page.text_content("[data-testid=chunk]") == CHUNK  # the marks split the text, they add nothing
    assert counts(page) == {"pending": 5, "accepted": 0, "edited": 0, "rejected": 0}

    # 1: accept; no reviewer yet, so the page asks for the name and then records the acceptance
    keys.press("a")
    page.wait_for_selector("[data-testid=banner]:has-text('Reviewer')")
    assert page.evaluate("document.activeElement.id") == "reviewer"
    keys.type("Ann")
    keys.press("Enter")
    shown(page, "p2")
    assert page.evaluate("localStorage.getItem('seektune.reviewer')") == "Ann"

    # 2: edit the answer (the 'e' stays out of the textarea), save with Ctrl+Enter
    keys.press("e")
    assert page.is_visible("[data-testid=answer-edit]") and page.is_hidden("[data-testid=answer]")
    assert page.evaluate("document.activeElement.id") == "answer-edit"
    assert page.input_value("[data-testid=answer-edit]") == RECORDS[1]["messages"][1]["content"]
    keys.press("Control+A")
    keys.type(NEW_ANSWER)  # letters that are shortcuts elsewhere: typing must not trigger them
    keys.press("Control+Enter")
    shown(page, "p3")

    # 3: reject with a reason, saved with Enter; Escape first cancels a reject without a decision
    keys.press("r")
    assert page.evaluate("document.activeElement.id") == "reason"
    keys.press("Escape")
    assert page.is_hidden("#reject-form")
    keys.press("r")
    keys.type(REASON)
    keys.press("Enter")
    shown(page, "p4")
    assert counts(page) == {"pending": 2, "accepted": 1, "edited": 1, "rejected": 1}

    # 4: the hostile text is text, in the question, the answer and the highlighted chunk
    assert page.text_content("[data-testid=question]") == f"What does {HOSTILE} mean?"
    assert page.text_content("[data-testid=answer]") == f"It is markup: {HOSTILE}"
    assert page.text_content("[data-testid=chunk]") == f"Security note: {HOSTILE} is text."
    assert page.query_selector("img") is None
    assert page.text_content("[data-testid=pair-kind]") == "out_of_scope"

    # another tab decides on pair 4 while this one shows it: 409, then the pair is reloaded
    store.decide("p4", "accepted", "Bob")
    keys.press("a")
    page.wait_for_selector("[data-testid=banner]:has-text('changed in another tab')")
    page.wait_for_selector("[data-testid=pair-status]:has-text('accepted')")
    assert "by Bob" in page.text_content("[data-testid=decision]")
    keys.press("u")  # undo: pending again, and the page stays on the pair
    page.wait_for_selector("[data-testid=pair-status]:has-text('pending')")
    shown(page, "p4")

    # j / k and the arrow keys move; the warning filter narrows the queue
    keys.press("j")
    shown(page, "p5")
    keys.press("ArrowUp")
    shown(page, "p4")
    page.select_option("[data-testid=filter-warning]", "answer_partly_unsupported")
    page.wait_for_selector("[data-testid=filter-count]:has-text('1 of 5')")
    shown(page, "p3")
    page.select_option("[data-testid=filter-warning]", "")
    page.wait_for_selector("[data-testid=queue-item][data-id=p5]")
    shown(page, "p4")  # the next pending pair after the one shown (a reload before this would abort its fetch)

    # after a reload, the three decisions are there
    page.reload(wait_until="load")
    shown(page, "p4")  # the first pending pair
    assert statuses(page) == ["accepted", "edited", "rejected", "pending", "pending"]
    assert page.input_value("[data-testid=reviewer]") == "Ann"
    keys.press("k")
    shown(page, "p3")
    assert REASON in page.text_content("[data-testid=decision]")
    keys.press("ArrowLeft")
    shown(page, "p2")
    assert page.text_content("[data-testid=answer]") == NEW_ANSWER
    assert page.text_content("[data-testid=pair-status]") == "edited"
    assert page.is_visible("[data-testid=original]")
    page.screenshot(path=str(screenshot), full_page=True)


def test_review_page_by_keyboard_feeds_prepare(tiny_llama, tmp_path):
    _chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from seektune.synth.review_app import build_review_app

    run = tmp_path / "cs-synth"
    store = ReviewStore(RunDir(run).review_store)
    assert store.add(RECORDS) == 5
    screenshots = Path(os.environ.get("SEEKTUNE_SCREENSHOTS") or tmp_path)
    problems: list[str] = []
    with serving(build_review_app(store.path)) as base_url, browser_page(problems) as page:
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        review_by_keyboard(page, base_url, store, screenshots / "review-page.png")
    assert set(problems) <= EXPECTED_CONSOLE, problems

    assert store.counts() == {"pending": 2, "accepted": 1, "edited": 1, "rejected": 1}
    assert store.get("p3").reason == REASON and store.get("p1").reviewer == "Ann"

    # the data reader sees exactly the accepted and the edited pair, the edit's answer in place
    rows = list(read_rows([store.path]))
    assert all(isinstance(r, RawRow) for r in rows)
    assert [(r.data["id"], r.data["messages"][-1]["content"]) for r in rows] == [
        ("p1", RECORDS[0]["messages"][1]["content"]), ("p2", NEW_ANSWER)]
    assert rows[1].data["facts"] == []  # the edit dropped both facts from the answer

    # and so does a whole `seektune prepare`
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama, store.path, tmp_path / "prepared",
                          data__split={"train": 1.0, "val": 0.0, "test": 0.0, "seed": 1})
    cli("prepare", recipe)
    prepared = RunDir(tmp_path / "prepared")
    train = [json.loads(line) for line in prepared.split("train").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["messages"][-1]["content"] for r in train) == sorted(
        [RECORDS[0]["messages"][1]["content"], NEW_ANSWER])
    for split in ("val", "test"):
        path = prepared.split(split)
        assert not path.exists() or path.read_text(encoding="utf-8").strip() == ""
