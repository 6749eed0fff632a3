"""The run report, the run comparison and the data card page, on hand-written inputs (no model loaded).

Pages are checked as a browser would read them (parsed, not matched as markup): what text they show, that
text from files stays text, and that they need nothing outside themselves.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from seektune.data.card import length_stats, write_card
from seektune.data.card import render_html as render_card_html
from seektune.evaluate.figures import fmt, fmt_setting
from seektune.evaluate.report import build_report, compare_runs, compare_table_rows, write_report
from seektune.runs import RunDir

SCRIPT = "<script>alert('x')</script>"

METRICS = {
    "split": "test",
    "systems": {"base": "tiny-base", "tuned": "runs/fake (lora)"},
    "base": {
        "n": 6, "rougeL": 0.25, "rouge1": 0.3, "rouge2": 0.1, "bleu": 12.5, "chrf": 30.25, "fact_accuracy": 0.2,
        "distinct_1": 0.4, "distinct_2": 0.6, "exact_match": 0.0, "answer_chars": 80.5, "answer_words": 14.0,
        "perplexity": 21.5,
        "by_language": {"en": {"n": 4, "rougeL": 0.3, "bleu": 14.0, "fact_accuracy": 0.25},
                        "zh": {"n": 2, "rougeL": 0.15, "bleu": 9.5, "fact_accuracy": None}},
        "by_category": {"returns": {"n": 3, "rougeL": 0.2, "bleu": 10.0, "fact_accuracy": 0.0},
                        "shipping": {"n": 3, "rougeL": 0.3, "bleu": 15.0, "fact_accuracy": 0.5}},
    },
    "tuned": {
        "n": 6, "rougeL": 0.625, "rouge1": 0.65, "rouge2": 0.5, "bleu": 48.75, "chrf": 61.5, "fact_accuracy": 0.6,
        "distinct_1": 0.35, "distinct_2": 0.55, "exact_match": 0.5, "answer_chars": 60.25, "answer_words": 11.0,
        "perplexity": 3.75, "win_rate": 0.75, "judge_win_rate": 0.6,
        "by_language": {"en": {"n": 4, "rougeL": 0.7, "bleu": 50.0, "fact_accuracy": 0.75},
                        "zh": {"n": 2, "rougeL": 0.45, "bleu": 41.0, "fact_accuracy": None}},
        "by_category": {"returns": {"n": 3, "rougeL": 0.55, "bleu": 44.0, "fact_accuracy": 0.5},
                        "shipping": {"n": 3, "rougeL": 0.7, "bleu": 52.0, "fact_accuracy": 0.75}},
        "reasoning": {"rows": 6, "mean_words": 42.5},
    },
    "ci": {"base": {"rougeL": [0.125, 0.375]}, "tuned": {"rougeL": [0.4375, 0.8125]},
           "delta": {"rougeL": [0.1875, 0.5625]}},
    "ab": {"metric": "rougeL", "n": 6, "wins": 4, "ties": 1, "losses": 1, "win_rate": 0.75, "ci_low": 0.4166,
           "ci_high": 1.0, "p_value": 0.375, "bar": 0.7, "passed": True,
           "by_category": {"returns": {"n": 3, "wins": 2, "ties": 0, "losses": 1, "win_rate": 0.6667},
                           "shipping": {"n": 3, "wins": 2, "ties": 1, "losses": 0, "win_rate": 0.8333}}},
    "judge": {"metric": "judge (gpt-x)", "n": 5, "wins": 3, "ties": 0, "losses": 2, "win_rate": 0.6, "ci_low": 0.2,
              "ci_high": 1.0, "p_value": 1.0, "bar": 0.7, "passed": False, "errors": 1},
}

# (base_rougeL, tuned_rougeL): deltas +0.5, -0.25, +0.875, 0, -0.0625, +0.125, and one row without scores.
SCORES = [(0.25, 0.75), (0.5, 0.25), (0.0, 0.875), (0.4, 0.4), (0.3125, 0.25), (0.5, 0.625), (None, None)]


def _sample(i: int, base: float | None, tuned: float | None) -> dict:
    return {
        "origin": f"faq.jsonl:{i + 1}", "question": f"question {i}?", "reference": f"reference {i}.",
        "facts": [f"fact {i}"], "category": "returns" if i % 2 else "shipping",
        "tuned": SCRIPT if i == 2 else f"tuned answer {i}", "base": f"base answer {i} & <b>bold</b>",
        "base_rougeL": base, "tuned_rougeL": tuned, "judge": "win" if i % 3 else "loss",
        "tuned_reasoning": f"thinking about {i}",
    }


TRAIN = {
    "method": "lora", "trainable_parameters": 1000, "total_parameters": 50000, "train_rows": 40,
    "train_tokens": 2400, "steps": 30, "best_checkpoint": None, "train_runtime_s": 12.5, "first_loss": 2.5,
    "last_loss": 0.5, "eval_loss": 0.75,
    "log_history": [
        {"loss": 2.5, "learning_rate": 1e-3, "epoch": 0.33, "step": 10},
        {"eval_loss": 1.25, "eval_runtime": 0.5, "epoch": 0.33, "step": 10},
        {"loss": 1.0, "learning_rate": 5e-4, "epoch": 0.66, "step": 20},
        {"loss": 0.5, "learning_rate": 1e-5, "epoch": 1.0, "step": 30},
        {"eval_loss": 0.75, "eval_runtime": 0.5, "epoch": 1.0, "step": 30},
        {"train_runtime": 12.5, "train_loss": 1.3, "epoch": 1.0, "step": 30},
    ],
}

CARD = {
    "accounting": {"read": 60, "added": 2, "kept": 50, "rejected": 12},
    "splits": {"train": {"rows": 40, "tokens": {"count": 40}}, "val": {"rows": 4, "tokens": {"count": 4}},
               "test": {"rows": 6, "tokens": {"count": 6}}},
    "rejected_by_reason": {"filter/min_chars": 3, "dedup/exact": 7, "format/missing_answer": 2},
    "duplicates": {"exact": 7, "near": 0, "cluster_count": 0, "clusters": []},
    "leakage": [],
}

RECIPE = {
    "model": {"name": "tiny-base", "dtype": "auto"}, "task": "sft",
    "data": {"paths": ["faq.jsonl"]},
    "method": {"name": "lora", "r": 8, "alpha": 16.0, "dropout": 0.0},
    "train": {"epochs": 1.0, "max_steps": -1, "lr": 0.0005, "batch_size": 4, "seed": 7},
    "eval": {"split": "test"}, "output_dir": "runs/fake",
}

HUMAN = {"criteria": ["helpful", "correct"], "systems": {"base": {"helpful": 2.25, "correct": 1.5},
                                                          "tuned": {"helpful": 4.25, "correct": 3.75}},
         "alpha": {"helpful": 0.71, "correct": 0.64}, "raters": 3, "items": 20}


def make_fake_run(root: Path, *, metrics: dict | None = None, full: bool = True) -> Path:
    """A run directory as the stages leave it; ``full=False`` writes only eval/metrics.json."""
    run = Path(root)
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics or METRICS), encoding="utf-8")
    if not full:
        return run
    (run / "eval" / "samples.jsonl").write_text(
        "".join(json.dumps(_sample(i, b, t)) + "\n" for i, (b, t) in enumerate(SCORES)), encoding="utf-8")
    (run / "data").mkdir(exist_ok=True)
    (run / "data" / "card.json").write_text(json.dumps(CARD), encoding="utf-8")
    (run / "train.json").write_text(json.dumps(TRAIN), encoding="utf-8")
    (run / "recipe.resolved.yaml").write_text("# resolved\n" + yaml.safe_dump(RECIPE), encoding="utf-8")
    (run / "human_eval").mkdir(exist_ok=True)
    (run / "human_eval" / "results.json").write_text(json.dumps(HUMAN), encoding="utf-8")
    return run


EXTERNAL = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
BLOCK = {"div", "p", "pre", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "section", "header", "nav", "table",
         "details", "summary"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    """An element of a parsed page: what a browser would build, enough to ask what the page shows."""

    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs, self.children = tag, attrs, []

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag: str | None = None, *, cls: str | None = None) -> list[Node]:
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.attrs.get("class", "").split())]

    def by_id(self, element_id: str) -> Node:
        found = [n for n in self.walk() if n.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    @property
    def raw_text(self) -> str:
        """The text as it stands in the page (entities decoded), whitespace kept: what a <pre> shows."""
        return "".join(c.raw_text if isinstance(c, Node) else c for c in self.children)

    @property
    def text(self) -> str:
        """The visible text with runs of whitespace folded to one space, block elements apart."""
        return " ".join(self._spaced().split())

    def _spaced(self) -> str:
        return "".join((f" {c._spaced()} " if c.tag in BLOCK else c._spaced()) if isinstance(c, Node) else c
                       for c in self.children)

    def table(self) -> list[list[str]]:
        """Rows of cell texts (header rows included) of this table."""
        return [[cell.text for cell in row.children if isinstance(cell, Node) and cell.tag in ("td", "th")]
                for row in self.find_all("tr")]


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(node)
        if tag not in VOID:
            self.open.append(node)

    def handle_startendtag(self, tag, attrs):
        self.open[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data):
        self.open[-1].children.append(data)


def parse_html(page: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    return builder.root


def assert_self_contained(page: str) -> Node:
    """No script, no external resource: every src is inline data, every link stays in the page."""
    assert not EXTERNAL.findall(page) and "http://" not in page and "https://" not in page
    assert "@import" not in page
    doc = parse_html(page)
    assert doc.find_all("script") == [] and doc.find_all("link") == [] and doc.find_all("iframe") == []
    assert all(n.attrs["src"].startswith("data:") for n in doc.walk() if "src" in n.attrs)
    assert all(n.attrs["href"].startswith("#") for n in doc.walk() if "href" in n.attrs)
    assert not [(n.tag, a) for n in doc.walk() for a in n.attrs if a.startswith("on")]  # no event handler
    return doc


def rows_by_name(table: Node) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table.table() if row}


def inline_png(img: Node) -> bytes:
    prefix = "data:image/png;base64,"
    assert img.attrs["src"].startswith(prefix)
    return base64.b64decode(img.attrs["src"][len(prefix):], validate=True)


# ---------------------------------------------------------------- report.json


def test_report_json_holds_the_source_numbers(tmp_path):
    run = make_fake_run(tmp_path / "run")
    _, json_path = write_report(run)
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert set(report) == {"run", "created", "recipe", "data", "training", "eval", "rows", "human"}
    assert report["run"] == str(run)
    assert report["eval"] == METRICS
    assert report["training"] == TRAIN
    assert report["human"] == HUMAN
    assert report["data"] == {"accounting": CARD["accounting"], "splits": {"train": 40, "val": 4, "test": 6},
                              "rejected_by_reason": CARD["rejected_by_reason"]}
    assert report["recipe"] == {"model": "tiny-base", "task": "sft", "method": "lora", "r": 8, "alpha": 16.0,
                                "epochs": 1.0, "lr": 0.0005, "batch_size": 4, "max_steps": -1, "seed": 7}


def test_rows_won_and_lost_most_follow_the_per_row_delta(tmp_path):
    report = build_report(make_fake_run(tmp_path / "run"))
    deltas = [(t - b, i) for i, (b, t) in enumerate(SCORES) if b is not None]
    expected_won = [i for d, i in sorted(deltas, key=lambda x: -x[0]) if d > 0]
    expected_lost = [i for d, i in sorted(deltas, key=lambda x: x[0]) if d < 0]
    assert expected_won == [2, 0, 5] and expected_lost == [1, 4]  # the fixture is what the test thinks it is
    rows = report["rows"]
    assert rows["metric"] == "rougeL"
    assert [r["origin"] for r in rows["won_most"]] == [f"faq.jsonl:{i + 1}" for i in expected_won]
    assert [r["origin"] for r in rows["lost_most"]] == [f"faq.jsonl:{i + 1}" for i in expected_lost]
    assert rows["won_most"][0] == _sample(2, *SCORES[2])  # rows are copied as they are, nothing added


def test_rows_keep_at_most_five_and_show_scores_rounded(tmp_path):
    run = make_fake_run(tmp_path / "run")
    samples = [_sample(i, 0.0, 0.01 * (i + 1)) for i in range(9)] + [_sample(9 + i, 0.5, 0.1 * i) for i in range(4)]
    (run / "eval" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    rows = build_report(run)["rows"]
    assert [r["tuned_rougeL"] for r in rows["won_most"]] == pytest.approx([0.09, 0.08, 0.07, 0.06, 0.05])
    assert [r["tuned_rougeL"] for r in rows["lost_most"]] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    # 0.1 * 3 is 0.30000000000000004 in the file; the page shows scores to three places.
    doc = parse_html(write_report(run)[0].read_text(encoding="utf-8"))
    samples_shown = doc.by_id("rows").find_all("div", cls="sample")
    assert len(samples_shown) == 9
    scores = [n.text for n in doc.by_id("rows").find_all("span", cls="score")]
    assert "rougeL 0.300" in scores and not any("0.3000" in score for score in scores)


# ---------------------------------------------------------------- report.html

SECTIONS = ("summary", "recipe", "data", "loss-curve", "metrics", "win-rate", "by-category", "by-language", "rows",
            "human")


def test_html_is_self_contained_and_escapes_model_output(tmp_path):
    html_path, _ = write_report(make_fake_run(tmp_path / "run"))
    doc = assert_self_contained(html_path.read_text(encoding="utf-8"))
    answers = {n.raw_text for n in doc.by_id("rows").find_all("pre")}
    assert SCRIPT in answers  # model output shown as the text it is, not run
    assert "base answer 2 & <b>bold</b>" in answers and doc.by_id("rows").find_all("b") == []
    for section in SECTIONS:
        doc.by_id(section)
    nav = [a.attrs["href"][1:] for a in doc.find_all("nav")[0].find_all("a")]
    assert nav == [s for s in SECTIONS if s != "summary"]  # every section linked, in page order
    png = inline_png(doc.by_id("loss-curve").find_all("img")[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_every_string_from_files_is_escaped(tmp_path):
    """Hostile text in every file the report reads (labels, categories, recipe, card, human eval) stays text."""
    evil = "<img src=x onerror=alert(1)>"
    metrics = json.loads(json.dumps(METRICS))
    metrics["systems"]["tuned"] = evil
    metrics["judge"]["metric"] = evil
    metrics["base"]["by_category"][evil] = {"n": 1, "rougeL": 0.1}
    run = make_fake_run(tmp_path / "run", metrics=metrics)
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump({**RECIPE, "model": {"name": evil}}), encoding="utf-8")
    (run / "data" / "card.json").write_text(json.dumps({**CARD, "rejected_by_reason": {evil: 1}}), encoding="utf-8")
    human = {**HUMAN, "systems": {evil: {"helpful": 1.0, "correct": 2.0}}}
    (run / "human_eval" / "results.json").write_text(json.dumps(human), encoding="utf-8")
    page = write_report(run)[0].read_text(encoding="utf-8")
    doc = assert_self_contained(page)
    assert len(doc.find_all("img")) == 1  # the loss curve, and no image made of the hostile text
    for section in ("summary", "recipe", "data", "metrics", "win-rate", "by-category", "rows", "human"):
        assert evil in doc.by_id(section).raw_text, section


def test_html_shows_metrics_ci_win_rates_and_human_eval(tmp_path):
    doc = parse_html(write_report(make_fake_run(tmp_path / "run"))[0].read_text(encoding="utf-8"))
    table = doc.by_id("metrics-table")
    header = table.table()[0]
    assert header == ["metric", "base tiny-base", "tuned runs/fake (lora)", "Δ tuned − base"]
    rows = rows_by_name(table)
    assert rows["BLEU (0-100)"] == ["12.5", "48.8", "+36.2"]  # BLEU on its 0-100 scale
    assert rows["ROUGE-L"] == ["0.250 [0.125, 0.375]", "0.625 [0.438, 0.812]", "+0.375 [0.188, 0.562]"]
    assert rows["rows"] == ["6", "6", ""]
    assert rows["reasoning (rows, mean words)"] == ["–", "6 rows, 42.5 words", ""]  # R1-style thinking length
    changes = {n.text: n.attrs["class"] for row in table.find_all("tr") for n in row.find_all("span")}
    assert changes["-17.75"] == "good"  # perplexity dropped, and lower is better
    assert changes["+0.375"] == "good" and changes["-0.050"] == ""  # distinct-1 has no better direction

    win_rate = doc.by_id("win-rate")
    badges = [b.text for b in win_rate.find_all("span", cls="badge")]
    assert badges == ["PASS", "FAIL"]  # ab passed the bar, the judge did not
    assert "judge (gpt-x)" in win_rate.text and "1 judge errors left out" in win_rate.text
    assert "win rate 0.750, 95% CI [0.417, 1.000], sign test p = 0.38" in win_rate.text
    assert len(win_rate.find_all("svg")) == 2 and win_rate.find_all("rect")
    assert "PASS runs/fake (lora) beat tiny-base on 4 of 6 rows by rougeL (win rate 0.750, bar 0.700)." in (
        doc.by_id("summary").text)

    by_category = rows_by_name(doc.by_id("by-category").find_all("table")[0])
    assert by_category["returns"] == ["3", "0.200", "0.550", "10.0", "44.0", "0.000", "0.500", "2 / 0 / 1", "0.667"]
    assert by_category["shipping"][-2:] == ["2 / 1 / 0", "0.833"]
    bold = [b.text for b in doc.by_id("by-category").find_all("b")]
    assert bold == ["0.550", "44.0", "0.500", "0.700", "52.0", "0.750"]  # the better system per metric

    human = doc.by_id("human")
    assert rows_by_name(human.find_all("table")[0]) == {"system": ["helpful", "correct"], "base": ["2.25", "1.50"],
                                                       "tuned": ["4.25", "3.75"],
                                                       "Krippendorff's alpha": ["0.71", "0.64"]}
    assert "3 raters, 20 items." in human.text
    reasons = doc.by_id("data").find_all("table")[1].table()
    assert [row[0] for row in reasons[1:]] == ["dedup/exact", "filter/min_chars", "format/missing_answer"]  # most first


def test_only_metrics_json_is_enough(tmp_path):
    run = make_fake_run(tmp_path / "run", full=False)
    html_path, json_path = write_report(run)
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert set(report) == {"run", "created", "eval", "rows"}
    assert report["rows"] == {"metric": "rougeL", "won_most": [], "lost_most": []}
    doc = assert_self_contained(html_path.read_text(encoding="utf-8"))
    assert doc.by_id("loss-curve").text == "Training no training log"
    ids = {n.attrs.get("id") for n in doc.walk()}
    assert not ids & {"recipe", "data", "rows", "human"}
    assert [a.attrs["href"] for a in doc.find_all("a")] == ["#loss-curve", "#metrics", "#win-rate", "#by-category",
                                                            "#by-language"]


def test_tuned_only_and_old_format_metrics(tmp_path):
    # Older metrics.json: no "systems", "ci", "ab"; the per-row metric still shows in the samples.
    old = {k: v for k, v in METRICS.items() if k in ("split", "base", "tuned")}
    run = make_fake_run(tmp_path / "old", metrics=old)
    report = build_report(run)
    assert report["rows"]["metric"] == "rougeL" and len(report["rows"]["won_most"]) == 3
    doc = parse_html(write_report(run)[0].read_text(encoding="utf-8"))
    assert "win-rate" not in {n.attrs.get("id") for n in doc.walk()}
    assert doc.by_id("metrics-table").table()[0] == ["metric", "base", "tuned", "Δ tuned − base"]

    tuned_only = {"split": "test", "tuned": METRICS["tuned"]}
    run = make_fake_run(tmp_path / "tuned-only", metrics=tuned_only, full=False)
    table = parse_html(write_report(run)[0].read_text(encoding="utf-8")).by_id("metrics-table")
    assert table.table()[0] == ["metric", "tuned"]
    assert rows_by_name(table)["ROUGE-L"] == ["0.625"]


def test_missing_metrics_json_says_to_run_eval(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"seektune eval"):
        build_report(tmp_path / "run")


def test_training_log_without_losses_says_so(tmp_path):
    run = make_fake_run(tmp_path / "run")
    (run / "train.json").write_text(json.dumps({**TRAIN, "log_history": [{"train_runtime": 1.0, "step": 0}]}))
    doc = parse_html(write_report(run)[0].read_text(encoding="utf-8"))
    training = doc.by_id("loss-curve")
    assert "no training log" in training.text and training.find_all("img") == []
    assert rows_by_name(training.find_all("table")[0])["parameters trained"] == ["1,000 of 50,000 (2.00%)"]


def test_number_formats():
    assert fmt("bleu", 52.29953) == "52.3"
    assert fmt("rougeL", 0.5746825) == "0.575"
    assert fmt("rougeL", 0.1 * 3) == "0.300"
    assert fmt("n", 66) == "66"
    assert fmt("n", 12345) == "12,345"
    assert fmt("fact_accuracy", None) == "–"
    assert fmt("eval_loss", 0.11773991) == "0.1177"
    assert fmt("perplexity", 21.5) == "21.50"
    assert fmt("lr", 0.0005) == "0.0005" and fmt_setting("lr", 2e-5) == "2e-05" and fmt_setting("epochs", 6.0) == "6"


# ---------------------------------------------------------------- templates and the data card


def test_templates_ship_with_the_package():
    """Every file under seektune/templates/ matches the package-data globs, so `pip install .` carries it."""
    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["seektune"]
    templates = sorted(p.relative_to(root / "seektune").as_posix() for p in (root / "seektune" / "templates").iterdir())
    assert "templates/report.html.j2" in templates and "templates/base.html.j2" in templates
    assert [t for t in templates if not any(fnmatch(t, g) for g in globs)] == []


FULL_CARD = {
    **CARD,
    "steps": [{"step": "read", "rows": 60, "note": ""}, {"step": "dedup", "rows": 53, "note": "7 exact"}],
    "clean_changed": {"whitespace": 4},
    "duplicates": {"exact": 7, "near": 1, "cluster_count": 1,
                   "clusters": [{"kept": "faq.jsonl:1", "removed": ["faq.jsonl:9"], "example": SCRIPT}]},
    "leakage": [{"split": "test", "origin": "faq.jsonl:4", "other_split": "train", "other_origin": "faq.jsonl:3",
                 "kind": "near", "similarity": 0.91234}],
    "leakage_removed": True,
    "splits": {"train": {"rows": 40, "tokens": length_stats([10, 12, 30, 41] * 10)},
               "test": {"rows": 6, "tokens": length_stats([11, 20, 25, 9, 14, 18])}},
    "categories": {"train": {"returns": 20, "shipping": 20}, "test": {"returns": 3, "shipping": 3}},
    "longest": [{"tokens": 41, "origin": "faq.jsonl:7", "text": "a <b>long</b> row & more"}],
    "shortest": [{"tokens": 9, "origin": "faq.jsonl:2", "text": "short"}],
}


def test_data_card_page_is_self_contained_and_escapes_rows(tmp_path):
    page = render_card_html(FULL_CARD)
    doc = assert_self_contained(page)
    assert [h.text for h in doc.find_all("h2")] == [
        "Rows after each step", "Rejected rows by reason", "Cleaning", "Duplicates", "Leakage audit", "Splits",
        "Token lengths per split", "Category balance", "Longest rows", "Shortest rows"]
    tables = [t.table() for t in doc.find_all("table")]
    assert ["faq.jsonl:1", "faq.jsonl:9", SCRIPT] in tables[3]  # an example row is data: shown as text
    assert ["test", "faq.jsonl:4", "train faq.jsonl:3", "near", "0.912"] in tables[4]
    assert ["dedup", "exact", "7"] in tables[1]
    assert ["41", "faq.jsonl:7", "a <b>long</b> row & more"] in tables[6]
    assert "1 val/test rows duplicate an earlier split (removed)." in doc.text
    assert all(inline_png(img)[:4] == b"\x89PNG" for img in doc.find_all("img")) and len(doc.find_all("img")) == 2

    write_card(FULL_CARD, RunDir(tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "data" / "card.json").read_text(encoding="utf-8")) == FULL_CARD
    assert (tmp_path / "run" / "data" / "card.html").read_text(encoding="utf-8") == page


# ---------------------------------------------------------------- compare


def _variant(root: Path, name: str, *, rouge: float, bleu: float, ppl: float, r: int, eval_loss: float) -> Path:
    metrics = json.loads(json.dumps(METRICS))
    metrics["tuned"].update(rougeL=rouge, bleu=bleu, perplexity=ppl)
    run = make_fake_run(root / name, metrics=metrics)
    recipe = json.loads(json.dumps(RECIPE))
    recipe["method"]["r"] = r
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    (run / "train.json").write_text(json.dumps({**TRAIN, "eval_loss": eval_loss}), encoding="utf-8")
    return run


def best_cells(doc: Node) -> set[tuple[str, str, str]]:
    """(run, column, value) of every comparison cell highlighted as the best."""
    header, *rows = doc.by_id("compare").table()
    cells = [row for row in doc.by_id("compare").find_all("tr")][1:]
    return {(row[0], header[j], row[j]) for row, tr in zip(rows, cells)
            for j, td in enumerate(n for n in tr.children if isinstance(n, Node)) if td.find_all(cls="best")}


def test_compare_runs_picks_the_best_run_per_metric(tmp_path):
    r8 = _variant(tmp_path, "r8", rouge=0.5, bleu=55.0, ppl=4.0, r=8, eval_loss=0.9)
    r16 = _variant(tmp_path, "r16", rouge=0.7, bleu=40.0, ppl=5.0, r=16, eval_loss=0.6)
    out = tmp_path / "cmp" / "compare.html"
    result = compare_runs([r8, r16], out)
    assert [run["run"] for run in result["runs"]] == [str(r8), str(r16)]
    assert [run["r"] for run in result["runs"]] == [8, 16]
    assert result["runs"][1]["rougeL"] == 0.7 and result["runs"][1]["eval_loss"] == 0.6
    assert result["runs"][0]["train_runtime_s"] == 12.5 and result["runs"][0]["lr"] == 0.0005
    assert result["best"]["rougeL"] == str(r16)
    assert result["best"]["bleu"] == str(r8)
    assert result["best"]["perplexity"] == str(r8)  # lower is better
    assert result["best"]["eval_loss"] == str(r16)
    main = {"rougeL", "bleu", "chrf", "fact_accuracy", "exact_match", "perplexity", "win_rate"}
    assert main <= set(result["metrics"])

    assert json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8")) == result
    doc = assert_self_contained(out.read_text(encoding="utf-8"))
    differing = {"ROUGE-L", "BLEU", "ppl", "eval loss"}  # the other metrics tie, and every tied run is highlighted
    assert {cell for cell in best_cells(doc) if cell[1] in differing} == {
        (str(r16), "ROUGE-L", "0.700"), (str(r8), "BLEU", "55.0"), (str(r8), "ppl", "4.00"),
        (str(r16), "eval loss", "0.6")}
    assert inline_png(doc.by_id("compare-chart-img"))[:4] == b"\x89PNG"

    header, rows = compare_table_rows(result)
    assert header[0] == "run" and len(rows) == 2 and all(len(row) == len(header) for row in rows)
    assert rows[1][header.index("ROUGE-L")] == "0.700" and rows[0][header.index("r")] == "8"
    assert rows[0][header.index("BLEU")] == "55.0" and rows[0][header.index("lr")] == "0.0005"
    assert all(isinstance(cell, str) for row in rows for cell in row)


def test_compare_highlights_every_run_tied_for_best(tmp_path):
    a = _variant(tmp_path, "a", rouge=0.45, bleu=50.0, ppl=4.0, r=8, eval_loss=0.5)
    b = _variant(tmp_path, "b", rouge=0.4, bleu=50.0, ppl=4.0, r=8, eval_loss=0.5)
    result = compare_runs([a, b], tmp_path / "compare.html")
    assert result["best"]["bleu"] == str(a)  # the first of the tied runs
    best = best_cells(parse_html((tmp_path / "compare.html").read_text(encoding="utf-8")))
    assert {(run, value) for run, column, value in best if column == "BLEU"} == {(str(a), "50.0"), (str(b), "50.0")}
    assert {(run, value) for run, column, value in best if column == "ROUGE-L"} == {(str(a), "0.450")}


def test_compare_page_escapes_run_names(tmp_path):
    run = make_fake_run(tmp_path / "<b>run</b>")
    compare_runs([run], tmp_path / "compare.html")
    doc = assert_self_contained((tmp_path / "compare.html").read_text(encoding="utf-8"))
    assert doc.by_id("compare").table()[1][0] == str(run) and doc.find_all("b") == []


def test_compare_writes_nothing_without_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_fake_run(tmp_path / "run")
    compare_runs([run])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_compare_needs_eval_of_every_run(tmp_path):
    good = make_fake_run(tmp_path / "good")
    (tmp_path / "untested").mkdir()
    with pytest.raises(FileNotFoundError, match=r"untested.*seektune eval"):
        compare_runs([good, tmp_path / "untested"])


def test_training_shows_distillation_preference_and_update_figures(tmp_path):
    run = make_fake_run(tmp_path / "run")
    training = {**TRAIN, "objective": "dpo",
                "distill": {"teacher": "run runs/teacher", "mode": "logits", "val_kl_before": 2.2232,
                            "val_kl_after": 0.0323},
                "preference": {"first_reward_margin": 0.0, "last_reward_margin": 0.2591}}
    (run / "train.json").write_text(json.dumps(training))
    (run / "update.json").write_text(json.dumps({
        "from": "runs/old", "replay": {"ratio": 6.0, "new_train_rows": 48, "replay_rows": 288},
        "new": {"before": {"n": 9, "fact_accuracy": 0.0}, "after": {"n": 9, "fact_accuracy": 0.889}},
        "old": {"before": {"n": 66, "fact_accuracy": 0.545}, "after": {"n": 66, "fact_accuracy": 0.5}}}))
    doc = parse_html(write_report(run)[0].read_text(encoding="utf-8"))
    facts = rows_by_name(doc.by_id("loss-curve").find_all("table")[0])
    assert facts["teacher"] == ["run runs/teacher (logits distillation)"]
    assert facts["KL to the teacher (val, per answer token)"] == ["2.223 → 0.032"]
    assert facts["dpo reward margin"] == ["0.000 → 0.259"]
    update = doc.by_id("update")
    assert "with 48 new and 288 replayed training rows (replay 6.0)" in update.text
    assert update.find_all("table")[0].table() == [["split", "metric", "before", "after", "change"],
                                                   ["new split (n=9)", "fact accuracy", "0.000", "0.889", "+0.889"],
                                                   ["old split (n=66)", "fact accuracy", "0.545", "0.500", "-0.045"]]
    assert "update" not in [a.attrs["href"][1:] for a in doc.find_all("a")]  # as before: no nav link
