"""The studio without a browser: recipe paths rebased like load_recipe, jobs run / fail / queue / cancel /
survive a restart, and the JSON API's answers and refusals (names, paths, key, Host, uploads, previews)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from seektune.recipe import load_recipe, rebase_paths
from seektune.studio.jobs import JobRunner, JobStore

# a stand-in for `python -m seektune`: prints its arguments, then exits with the first (or sleeps on "sleep")
FAKE_SEEKTUNE = [sys.executable, "-c", "import sys, time\nprint('args', *sys.argv[1:], flush=True)\n"
                 "time.sleep(60) if sys.argv[1] == 'sleep' else sys.exit(int(sys.argv[1]))"]


def until(check, runner: JobRunner | None = None, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        if runner is not None:
            runner.tick()
        if (value := check()):
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# ---------------------------------------------------------------- recipe paths

def test_rebase_paths_means_the_same_files_as_load_recipe(tmp_path):
    home = tmp_path / "project"
    (home / "data").mkdir(parents=True)
    (home / "docs").mkdir()
    (home / "model").mkdir()
    (home / "data" / "faq.jsonl").write_text('{"messages": []}\n')
    (home / "docs" / "handbook.md").write_text("# Returns\n")
    (home / "terms.csv").write_text("term,forbidden\nrefund,\n")
    raw = {"model": "model", "data": {"paths": ["data/faq.jsonl"], "rag": {"k": 2}},
           "rag": {"documents": ["docs"], "index": "index"}, "glossary": {"file": "terms.csv"},
           "synth": {"documents": ["docs/handbook.md"], "dedup_against": ["data/faq.jsonl"]},
           "stages": [{"name": "one", "data": {"paths": ["data/faq.jsonl"]}}], "output_dir": "runs/x"}
    (home / "recipe.yaml").write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "recipe.yaml").write_text(yaml.safe_dump(rebase_paths(raw, home)))

    original = load_recipe(home / "recipe.yaml").model_dump()
    moved = load_recipe(elsewhere / "recipe.yaml").model_dump()
    # load_recipe reads the glossary file next to the recipe but keeps the name as written
    assert moved["glossary"].pop("file") == str((home / original["glossary"].pop("file")).resolve())
    assert moved == original and moved["eval"]["glossary"] == ["refund"]
    moved = load_recipe(elsewhere / "recipe.yaml")
    assert moved.data.paths == [str((home / "data" / "faq.jsonl").resolve())]
    assert rebase_paths({"model": "smollm2-135m-instruct"}, home) == {"model": "smollm2-135m-instruct"}  # a name


# ---------------------------------------------------------------- jobs

@pytest.fixture
def runner(tmp_path):
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), tmp_path / "logs", command=FAKE_SEEKTUNE)
    yield runner
    for job in runner.store.jobs(status="running"):
        runner.cancel(job.id)
    until(lambda: not runner.store.jobs(status="running"), runner)


def test_jobs_run_in_order_one_at_a_time_and_end_as_their_exit_code_says(runner):
    slow = runner.submit("a", "run", ["sleep"])
    ok, bad = runner.submit("b", "run", ["0"]), runner.submit("c", "eval", ["3"])
    runner.tick()
    assert [runner.store.get(j.id).status for j in (slow, ok, bad)] == ["running", "queued", "queued"]
    runner.cancel(slow.id)
    until(lambda: runner.store.get(bad.id).status in ("succeeded", "failed"), runner)
    assert runner.store.get(slow.id).status == "cancelled"
    assert runner.store.get(ok.id).status == "succeeded"
    failed = runner.store.get(bad.id)
    assert (failed.status, failed.returncode, failed.note) == ("failed", 3, "exit code 3")
    assert runner.log_path(bad.id).read_text().strip() == "args 3"


def test_a_queued_job_is_cancelled_at_once_and_a_finished_one_refuses(runner):
    from seektune.studio.jobs import JobError

    first, second = runner.submit("a", "run", ["sleep"]), runner.submit("b", "run", ["0"])
    runner.tick()
    assert runner.cancel(second.id).status == "cancelled"
    with pytest.raises(JobError, match="already cancelled"):
        runner.cancel(second.id)
    runner.cancel(first.id)
    until(lambda: runner.store.get(first.id).status == "cancelled", runner)


def test_a_restarted_runner_settles_jobs_whose_process_is_gone(tmp_path, runner):
    done, died = runner.submit("a", "run", ["0"]), runner.submit("b", "run", ["0"])
    for job in (done, died):  # as a studio that stopped while they ran left them
        runner.store.update(job.id, status="running", pid=2 ** 22 + 17)
    runner.rc_path(done.id).write_text("0")
    restarted = JobRunner(runner.store, runner.logs_dir, command=FAKE_SEEKTUNE)
    assert restarted.store.get(done.id).status == "succeeded"
    lost = restarted.store.get(died.id)
    assert lost.status == "failed" and "without an exit code" in lost.note


# ---------------------------------------------------------------- the JSON API

@pytest.fixture
def studio(tmp_path):
    from fastapi.testclient import TestClient

    from seektune.studio.app import build_studio_app

    data = tmp_path / "data"
    data.mkdir()
    (data / "faq.csv").write_text("question,answer\nWhere is my order?,On the Orders page.\n")
    (data / "recipe.yaml").write_text(yaml.safe_dump({"model": "smollm2-135m-instruct",
                                                      "data": {"paths": ["faq.csv"]}}))
    app = build_studio_app(tmp_path / "runs", data_roots=[data], start_jobs=False)
    app.state.studio.runner.command = FAKE_SEEKTUNE
    client = TestClient(app, base_url="http://127.0.0.1")
    client.data = data
    return client


def test_a_recipe_is_validated_with_the_cli_message_and_its_paths_checked(studio):
    recipe = "model: smollm2-135m-instruct\ntrain:\n  epocs: 2\n"
    answer = studio.post("/api/recipes/validate", json={"name": "cs", "recipe": recipe})
    assert answer.status_code == 400 and "did you mean 'train.epochs'?" in answer.json()["detail"]
    outside = "data:\n  paths: [/etc/passwd]\n"
    answer = studio.post("/api/recipes/validate", json={"name": "cs", "recipe": outside})
    assert answer.status_code == 400 and "outside what this studio may read" in answer.json()["detail"]
    answer = studio.post("/api/recipes/validate", json={"name": "../up", "recipe": "model: x"})
    assert answer.status_code == 400 and "not usable" in answer.json()["detail"]
    example = studio.get("/api/examples").json()["examples"]
    assert example == ["data/recipe.yaml"]
    text = studio.get("/api/examples/data/recipe.yaml").json()["recipe"]
    assert yaml.safe_load(text)["data"]["paths"] == [str(studio.data / "faq.csv")]
    valid = studio.post("/api/recipes/validate", json={"name": "cs", "recipe": text}).json()
    assert valid["resolved"]["output_dir"].endswith("runs/cs")


def test_form_changes_are_the_cli_overrides(studio):
    answer = studio.post("/api/recipes/set", json={"recipe": "model: smollm2-135m-instruct\ntrain:\n  lr: 0.1\n",
                                                   "set": {"train.epochs": "3", "method.r": "8", "train.lr": ""}})
    assert yaml.safe_load(answer.json()["recipe"]) == {"model": "smollm2-135m-instruct", "train": {"epochs": 3},
                                                       "method": {"r": 8}}


def test_an_upload_is_previewed_with_rejects_by_file_and_line(studio):
    bad = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n{"broken\n'
    saved = studio.post("/api/uploads", json={"filename": "../../chat.jsonl", "content": bad}).json()
    assert Path(saved["path"]).name == "chat.jsonl" and "/.studio/uploads/" in saved["path"]
    preview = studio.post("/api/data/preview", json={"path": saved["path"]}).json()
    assert (preview["read"], preview["kept"], preview["rejected"]) == (2, 1, 1)
    assert preview["rejects"][0]["origin"] == "chat.jsonl:2" and preview["formats"] == {"messages": 1}
    assert studio.post("/api/uploads", json={"filename": "x.exe", "content": ""}).status_code == 400
    assert studio.post("/api/data/preview", json={"path": "/etc/hostname"}).status_code == 400


def test_a_job_is_the_command_a_user_would_type_and_streams_until_it_ends(studio):
    runner = studio.app.state.studio.runner
    recipe = studio.get("/api/examples/data/recipe.yaml").json()["recipe"]
    job = studio.post("/api/jobs", json={"name": "cs", "stage": "run", "recipe": recipe}).json()
    assert job["command"][:2] == ["seektune", "run"] and job["command"][2].endswith(".studio/recipes/cs.yaml")
    again = studio.post("/api/jobs", json={"name": "cs", "stage": "run", "recipe": recipe})
    assert again.status_code == 409
    assert studio.get("/api/runs").json()["runs"][0]["status"] == "queued"
    assert studio.post("/api/jobs", json={"name": "nope", "stage": "eval"}).status_code == 404
    assert studio.post("/api/jobs", json={"name": "cs", "stage": "export", "to": "zip"}).status_code == 400
    runner.command = [sys.executable, "-c", "print('line one'); print('line two')"]
    until(lambda: runner.store.get(job["id"]).status == "succeeded", runner)
    events = studio.get(f"/api/jobs/{job['id']}/events").text
    kinds = [line.removeprefix("event: ") for line in events.splitlines() if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in events.splitlines() if line.startswith("data: ")]
    assert kinds == ["log", "status"] and data[0]["lines"] == ["line one", "line two"]
    assert data[-1]["status"] == "succeeded"
    assert studio.get("/api/runs").json()["runs"][0]["status"] == "new"  # the fake wrote no run files
    assert studio.post(f"/api/jobs/{job['id']}/cancel", json={}).status_code == 409


def test_the_guard_checks_host_key_and_content_type(tmp_path):
    from fastapi.testclient import TestClient

    from seektune.studio.app import build_studio_app

    app = build_studio_app(tmp_path / "runs", token="s3cret", start_jobs=False)
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/").status_code == 200 and client.get("/static/studio.js").status_code == 200
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    session = client.post("/api/session", json={}, headers={"Authorization": "Bearer s3cret"})
    assert "samesite=strict" in session.headers["set-cookie"].lower()
    assert client.get("/api/runs").status_code == 200  # the cookie now
    client.cookies.clear()
    evil = TestClient(app, base_url="http://evil.example")
    assert evil.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 400
    form = client.post("/api/recipes/set", content=b"recipe=x", headers={
        "Authorization": "Bearer s3cret", "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    docs = client.get("/docs", headers={"Authorization": "Bearer s3cret"}).text
    assert "/api/jobs/{job_id}/events" in docs and "/api/recipes/validate" in docs


def test_an_evaluated_run_is_listed_with_its_figures_report_and_comparison(studio):
    from seektune.recipe import load_recipe
    from seektune.runs import RunDir

    runs_dir = studio.app.state.studio.catalog.runs_dir
    run = RunDir(runs_dir / "cs")
    recipe = load_recipe(None, ["model=smollm2-135m-instruct", f"output_dir={run.path}"])
    run.save_recipe(recipe)
    run.metrics.parent.mkdir(parents=True)
    run.metrics.write_text(json.dumps({"base": {"fact_accuracy": 0.0}, "tuned": {"fact_accuracy": 0.5, "rougeL": 0.4}}))
    run.report_html.write_text("<h1>Report of cs</h1><script>alert(1)</script>")

    listed = studio.get("/api/runs").json()["runs"]
    assert [(r["name"], r["status"]) for r in listed] == [("cs", "evaluated")]
    assert listed[0]["metrics"]["fact_accuracy"] == {"tuned": 0.5, "base": 0.0}
    detail = studio.get("/api/runs/cs").json()
    assert detail["has_report"] and not detail["has_card"] and detail["exports"]["onnx"] == {"done": False,
                                                                                             "parity": None}
    report = studio.get("/api/runs/cs/report")
    assert report.status_code == 200 and "sandbox" in report.headers["content-security-policy"]
    assert "script-src" not in report.headers["content-security-policy"]  # default-src 'none': no script runs
    assert studio.get("/api/runs/cs/card").status_code == 404
    assert studio.get("/api/runs/nope").status_code == 404
    compared = studio.get("/api/compare?runs=cs").json()
    assert compared["rows"][0][0] == "cs" and compared["best"]["fact_accuracy"] == "cs"
    chat = studio.post("/api/runs/cs/chat", json={"messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 409 and "no trained model" in chat.json()["detail"]
    assert studio.post("/api/jobs", json={"name": "cs", "stage": "update"}).status_code == 409  # no feedback


def test_a_long_log_streams_its_tail_and_a_bar_without_newlines_does_not_stall(studio):
    from seektune.studio.app import LOG_TAIL

    runner = studio.app.state.studio.runner
    runner.command = [sys.executable, "-c", "import sys\nsys.stdout.write(('step ' + 'x' * 95 + '\\r') * 6000)\n"
                      "print('done')"]
    job = runner.submit("bars", "run", [])
    until(lambda: runner.store.get(job.id).status == "succeeded", runner)
    assert runner.log_path(job.id).stat().st_size > 2 * LOG_TAIL
    events = studio.get(f"/api/jobs/{job.id}/events").text
    lines = [line for chunk in events.split("\n\n") if chunk.startswith("event: log")
             for line in json.loads(chunk.split("data: ", 1)[1])["lines"]]
    assert lines[-1] == "done" and sum(len(line) for line in lines) <= LOG_TAIL
