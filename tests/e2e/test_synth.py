"""`seektune synth` against a deterministic stub teacher (an OpenAI-compatible endpoint in a thread).

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_synth.py

The stub writes a question from the text it is shown, so every run of the same prompts gives the
same rows; a mode switches it to the failures a real teacher has (garbage, empty replies, the
wrong language, answers the chunk does not support) and each must be dropped with its reason.
A run killed with SIGKILL half-way and run again asks no prompt twice and ends with the rows of
an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from seektune.data.io import read_jsonl
from seektune.data.review import ReviewStore
from tests.conftest import cli, serve_http

HANDBOOK = Path(__file__).resolve().parents[2] / "examples" / "customer-service" / "docs" / "handbook.md"
HANDBOOK_ZH = HANDBOOK.with_name("handbook_zh.md")
OUT_OF_SCOPE = ["What is the best recipe for banana bread?", "Will it rain in Chicago tomorrow?",
                "Which stocks should I buy this year?", "How do I fix a leaking car radiator?"]


class StubTeacher(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions from the prompt alone. Class attributes steer it (tests run one at a time)."""

    mode = "good"
    answered: Counter = Counter()  # prompt hash -> replies sent
    received = 0
    block_at: int | None = None  # the Nth request is held, never answered (the client is killed meanwhile)
    release = threading.Event()
    lock = threading.Lock()

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        with StubTeacher.lock:
            StubTeacher.received += 1
            number = StubTeacher.received
        if StubTeacher.block_at is not None and number >= StubTeacher.block_at:
            StubTeacher.release.wait(timeout=60)
            return  # no reply: the client was killed while waiting
        reply = self.reply(prompt, body)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        key = hashlib.sha256(json.dumps([body["messages"], body.get("seed")]).encode()).hexdigest()
        with StubTeacher.lock:
            StubTeacher.answered[key] += 1

    @classmethod
    def reply(cls, prompt: str, body: dict) -> str:
        text = prompt.split("\n\n", 1)[-1]
        shown = re.split(r"^(?:Text|内容|1\.)\s*[:：]?\s*", text, maxsplit=1, flags=re.M)[-1]  # what to ask about
        words = [w for w in re.findall(r"[A-Za-z]{4,}", shown) if w.lower() not in ("larkspur", "goods")]
        chinese = re.findall(r"[\u4e00-\u9fff]{2,6}", shown)
        if cls.mode == "garbage":
            return "Passage: " + " ".join(words[:3])
        if cls.mode == "empty":
            return ""
        if cls.mode == "chinese":
            return "请问退货政策是什么样的呢？"
        if "fully support the answer" in prompt:  # the judge check
            return "no" if cls.mode == "judge_no" else "yes"
        if "does not cover" in prompt or "没有涉及" in prompt:
            return OUT_OF_SCOPE[(body.get("seed") or 0) % len(OUT_OF_SCOPE)]
        if "Reply in exactly two lines" in prompt:  # generate mode
            body = shown.strip().split("\n", 1)[-1]  # the chunk without its heading line
            sentence = re.split(r"(?<=\.)\s", body.strip())[0]
            words = [w for w in re.findall(r"[A-Za-z]{4,}", sentence) if w.lower() not in ("larkspur", "goods")]
            if cls.mode == "unsupported":
                sentence = re.sub(r"\d+", "977", sentence) if re.search(r"\d", sentence) else \
                    "Our managers approve every exception personally by telegram."
            return f"Q: What should I know about {' '.join(words[:3]).lower()}?\nA: {sentence}"
        if chinese:
            return f"请问{chinese[0]}{chinese[-1]}是怎么规定的？"
        seed = body.get("seed") or 0
        return f"Question {seed}: What should I know about {' '.join(words[:3 + seed % 2]).lower()}?"


@pytest.fixture()
def stub_teacher():
    StubTeacher.mode = "good"
    StubTeacher.answered = Counter()
    StubTeacher.received = 0
    StubTeacher.block_at = None
    StubTeacher.release = threading.Event()
    yield from serve_http(StubTeacher)
    StubTeacher.release.set()


def write_synth_recipe(path: Path, model: Path, teacher: str, output_dir: Path, documents=None, **synth) -> Path:
    recipe = {"model": str(model), "output_dir": str(output_dir),
              "synth": {"documents": [str(d) for d in (documents or [HANDBOOK])], "teacher": teacher,
                        "api_key_env": None, "retries": 0, "workers": 2, **synth}}
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def test_handbook_rows_are_grounded_in_their_chunks_with_provenance(tmp_path, tiny_llama, stub_teacher):
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "run", max_chunks=30)
    result = cli("synth", recipe)
    summary = json.loads((tmp_path / "run" / "synth" / "summary.json").read_text())
    assert "generated" in result.output and "kept" in result.output and "seektune review" in result.output
    assert summary["kept"] > 20 and summary["generated"] == summary["prompts"]
    rejects = read_jsonl(tmp_path / "run" / "synth" / "rejects.jsonl")
    # every reply is a row or a reject; an answer no teacher question passed for gets a template question
    assert summary["kept"] + len(rejects) == summary["prompts"] + summary["template_questions"]
    assert sum(summary["dropped"].values()) == len(rejects)
    assert summary["dropped"].get("duplicate", 0) > 0  # greedy and sampled variants often ask the same
    chunks = {c["id"]: c for c in read_jsonl(tmp_path / "run" / "synth" / "chunks.jsonl")}
    store = ReviewStore(tmp_path / "run" / "synth" / "review.sqlite")
    pairs = store.pairs()
    assert len(pairs) == summary["kept"] and all(p.status == "pending" for p in pairs)
    kinds = Counter(p.kind for p in pairs)
    assert kinds["factual"] > 0 and kinds["out_of_scope"] > 0 and kinds["procedure"] > 0
    with_facts = 0
    for pair in pairs:
        meta = pair.record["meta"]
        assert meta["synthetic"] is True and meta["prompt_version"]
        assert stub_teacher in meta["teacher"] or (meta["teacher"] == "template" and "template_question" in
                                                   meta["warnings"])
        if pair.kind == "out_of_scope":
            assert pair.answer.startswith("I'm sorry") and meta["facts"] == []
            continue
        source = meta["source"]
        for chunk_id in source["chunk_id"].split("+"):
            assert chunk_id in chunks and chunks[chunk_id]["text"] in source["text"]
        assert hashlib.sha256(source["text"].encode()).hexdigest() == source["sha256"]
        assert pair.origin.startswith("handbook.md#c")
        for fact in meta["facts"]:
            assert fact in source["text"]  # every kept answer's facts occur in its source chunk
        with_facts += bool(meta["facts"])
        assert pair.support and all(0 <= a < b <= len(pair.chunk) for a, b in pair.support)
    assert with_facts >= 10

    flat = read_jsonl(tmp_path / "run" / "synth" / "rows.jsonl")
    assert [r["id"] for r in flat] == [p.id for p in pairs]


def test_a_killed_run_resumes_without_asking_twice_or_losing_rows(tmp_path, tiny_llama, stub_teacher):
    settings = dict(max_chunks=4, workers=1, out_of_scope=2)
    reference = write_synth_recipe(tmp_path / "ref.yaml", tiny_llama, stub_teacher, tmp_path / "ref", **settings)
    cli("synth", reference)
    expected = read_jsonl(tmp_path / "ref" / "synth" / "rows.jsonl")
    prompts = json.loads((tmp_path / "ref" / "synth" / "summary.json").read_text())["prompts"]
    assert prompts > 12

    StubTeacher.answered = Counter()
    StubTeacher.received = 0
    StubTeacher.block_at = 10  # answer 9 prompts, then hold the 10th until the process is gone
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "run", **settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, "-m", "seektune", "synth", str(recipe)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while StubTeacher.received < 10 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert StubTeacher.received >= 10, process.stderr.read().decode()[-2000:] if process.poll() is not None else ""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    StubTeacher.release.set()
    cache = tmp_path / "run" / "synth" / "teacher_cache.jsonl"
    assert len(cache.read_text().splitlines()) == 9 and not (tmp_path / "run" / "synth" / "rows.jsonl").exists()

    StubTeacher.block_at = None
    result = cli("synth", recipe)
    assert "9 answered before" in result.output
    assert max(StubTeacher.answered.values()) == 1  # no prompt was answered twice across the two runs
    assert sum(StubTeacher.answered.values()) == prompts
    assert read_jsonl(tmp_path / "run" / "synth" / "rows.jsonl") == expected
    cli("synth", recipe)  # a third run asks nothing and adds nothing
    assert sum(StubTeacher.answered.values()) == prompts
    assert len(ReviewStore(tmp_path / "run" / "synth" / "review.sqlite").pairs()) == len(expected)


@pytest.mark.parametrize("mode, reason", [("garbage", "garbage"), ("empty", "garbage"),
                                          ("chinese", "wrong_language")])
def test_a_bad_teacher_is_filtered_with_the_reason(tmp_path, tiny_llama, stub_teacher, mode, reason):
    StubTeacher.mode = mode
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "run", max_chunks=3,
                                out_of_scope=2, templates=False)
    cli("synth", recipe)
    summary = json.loads((tmp_path / "run" / "synth" / "summary.json").read_text())
    assert summary["kept"] == 0 and summary["dropped"] == {reason: summary["prompts"]}
    reasons = {r["reason"] for r in read_jsonl(tmp_path / "run" / "synth" / "rejects.jsonl")}
    assert reasons == {reason}
    # with the template fallback (the default) each chosen sentence still gets a row, marked for the reviewer
    recipe = write_synth_recipe(tmp_path / "t.yaml", tiny_llama, stub_teacher, tmp_path / "templated", max_chunks=3,
                                out_of_scope=2)
    cli("synth", recipe)
    pairs = ReviewStore(tmp_path / "templated" / "synth" / "review.sqlite").pairs()
    assert pairs and all("template_question" in p.warnings and p.kind in ("factual", "procedure") for p in pairs)


def test_generated_answers_the_chunk_does_not_support_are_dropped(tmp_path, tiny_llama, stub_teacher):
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "good", max_chunks=6,
                                answer_mode="generate", questions_per_chunk=1, out_of_scope=0, procedure=False)
    cli("synth", recipe)
    good = json.loads((tmp_path / "good" / "synth" / "summary.json").read_text())
    assert good["kept"] >= 3 and "unsupported" not in good["dropped"]

    StubTeacher.mode = "unsupported"
    recipe = write_synth_recipe(tmp_path / "s2.yaml", tiny_llama, stub_teacher, tmp_path / "bad", max_chunks=6,
                                answer_mode="generate", questions_per_chunk=1, out_of_scope=0, procedure=False)
    cli("synth", recipe)
    bad = json.loads((tmp_path / "bad" / "synth" / "summary.json").read_text())
    assert bad["dropped"].get("unsupported", 0) >= good["kept"] - 1 and bad["kept"] <= 1


def test_chinese_documents_give_chinese_rows_and_a_chinese_refusal(tmp_path, tiny_llama, stub_teacher):
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "run",
                                documents=[HANDBOOK_ZH], max_chunks=4, out_of_scope=1)
    StubTeacher.mode = "good"
    cli("synth", recipe)
    pairs = ReviewStore(tmp_path / "run" / "synth" / "review.sqlite").pairs()
    factual = [p for p in pairs if p.kind != "out_of_scope"]
    assert factual and all(re.search(r"[\u4e00-\u9fff]", p.question + p.answer) for p in factual)


def test_bad_documents_are_listed_and_the_good_one_is_used(tmp_path, tiny_llama, stub_teacher):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "handbook.md").write_text(HANDBOOK.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    (docs / "empty.md").write_text("  \n", encoding="utf-8")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    (docs / "latin1.txt").write_bytes("Caf\xe9 opening hours".encode("latin-1"))
    (docs / "notes.xyz").write_text("what is this", encoding="utf-8")
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "run", documents=[docs],
                                out_of_scope=0)
    result = cli("synth", recipe)
    summary = json.loads((tmp_path / "run" / "synth" / "summary.json").read_text())
    failed = {f["document"]: f["reason"] for f in summary["unreadable_documents"]}
    assert failed == {"empty.md": "empty", "binary.txt": "binary", "latin1.txt": "invalid_utf8",
                      "notes.xyz": "unsupported_type"}
    assert [d["name"] for d in summary["documents"]] == ["handbook.md"] and summary["kept"] > 0
    assert "skipping binary.txt: binary" in result.output
    read_rejects = [r for r in read_jsonl(tmp_path / "run" / "synth" / "rejects.jsonl") if r["step"] == "read"]
    assert {r["origin"] for r in read_rejects} == set(failed)


def test_no_synth_section_and_no_readable_document_are_one_line_errors(tmp_path, tiny_llama, stub_teacher):
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"model": str(tiny_llama), "output_dir": str(tmp_path / "r")}), encoding="utf-8")
    assert "no synth: section" in cli("synth", plain, exit_code=2).output
    (tmp_path / "empty.md").write_text("", encoding="utf-8")
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "run",
                                documents=[tmp_path / "empty.md"])
    assert "no readable document" in cli("synth", recipe, exit_code=2).output


def test_the_judge_drops_what_it_calls_unsupported_and_reasoning_is_added(tmp_path, tiny_llama, stub_teacher):
    recipe = write_synth_recipe(tmp_path / "s.yaml", tiny_llama, stub_teacher, tmp_path / "yes", max_chunks=6,
                                out_of_scope=1, judge=True, reasoning=True)
    cli("synth", recipe)
    kept = ReviewStore(tmp_path / "yes" / "synth" / "review.sqlite").pairs()
    assert kept and all(p.reasoning for p in kept)
    assert "judge_unsupported" not in json.loads((tmp_path / "yes" / "synth" / "summary.json").read_text())["dropped"]

    StubTeacher.mode = "judge_no"
    recipe = write_synth_recipe(tmp_path / "s2.yaml", tiny_llama, stub_teacher, tmp_path / "no", max_chunks=6,
                                out_of_scope=1, judge=True)
    cli("synth", recipe)
    summary = json.loads((tmp_path / "no" / "synth" / "summary.json").read_text())
    assert summary["dropped"]["judge_unsupported"] == len([p for p in kept if p.kind != "out_of_scope"])
    assert summary["kept_by_kind"] == {"out_of_scope": 1}  # refusals are not judged
