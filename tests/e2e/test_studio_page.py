"""The studio in a real browser: write a recipe (a typo first), upload data, launch a run and watch it train,
read its report, chat with it, cancel a second run, restart the studio and find both runs as they ended.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_studio_page.py

Jobs are real `seektune run` subprocesses on the tiny Llama (a few steps). Skipped where Chromium or
playwright is missing; every console error, page error and failed request fails the test, except the 400s
of the recipe with a typo (the page shows them) and requests the page aborts on purpose (a stream it leaves).
SEEKTUNE_SCREENSHOTS=DIR keeps the screenshots there (otherwise they go to the test's tmp_path).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_faq
from tests.e2e.test_playground import _chromium, browser_page, serving

HOSTILE = "<img src=x onerror=alert(1)>"
DEADLINE_MS = 240_000  # a whole `seektune run` on the tiny model, start-up included, on a busy 2-core machine


def recipe_text(model: Path, data: Path, **train) -> str:
    recipe = {
        "model": str(model),
        "data": {"paths": [str(data)], "columns": {"user": "question", "assistant": "answer"},
                 "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 1}, "max_length": 128,
                 "dedup": {"exact": False, "near": False}, "leakage": {"check": False}},
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 4, "lr": 5e-3, "batch_size": 4, "logging_steps": 1, "warmup_ratio": 0.0, **train},
        "eval": {"batch_size": 4, "max_new_tokens": 8, "compare_base": True},
    }
    return yaml.safe_dump(recipe, sort_keys=False)


def until(check, timeout_s: float = 30.0) -> None:
    """Poll ``check`` until it is true (the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def run_statuses(page) -> dict[str, str]:
    return dict(page.eval_on_selector_all("[data-testid=run-row]",
                                          "rows => rows.map(r => [r.dataset.name, r.dataset.status])"))


def expected(problem: str) -> bool:
    return ("status of 400" in problem  # the recipe with a typo, and the malformed upload's preview is a 200
            or "ERR_ABORTED" in problem or "net::ERR_ABORTED" in problem)  # a stream the page closed itself


def test_studio_recipe_run_report_chat_cancel_restart(tiny_llama, tmp_path):
    _chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from seektune.studio.app import build_studio_app

    runs_dir, data_dir = tmp_path / "runs", tmp_path / "data"
    data_dir.mkdir()
    faq = write_faq(data_dir / "faq.jsonl")
    screenshots = Path(os.environ.get("SEEKTUNE_SCREENSHOTS") or tmp_path)
    job_env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    problems: list[str] = []

    app = build_studio_app(runs_dir, data_roots=[data_dir], job_env=job_env)
    try:
        drive_first_studio(app, runs_dir, tmp_path, screenshots, problems, tiny_llama, faq)
    finally:
        stop_jobs(app)

    # a restarted studio lists both runs as they ended
    restarted = build_studio_app(runs_dir, data_roots=[data_dir], job_env=job_env)
    try:
        with serving(restarted) as base_url, browser_page(problems) as page:
            page.goto(base_url + "/#runs", wait_until="load")
            page.wait_for_selector("[data-testid=run-row][data-name=second]")
            assert run_statuses(page) == {"first": "evaluated", "second": "cancelled"}
            page.goto(base_url + "/#compare")
            page.check("[data-testid=pick-first]")
            page.click("[data-testid=compare-go]")
            page.wait_for_selector("[data-testid=compare-row]")
            page.screenshot(path=str(screenshots / "studio-compare.png"), full_page=True)
    finally:
        stop_jobs(restarted)

    unexpected = [p for p in problems if not expected(p)]
    assert not unexpected, unexpected
    jobs = [j.public() for j in restarted.state.studio.store.jobs()]
    assert [(j["run"], j["status"]) for j in jobs] == [("second", "cancelled"), ("first", "succeeded")]


def stop_jobs(app) -> None:
    """Kill whatever a failed test left running (a job outlives its studio by design)."""
    import signal

    runner = app.state.studio.runner
    runner.stop()
    for job in runner.store.jobs(status="running"):
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except OSError:
            pass


def drive_first_studio(app, runs_dir, tmp_path, screenshots, problems, tiny_llama, faq) -> None:
    good = recipe_text(tiny_llama, faq)
    typo = good.replace("max_steps:", "max_step:")
    with serving(app) as base_url, browser_page(problems) as page:
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.goto(base_url + "/#runs", wait_until="load")
        page.wait_for_selector("[data-testid=view-runs]:not([hidden])")

        # a recipe with a typo: the CLI's message, with its hint, and no way to launch
        page.goto(base_url + "/#new")
        page.wait_for_selector("[data-testid=view-new]:not([hidden])")
        page.fill("[data-testid=run-name]", "first")
        page.fill("[data-testid=recipe]", typo)
        page.wait_for_selector("[data-testid=recipe-error]:has-text(\"did you mean 'train.max_steps'?\")")
        assert page.is_disabled("[data-testid=launch]")

        # a malformed data file: seektune's rejects with file:line, not a stack trace
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"question": "Where is my order?", "answer": "Track it on the Orders page."}\n'
                       '{"question": "broken\n'
                       f'{{"question": "{HOSTILE}", "answer": ""}}\n', encoding="utf-8")
        page.set_input_files("[data-testid=upload]", str(bad))
        page.wait_for_selector("[data-testid=reject]")
        rejects = page.eval_on_selector_all("[data-testid=reject]", "rs => rs.map(r => r.textContent)")
        assert any(r.startswith("bad.jsonl:2") for r in rejects), rejects
        assert "1 usable" in page.text_content("[data-testid=preview-summary]")
        assert page.query_selector("img[src=x]") is None  # the hostile row is text
        page.screenshot(path=str(screenshots / "studio-new-run.png"), full_page=True)

        # fixed: valid; a form field writes the same key=value the CLI takes into the YAML
        page.fill("[data-testid=recipe]", good)
        page.wait_for_selector("[data-testid=recipe-ok]:not([hidden])")
        page.fill("[data-testid='field-train.lr']", "0.004")
        page.dispatch_event("[data-testid='field-train.lr']", "change")
        until(lambda: yaml.safe_load(page.input_value("[data-testid=recipe]"))["train"]["lr"] == 0.004)
        page.wait_for_selector("[data-testid=recipe-ok]:not([hidden])")
        page.click("[data-testid=launch]")

        # the run page: progress and a loss point arrive while it trains, then it is evaluated
        page.wait_for_selector("[data-testid=run-title]:has-text('first')")
        page.wait_for_selector("[data-testid=loss-point]", timeout=DEADLINE_MS)
        page.wait_for_selector("[data-testid=progress-text]:has-text('step')")
        page.wait_for_selector("[data-testid=run-status]:text-is('evaluated')", timeout=DEADLINE_MS)
        assert "seektune run" in page.text_content("[data-testid=run-command]")
        assert "Traceback" not in page.text_content("[data-testid=log]")
        page.screenshot(path=str(screenshots / "studio-run.png"), full_page=True)

        # its report opens in the page
        page.click("[data-testid=tab-report]")
        frame = page.wait_for_selector("[data-testid=report]:not([hidden])").content_frame()
        frame.wait_for_selector("h1")
        assert "first" in frame.text_content("body")
        page.screenshot(path=str(screenshots / "studio-report.png"), full_page=True)

        # a chat answer arrives from the tuned model
        page.click("[data-testid=tab-chat]")
        page.fill("[data-testid=chat-input]", "Where is my order?")
        page.click("[data-testid=chat-send]")
        page.wait_for_selector("[data-testid=chat-answer]", timeout=DEADLINE_MS)

        # a second run, cancelled while it trains
        page.goto(base_url + "/#new")
        page.wait_for_selector("[data-testid=view-new]:not([hidden])")
        page.fill("[data-testid=run-name]", "second")
        page.fill("[data-testid=recipe]", recipe_text(tiny_llama, faq, max_steps=100_000))
        page.wait_for_selector("[data-testid=recipe-ok]:not([hidden])")
        page.click("[data-testid=launch]")
        page.wait_for_selector("[data-testid=run-title]:has-text('second')")
        page.wait_for_selector("[data-testid=loss-point]", timeout=DEADLINE_MS)
        page.click("[data-testid=cancel]")
        page.wait_for_selector("[data-testid=run-status]:text-is('cancelled')", timeout=60_000)

        page.goto(base_url + "/#runs")
        page.wait_for_selector("[data-testid=run-row][data-name=second]")
        assert run_statuses(page) == {"first": "evaluated", "second": "cancelled"}
        page.screenshot(path=str(screenshots / "studio-runs.png"), full_page=True)


def test_studio_with_a_key_asks_for_it_then_lists_runs_and_frames_the_report(tmp_path):
    """With --api-key: the page asks for the key, then lists runs, and the report frame loads (the key travels
    as a SameSite=Strict cookie, since a frame cannot send a header)."""
    _chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from seektune.recipe import load_recipe
    from seektune.runs import RunDir
    from seektune.studio.app import build_studio_app

    run = RunDir(tmp_path / "runs" / "cs")
    run.save_recipe(load_recipe(None, ["model=smollm2-135m-instruct", f"output_dir={run.path}"]))
    run.metrics.parent.mkdir(parents=True)
    run.metrics.write_text('{"base": {"fact_accuracy": 0.0}, "tuned": {"fact_accuracy": 0.5}}')
    run.report_html.write_text(f"<!doctype html><h1>Report of cs</h1><p>{HOSTILE}</p>", encoding="utf-8")
    app = build_studio_app(tmp_path / "runs", token="k3y", start_jobs=False)
    problems: list[str] = []
    with serving(app) as base_url, browser_page(problems) as page:
        page.goto(base_url + "/#runs", wait_until="load")
        page.wait_for_selector("[data-testid=banner]:has-text('needs its key')")
        page.fill("[data-testid=token]", "k3y")
        page.press("[data-testid=token]", "Enter")
        page.wait_for_selector("[data-testid=run-row][data-name=cs][data-status=evaluated]")
        page.goto(base_url + "/#run/cs")
        page.click("[data-testid=tab-report]")
        frame = page.wait_for_selector("[data-testid=report]:not([hidden])").content_frame()
        frame.wait_for_selector("h1:has-text('Report of cs')")
    # the first, keyless request is refused; the markup planted in this fake report can neither run its handler
    # nor fetch its image (sandboxed frame, CSP): those refusals are the only other messages
    blocked = [p for p in problems if "sandboxed and the 'allow-scripts' permission is not set" in p
               or ("/api/runs/cs/x" in p and ("csp" in p or "Content Security Policy" in p))]
    assert blocked and [p for p in problems if "status of 401" not in p and p not in blocked] == []
