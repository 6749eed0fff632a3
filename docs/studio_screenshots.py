"""Screenshots of `seektune studio` for the README, taken in headless Chromium over real runs.

    make demo && .venv/bin/python docs/studio_screenshots.py            # runs/ -> docs/images/studio-*.png
    .venv/bin/python docs/studio_screenshots.py --runs-dir /tmp/clone/runs --run customer-service

The studio is started in this process over the runs directory (its job runner stopped: nothing is launched),
with ``examples/`` as its data path; the pages are driven as a user would: the runs list, a new run started
from the example recipe with a malformed upload previewed, the run's overview, its report, a chat answer from
the tuned model, and the comparison. Needs Chromium (``apt-get install chromium``) and playwright (dev extra).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BAD_UPLOAD = ('question,answer\n'
              'How long do I have to return an item?,You can return most items within 30 days.\n'
              '"Do you ship to Norway?,Yes - broken quoting\n'
              'Can I pay by invoice?,\n')


def serve(app) -> tuple[str, object, threading.Thread]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("the studio did not start within 60 s")
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--run", default="customer-service", help="The evaluated run to show.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from seektune.studio.app import build_studio_app

    args.out.mkdir(parents=True, exist_ok=True)
    app = build_studio_app(args.runs_dir, data_roots=[ROOT / "examples"], start_jobs=False)
    base, server, thread = serve(app)
    shots = []

    def shot(page, name: str) -> None:
        path = args.out / f"studio-{name}.png"
        page.screenshot(path=str(path), full_page=False)
        shots.append(path)

    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(120_000)
            page.goto(base + "/#runs", wait_until="load")
            page.wait_for_selector(f"[data-testid=run-row][data-name='{args.run}']")
            shot(page, "runs")

            page.goto(base + "/#new")
            page.wait_for_selector("[data-testid=view-new]:not([hidden])")
            page.fill("[data-testid=run-name]", "support-v2")
            page.select_option("[data-testid=example]", "examples/customer-service/recipe.yaml")
            deadline = time.monotonic() + 60
            while "faq_en.jsonl" not in page.input_value("[data-testid=recipe]"):  # the example has arrived
                if time.monotonic() > deadline:
                    raise SystemExit("the example recipe did not load within 60 s")
                time.sleep(0.1)
            page.wait_for_selector("[data-testid=recipe-ok]:not([hidden])")
            bad = Path(tmp) / "new_faq.csv"
            bad.write_text(BAD_UPLOAD, encoding="utf-8")
            page.set_input_files("[data-testid=upload]", str(bad))
            page.wait_for_selector("[data-testid=reject]")
            shot(page, "new-run")
            page.fill("[data-testid=recipe]", page.input_value("[data-testid=recipe]").replace("epochs:", "epocs:"))
            page.wait_for_selector("[data-testid=recipe-error]:not([hidden])")
            page.locator("[data-testid=recipe-error]").scroll_into_view_if_needed()
            shot(page, "recipe-error")

            page.goto(base + f"/#run/{args.run}")
            page.wait_for_selector("[data-testid=run-status]:text-is('evaluated')")
            shot(page, "run")
            page.click("[data-testid=tab-report]")
            page.wait_for_selector("[data-testid=report]:not([hidden])").content_frame().wait_for_selector("h1")
            shot(page, "report")
            page.click("[data-testid=tab-chat]")
            page.fill("[data-testid=chat-input]", "How long do I have to return an item?")
            page.click("[data-testid=chat-send]")
            page.wait_for_selector("[data-testid=chat-answer]")
            shot(page, "chat")

            page.goto(base + "/#compare")
            page.wait_for_selector(f"[data-testid='pick-{args.run}']")
            for box in page.query_selector_all("#compare-picks input"):
                box.check()
            page.click("[data-testid=compare-go]")
            page.wait_for_selector("[data-testid=compare-row]")
            shot(page, "compare")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    for path in shots:
        print(path)


if __name__ == "__main__":
    main()
