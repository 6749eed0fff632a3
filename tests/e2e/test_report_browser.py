"""The run report in a real browser: it loads with no console error, no failed request, and shows its plots.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_report_browser.py
    SEEKTUNE_REPORT_RUN=runs/customer-service pytest -q tests/e2e/test_report_browser.py   # a real run;
        # writes its report.html / report.json and a screenshot to <run>/report.png

Skipped where Chromium or playwright is missing. Chromium runs with networking features off, so any
request the page makes other than its own file shows up as a failed request.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from seektune.data.card import write_card
from seektune.evaluate.figures import fmt
from seektune.evaluate.human import export_sheets
from seektune.evaluate.report import compare_runs, write_report
from seektune.runs import RunDir
from tests.unit.test_report import FULL_CARD, SCRIPT, make_fake_run

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def _chromium() -> str:
    path = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
    if not path:
        if os.environ.get("SEEKTUNE_REPORT_RUN"):  # `make check-report` asked for the check: it must not pass unseen
            pytest.fail("no chromium executable (looked at /usr/bin/chromium and PATH); apt-get install chromium")
        pytest.skip("no chromium executable (looked at /usr/bin/chromium and PATH)")
    return path


def test_report_opens_cleanly_in_chromium(tmp_path):
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    real_run = os.environ.get("SEEKTUNE_REPORT_RUN")
    run = Path(real_run) if real_run else make_fake_run(tmp_path / "run")
    screenshot = run / "report.png" if real_run else tmp_path / "report.png"
    html_path, _ = write_report(run)
    tuned_rouge = _tuned_rouge_text(run)

    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = _watched_page(browser, problems)
            page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.resolve().as_uri(), wait_until="load")

            assert page.title().startswith("seektune report")
            width = page.eval_on_selector("#loss-curve img", "img => img.complete ? img.naturalWidth : 0")
            assert width > 0
            table = page.inner_text("#metrics-table")
            assert "ROUGE-L" in table and tuned_rouge in table
            if page.query_selector("#win-rate"):
                assert page.is_visible("#win-rate svg rect")
            if not real_run:  # the fake run's model output holds a script: the page shows it as text
                assert SCRIPT in page.inner_text("#rows")
                assert page.eval_on_selector_all("script", "nodes => nodes.length") == 0
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert problems == []
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def _watched_page(browser, problems: list[str]):
    """A page whose console errors, page errors and dialogs (a script from an answer ran) go to ``problems``."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
    return page


def _tuned_rouge_text(run: Path) -> str:
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    return fmt("rougeL", metrics["tuned"]["rougeL"])


def test_compare_card_and_rating_sheet_open_cleanly(tmp_path):
    """The other pages: no console error, no request off the file, no dialog; charts load; hostile text stays text."""
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    run = make_fake_run(tmp_path / "run")
    compare_runs([run, make_fake_run(tmp_path / "other")], tmp_path / "compare.html")
    write_card(FULL_CARD, RunDir(run))
    export_sheets(run, raters=1, force=True)  # the fake run already holds human-eval results
    pages = {tmp_path / "compare.html": ("#compare-chart-img", "Run comparison"),
             RunDir(run).card_html: ("img", SCRIPT),
             RunDir(run).human_eval / "sheet-r1.html": (None, SCRIPT)}
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = _watched_page(browser, problems)
            page.on("request", lambda r: None if r.url.startswith(("file://", "data:")) else problems.append(r.url))
            for path, (image, text) in pages.items():
                page.goto(path.resolve().as_uri(), wait_until="load")
                if image:
                    assert page.eval_on_selector(image, "img => img.complete ? img.naturalWidth : 0") > 0, path
                assert text in page.inner_text("body"), path
        finally:
            browser.close()
    assert problems == []
