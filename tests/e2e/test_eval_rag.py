"""`seektune eval --rag INDEX --out-of-scope FILE`: base, base+rag, tuned and tuned+rag scored on one test split.

The baseline is an OpenAI-compatible endpoint whose answers are known by hand (it copies passage [1] and cites
it, and says it does not know when given no passages), so the grounding scores have exact expected values; the
tuned system is a tiny local model, so the local generation path (batches, cache) runs too. The index holds one
chunk with every English fact of the FAQ fixture, built with the hashing embedder (no encoder to load)."""

import json
import re
from http.server import BaseHTTPRequestHandler

import pytest

from seektune.data.io import read_jsonl
from seektune.evaluate import stage
from seektune.evaluate.retrieval import COUNTS, SCORES
from seektune.rag.index import Index
from seektune.recipe import load_recipe
from seektune.train.run import run as train
from tests.conftest import cli, send_json, serve_http, write_faq, write_recipe

POLICY = "Returns are accepted within 45 days of delivery. Standard shipping costs $4.95. The warranty plan is " \
         "called LarkCare."
ORDER = ["base", "base+rag", "tuned", "tuned+rag"]


class PassageCopier(BaseHTTPRequestHandler):
    """Answers with passage [1] and cites it; without passages, says it does not know."""

    prompts: list[str] = []

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        PassageCopier.prompts.append(user)
        first = re.search(r"^\[1\] \S+[^\n]*\n(.*?)\n\n", user, re.S | re.M)
        content = f"{first.group(1).strip()} [1]" if first else "I don't know."
        send_json(self, {"choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}]})


@pytest.fixture(scope="module")
def copier():
    yield from serve_http(PassageCopier)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("ragrun")
    data = write_faq(root / "faq.jsonl")
    recipe_file = write_recipe(root / "r.yaml", tiny_llama, data, root / "run", train__max_steps=2,
                               eval__max_new_tokens=6)
    return train(load_recipe(recipe_file))


def _index(path, text=POLICY):
    with Index.open_or_create(path, encoder="hashing") as index:
        index.add_chunks("policy.md", [text])
    return path


def _out_of_scope(path):
    rows = [{"question": "Do you offer a student discount?", "answer": "I can't find that."},
            {"question": "What thread count are your sheets?", "answer": "I can't find that."},
            {"question": "你们有学生优惠吗？", "answer": "抱歉，找不到。"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _copy_run(run_dir, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoints", "eval", "report.*"))
    return target


def test_four_systems_scored_with_grounding_recall_and_refusals(trained_run, tmp_path, copier):
    run_dir = _copy_run(trained_run, tmp_path)
    index, scope = _index(tmp_path / "idx"), _out_of_scope(tmp_path / "oos.jsonl")
    test_rows = read_jsonl(run_dir / "data" / "test.jsonl")
    english = sum(1 for row in test_rows if all(f in POLICY for f in row["meta"]["facts"]))
    assert english >= 1

    plain = stage.run(run_dir, against=copier, against_model="copier")
    assert "rag" not in plain and 'id="rag-table"' not in (run_dir / "report.html").read_text()

    metrics = stage.run(run_dir, against=copier, against_model="copier", rag=index, rag_k=4, out_of_scope=scope)
    rag = metrics["rag"]
    assert rag["order"] == ORDER and rag["k"] == 4 and rag["index"]["chunks"] == 1
    for name in ORDER:
        assert set(rag["scores"][name]) == {*SCORES, *COUNTS.values()}
        assert rag["scores"][name]["n"] == len(test_rows) and rag["scores"][name]["refusal_n"] == 3
    for name in ("base", "tuned"):  # the plain systems read as in the main table; no passages, nothing to ground
        assert rag["scores"][name]["fact_accuracy"] == metrics[name]["fact_accuracy"]
        assert rag["scores"][name]["rougeL"] == metrics[name]["rougeL"]
        assert rag["ci"][name]["rougeL"] == metrics["ci"][name]["rougeL"]
        assert rag["scores"][name]["faithfulness"] is None and rag["scores"][name]["recall_at_k"] is None

    copied, base = rag["scores"]["base+rag"], rag["scores"]["base"]
    # the only chunk holds every English row's facts and no Chinese row's (45天): recall over the English rows
    assert copied["recall_at_k"] == 1.0 and copied["recall_n"] == english
    assert rag["scores"]["tuned+rag"]["recall_at_k"] == 1.0 and rag["scores"]["tuned+rag"]["recall_n"] == english
    # the copier repeats passage [1]: every claim is in it, every answer cites it, and [1] holds the English facts
    assert copied["faithfulness"] == 1.0 and copied["faithfulness_n"] == len(test_rows)
    assert copied["citation_rate"] == 1.0 and copied["citation_n"] == len(test_rows)
    assert copied["citation_accuracy"] == pytest.approx(english / len(test_rows))
    assert copied["fact_accuracy"] == pytest.approx(english / len(test_rows))
    # without passages it always says it does not know; with them it never declines, out of scope or not
    assert base["refusal_rate"] == 1.0 and base["refused_in_scope"] == 1.0
    assert copied["refusal_rate"] == 0.0 and copied["refused_in_scope"] == 0.0
    low, high = rag["ci"]["base+rag"]["fact_accuracy"]
    assert low <= copied["fact_accuracy"] <= high
    assert rag["out_of_scope"]["n"] == 3 and rag["out_of_scope"]["rows"][0]["refused"][0] == "base"
    assert rag["systems"]["base+rag"] == f"copier at {copier} + retrieval (k=4)"

    samples = read_jsonl(run_dir / "eval" / "samples.jsonl")
    assert all(s["retrieved"] == ["policy.md#c1"] and s["base+rag"].endswith("[1]") and "tuned+rag" in s
               for s in samples)
    assert json.loads((run_dir / "eval" / "metrics.json").read_text())["rag"]["order"] == ORDER
    html = (run_dir / "report.html").read_text()
    table = html.split('id="rag-table"', 1)[1].split("</table>", 1)[0]
    assert [re.sub(r"<.*", "", cell) for cell in re.findall(r"<tr><td>([^<]+)", table)] == ORDER
    assert table.count("<th>") == 9 and "refusals out of scope" in table and 'id="rag-chart"' in html
    assert '<a href="#rag">' in html


def test_a_changed_index_is_not_served_stale_answers(trained_run, tmp_path, copier):
    run_dir = _copy_run(trained_run, tmp_path)
    index = _index(tmp_path / "idx")
    first = stage.run(run_dir, against=copier, against_model="copier", rag=index, report=False)
    n = first["tuned"]["n"]
    assert first["cache"]["generated"] == {name: n for name in ORDER}

    again = stage.run(run_dir, against=copier, against_model="copier", rag=index, report=False)
    assert again["cache"]["reused"] == {name: n for name in ORDER}

    _index(index, POLICY + " Express shipping costs $14.50.")  # the document changed: new passages, new prompts
    PassageCopier.prompts.clear()
    changed = stage.run(run_dir, against=copier, against_model="copier", rag=index, report=False)
    assert changed["cache"]["reused"] == {"base": n, "tuned": n, "base+rag": 0, "tuned+rag": 0}
    assert len(PassageCopier.prompts) == n and all("$14.50" in p for p in PassageCopier.prompts)
    assert changed["rag"]["scores"]["base+rag"]["faithfulness"] == 1.0


def test_cli_prints_the_four_way_table_and_names_a_missing_index(trained_run, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    index, scope = _index(tmp_path / "idx"), _out_of_scope(tmp_path / "oos.jsonl")
    result = cli("eval", run_dir, "--rag", index, "--rag-k", 2, "--out-of-scope", scope, "max_rows=2")
    assert "with and without retrieval (k=2, 1 chunks; 3 out-of-scope questions)" in result.output
    for name in ORDER:
        assert re.search(rf"^\s*│?\s*{re.escape(name)}\s", result.output, re.M), name
    assert 'id="rag-table"' in (run_dir / "report.html").read_text()

    missing = cli("eval", run_dir, "--rag", tmp_path / "nowhere", exit_code=2)
    assert "no index at" in missing.output
    alone = cli("eval", run_dir, "--out-of-scope", scope, exit_code=2)
    assert "--rag" in alone.output
