"""The review store (``seektune/data/review.py``) and the review page's API (``seektune/synth/review_app.py``).

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_review_store.py

Records are built here in the form `seektune synth` writes them. The API runs in FastAPI's TestClient:
decisions, stale versions (409), refused decisions (400), unknown ids (404), and the guard (Host 400,
token 401, cross-origin 403, body 413, non-JSON 415, security headers on every answer).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from urllib.parse import quote

import pytest

from seektune.data.io import RawRow, read_rows
from seektune.data.review import ReviewError, ReviewStore, StaleDecision, training_rows

CHUNK = ("Returns\n\nYou can return any item within 30 days of delivery. Refunds go to the original payment "
         "method within 5 business days. Opened software cannot be returned.")
HOSTILE = "<img src=x onerror=alert(1)> and <script>alert(2)</script>"


def record(n: int, question: str, answer: str, *, document: str = "handbook.md", facts=(), support=((0, 20),),
           warnings=(), kind: str = "factual", chunk: str = CHUNK, reasoning: str | None = None,
           pair_id: str | None = None) -> dict:
    """One pair as `seektune synth` stores it."""
    chunk_id = f"{document}#c{n}"
    assistant = {"role": "assistant", "content": answer}
    if reasoning is not None:
        assistant["reasoning"] = reasoning
    return {
        "messages": [{"role": "user", "content": question}, assistant],
        "meta": {"id": pair_id or f"p{n}", "origin": chunk_id, "kind": kind, "synthetic": True, "facts": list(facts),
                 "support": [list(s) for s in support], "warnings": list(warnings),
                 "source": {"document": document, "chunk_id": chunk_id, "text": chunk,
                            "sha256": hashlib.sha256(chunk.encode()).hexdigest(), "page": None,
                            "heading": "Returns"}},
    }


RECORDS = [
    record(1, "How long do I have to return an item?", "You have 30 days from delivery.", facts=["30 days"],
           support=[(18, 68)]),
    record(2, "Where does a refund go?", "To the original payment method, within 5 business days.",
           facts=["original payment method", "5 business days"], reasoning="The chunk says so."),
    record(3, "Can I return opened software?", "Yes, always.", warnings=["answer_partly_unsupported"]),
    record(4, HOSTILE, HOSTILE, document="policies.md", kind="out_of_scope", warnings=["no_support"]),
]


@pytest.fixture
def store(tmp_path) -> ReviewStore:
    store = ReviewStore(tmp_path / "synth" / "review.sqlite")
    assert store.add(RECORDS) == 4
    return store


# ------------------------------------------------------------------ the store


def test_add_is_idempotent_and_keeps_decisions(store):
    store.decide("p1", "accepted", "ann")
    assert store.add(RECORDS + [record(5, "Is shipping free?", "Over 50 euros, yes.")]) == 1
    pairs = store.pairs()
    assert [p.id for p in pairs] == ["p1", "p2", "p3", "p4", "p5"]
    assert [p.position for p in pairs] == [0, 1, 2, 3, 4]
    assert pairs[0].status == "accepted" and pairs[0].reviewer == "ann" and pairs[0].version == 1
    assert store.counts() == {"pending": 4, "accepted": 1, "edited": 0, "rejected": 0}
    assert store.documents() == ["handbook.md", "policies.md"]
    assert [p.id for p in store.pairs(warning="no_support")] == ["p4"]
    assert [p.id for p in store.pairs(document="handbook.md", status="pending")] == ["p2", "p3", "p5"]
    p4 = store.get("p4")
    assert (p4.question, p4.kind, p4.chunk, p4.support) == (HOSTILE, "out_of_scope", CHUNK, [[0, 20]])


@pytest.mark.parametrize(("status", "kwargs", "message"), [
    ("rejected", {}, "needs a reason"),
    ("rejected", {"reason": "   "}, "needs a reason"),
    ("edited", {"answer": "  "}, "question and an answer"),
    ("edited", {"question": ""}, "question and an answer"),
    ("approved", {}, "status must be one of"),
    ("accepted", {"reviewer": "  "}, "reviewer's name"),
    ("edited", {"answer": "x" * 20_001}, "longer than"),
])
def test_decide_refuses_incomplete_decisions_and_records_nothing(store, status, kwargs, message):
    reviewer = kwargs.pop("reviewer", "ann")
    with pytest.raises(ReviewError, match=message):
        store.decide("p1", status, reviewer, **kwargs)
    assert store.get("p1").status == "pending" and store.get("p1").version == 0
    assert store.decisions() == []


def test_decide_on_an_unknown_pair_is_a_review_error(store):
    with pytest.raises(ReviewError, match="no pair 'nope'"):
        store.decide("nope", "accepted", "ann")


def test_a_stale_version_is_refused_and_the_first_decision_stands(store):
    first = store.decide("p2", "accepted", "ann", version=0)
    assert first.version == 1
    with pytest.raises(StaleDecision, match="changed since it was shown"):
        store.decide("p2", "rejected", "bob", version=0, reason="wrong")
    pair = store.get("p2")
    assert (pair.status, pair.reviewer, pair.version) == ("accepted", "ann", 1)
    assert isinstance(StaleDecision("x"), ReviewError)  # callers that catch ReviewError catch this too
    assert store.decide("p2", "rejected", "bob", version=None, reason="wrong").version == 2  # None: no check


def test_an_edit_that_changes_nothing_is_an_acceptance(store):
    pair = store.decide("p1", "edited", "ann", question=RECORDS[0]["messages"][0]["content"])
    assert (pair.status, pair.edited_question, pair.edited_answer) == ("accepted", None, None)


def test_every_decision_goes_to_the_audit_log(store):
    store.decide("p3", "rejected", "ann", reason="opened software cannot be returned")
    store.decide("p3", "pending", "ann")
    store.decide("p3", "edited", "bob", answer="No: opened software cannot be returned.")
    log = store.decisions("p3")
    assert [(d["status"], d["reviewer"]) for d in log] == [("rejected", "ann"), ("pending", "ann"), ("edited", "bob")]
    assert log[0]["reason"] == "opened software cannot be returned"
    assert log[2]["answer"] == "No: opened software cannot be returned."
    assert [d["seq"] for d in log] == sorted(d["seq"] for d in log)
    pending = store.get("p3")
    assert pending.status == "edited" and pending.reason is None and pending.version == 3
    assert store.decisions("p1") == []


def test_training_rows_are_exactly_the_accepted_and_edited_pairs(store):
    store.decide("p1", "accepted", "ann")
    store.decide("p2", "edited", "ann", answer="To the original payment method.")  # "5 business days" edited out
    store.decide("p3", "rejected", "ann", reason="unsupported")
    rows = list(training_rows(store.path))
    assert [origin for origin, _ in rows] == ["review.sqlite:handbook.md#c1", "review.sqlite:handbook.md#c2"]
    accepted, edited = (row for _, row in rows)
    assert accepted == {"messages": RECORDS[0]["messages"], "id": "p1", "facts": ["30 days"], "category": "factual",
                        "group": "handbook.md#c1"}
    assert edited["messages"] == [{"role": "user", "content": "Where does a refund go?"},
                                  {"role": "assistant", "content": "To the original payment method."}]  # no reasoning
    assert edited["facts"] == ["original payment method"]
    # the prepare reader gets the same rows
    read = list(read_rows([store.path]))
    assert all(isinstance(r, RawRow) for r in read)
    assert [(r.origin, r.data["id"]) for r in read] == [(o, row["id"]) for o, row in rows]


def test_opening_something_else_as_a_store_refuses_and_changes_nothing(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    db.close()
    before = other.read_bytes()
    with pytest.raises(ReviewError, match="not a seektune review store"):
        ReviewStore(other, create=False)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]  # no -wal / -shm left behind

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all, just some bytes" * 10)
    before = garbage.read_bytes()
    with pytest.raises(ReviewError, match="not an SQLite database"):
        ReviewStore(garbage, create=False)
    assert garbage.read_bytes() == before

    missing = tmp_path / "missing.sqlite"
    with pytest.raises(ReviewError, match="no review store"):
        ReviewStore(missing, create=False)
    assert not missing.exists()


# ------------------------------------------------------------------ the API

@pytest.fixture
def client(store):
    from fastapi.testclient import TestClient

    from seektune.synth.review_app import build_review_app

    return TestClient(build_review_app(store.path), base_url="http://127.0.0.1:8010")


def decide(client, pair_id, **body):
    return client.post(f"/api/pairs/{quote(pair_id, safe='')}/decision", json={"reviewer": "ann", **body})


def test_the_page_and_its_files_load_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in csp
    assert '<script src="static/review.js" defer></script>' in page.text
    assert "<script>" not in page.text and "<style>" not in page.text and "http" not in page.text.split("<body")[1]
    script = client.get("/static/review.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    assert client.get("/static/review.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/../review_app.py").status_code == 404
    assert client.get("/static/review.html.j2").status_code == 404
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


def test_list_filters_and_counts(client, store):
    store.decide("p1", "accepted", "ann")
    data = client.get("/api/pairs").json()
    assert [p["id"] for p in data["pairs"]] == ["p1", "p2", "p3", "p4"]
    assert data["counts"] == {"pending": 3, "accepted": 1, "edited": 0, "rejected": 0} and data["total"] == 4
    assert data["documents"] == ["handbook.md", "policies.md"]
    assert data["warnings"] == ["answer_partly_unsupported", "no_support"]
    assert "chunk" not in data["pairs"][0] and data["pairs"][3]["question"] == HOSTILE
    assert [p["id"] for p in client.get("/api/pairs?status=pending").json()["pairs"]] == ["p2", "p3", "p4"]
    assert [p["id"] for p in client.get("/api/pairs?document=policies.md").json()["pairs"]] == ["p4"]
    only = client.get("/api/pairs", params={"warning": "answer_partly_unsupported"}).json()
    assert [p["id"] for p in only["pairs"]] == ["p3"] and only["total"] == 4  # counts stay the whole store's
    bad = client.get("/api/pairs?status=maybe")
    assert bad.status_code == 400 and "status" in bad.json()["detail"]


def test_one_pair_with_its_chunk(client):
    pair = client.get("/api/pairs/p1").json()
    assert pair["chunk"] == CHUNK and pair["support"] == [[18, 68]] and pair["facts"] == ["30 days"]
    assert pair["version"] == 0 and pair["status"] == "pending" and "record" not in pair
    missing = client.get("/api/pairs/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_decisions_through_the_api(client, store):
    accepted = decide(client, "p1", status="accepted", version=0)
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted" and accepted.json()["version"] == 1
    edited = decide(client, "p2", status="edited", version=0, answer="To your card.")
    assert edited.json()["edited_answer"] == "To your card." and edited.json()["status"] == "edited"
    undone = decide(client, "p1", status="pending", version=1)
    assert undone.json()["status"] == "pending" and undone.json()["version"] == 2
    assert [d["status"] for d in store.decisions("p1")] == ["accepted", "pending"]


def test_a_stale_decision_is_409_with_the_current_pair(client):
    assert decide(client, "p1", status="accepted", version=0).status_code == 200
    stale = decide(client, "p1", status="rejected", version=0, reason="no")
    assert stale.status_code == 409
    assert "changed since it was shown" in stale.json()["detail"]
    assert stale.json()["pair"]["status"] == "accepted" and stale.json()["pair"]["version"] == 1


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"status": "rejected", "version": 0}, 400, "needs a reason"),
    ({"status": "edited", "version": 0, "answer": " "}, 400, "question and an answer"),
    ({"status": "accepted", "version": 0, "reviewer": ""}, 400, "reviewer's name"),
    ({"status": "approved", "version": 0}, 400, "status"),
    ({"status": "accepted"}, 400, "version"),
    ({"status": "accepted", "version": -1}, 400, "version"),
    ({"status": "accepted", "version": 0, "path": "/etc/passwd"}, 400, "path"),  # extra fields are refused
    ({"status": "edited", "version": 0, "answer": "x" * 20_001}, 400, "answer"),
    ({"status": "accepted", "version": 0, "reviewer": "r" * 201}, 400, "reviewer"),
])
def test_refused_decisions_are_400_naming_the_problem(client, store, body, status, message):
    response = decide(client, "p1", **body)
    assert response.status_code == status and message in response.json()["detail"], response.json()
    assert store.get("p1").version == 0


def test_a_decision_on_an_unknown_pair_is_404(client):
    response = decide(client, "nope", status="accepted", version=0)
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_ids_with_slashes_and_hashes_round_trip(tmp_path):
    from fastapi.testclient import TestClient

    from seektune.synth.review_app import build_review_app

    store = ReviewStore(tmp_path / "review.sqlite")
    store.add([record(1, "Q?", "A.", pair_id="handbook.md#c1/q0")])
    client = TestClient(build_review_app(store.path), base_url="http://localhost")
    assert client.get("/api/pairs/" + quote("handbook.md#c1/q0", safe="")).json()["id"] == "handbook.md#c1/q0"
    assert decide(client, "handbook.md#c1/q0", status="accepted", version=0).json()["status"] == "accepted"


def test_the_guard_checks_host_token_origin_type_and_size(store):
    from fastapi.testclient import TestClient

    from seektune.synth.review_app import build_review_app

    app = build_review_app(store.path, token="s3cret")
    client = TestClient(app, base_url="http://localhost:8010")
    auth = {"Authorization": "Bearer s3cret"}

    rebound = client.get("/api/pairs", headers={"Host": "evil.example", **auth})
    assert rebound.status_code == 400 and "evil.example" in rebound.json()["detail"]
    assert rebound.headers["content-security-policy"] and rebound.headers["x-content-type-options"] == "nosniff"
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400

    assert client.get("/").status_code == 200  # the page loads without the token, then asks for it
    assert 'data-token-required="true"' in client.get("/").text
    assert client.get("/static/review.js").status_code == 200
    for path in ("/api/pairs", "/api/pairs/p1", "/anything"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/pairs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/pairs", headers=auth).status_code == 200
    assert decide(client, "p1", status="accepted", version=0).status_code == 401

    url = "/api/pairs/p1/decision"
    body = json.dumps({"status": "accepted", "reviewer": "ann", "version": 0})
    form = client.post(url, content="status=accepted",
                       headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    plain = client.post(url, content=body, headers={**auth, "Content-Type": "text/plain"})
    assert plain.status_code == 415  # what a cross-site fetch without a preflight could send
    foreign = client.post(url, content=body, headers={**auth, "Content-Type": "application/json",
                                                       "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    huge = json.dumps({"status": "edited", "reviewer": "ann", "version": 0, "answer": "x" * 70_000})
    too_big = client.post(url, content=huge, headers={**auth, "Content-Type": "application/json"})
    assert too_big.status_code == 413 and too_big.json()["detail"] == "Request body is larger than 65536 bytes."

    def trickle():  # no Content-Length: the cap holds while the body streams in
        for _ in range(80):
            yield b"x" * 1024
    streamed = client.post(url, content=trickle(), headers={**auth, "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert store.get("p1").version == 0 and store.decisions() == []

    ok = client.post(url, content=body, headers={**auth, "Content-Type": "application/json; charset=utf-8",
                                                  "Origin": "http://localhost:8010"})
    assert ok.status_code == 200 and ok.json()["status"] == "accepted"


def test_default_hosts_are_loopback_and_star_answers_any(store):
    from fastapi.testclient import TestClient

    from seektune.synth.review_app import build_review_app

    assert TestClient(build_review_app(store.path)).get("/api/pairs").status_code == 400  # Host: testserver
    for host in ("localhost", "127.0.0.1:8010", "[::1]:8010"):
        assert TestClient(build_review_app(store.path)).get("/", headers={"Host": host}).status_code == 200
    assert TestClient(build_review_app(store.path, allowed_hosts=["*"])).get("/api/pairs").status_code == 200
    named = TestClient(build_review_app(store.path, allowed_hosts=["review.lan"]), base_url="http://review.lan:80")
    assert named.get("/api/pairs").status_code == 200


def test_the_page_escapes_the_store_name(tmp_path):
    from fastapi.testclient import TestClient

    from seektune.synth.review_app import build_review_app

    run = tmp_path / "<img src=x onerror=alert(1)>"
    store = ReviewStore(run / "synth" / "review.sqlite")
    store.add(RECORDS[:1])
    page = TestClient(build_review_app(store.path), base_url="http://localhost").get("/").text
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


# ------------------------------------------------------------------ the command


def test_resolve_store_takes_a_run_or_a_file_and_names_what_is_missing(tmp_path, store):
    from seektune.runs import RunDir
    from seektune.synth.review_app import page_url, resolve_store

    run = store.path.parent.parent
    assert resolve_store(run) == RunDir(run).review_store == store.path
    assert resolve_store(store.path) == store.path
    with pytest.raises(ReviewError, match=r"no review store at .*empty.synth.review\.sqlite: run `seektune synth"):
        resolve_store(tmp_path / "empty")
    assert page_url("127.0.0.1", 8010) == "http://127.0.0.1:8010/"
    assert page_url("0.0.0.0", 1) == "http://127.0.0.1:1/" and page_url("::1", 2) == "http://[::1]:2/"


def test_review_without_a_store_is_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from seektune.cli import app

    result = CliRunner().invoke(app, ["review", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "no review store at" in result.output and "seektune synth RECIPE" in result.output
    other = tmp_path / "notes.sqlite"
    sqlite3.connect(other).close()
    result = CliRunner().invoke(app, ["review", str(other)])
    assert result.exit_code == 2 and "not a seektune review store" in result.output
