"""Training with retrieved context (data.rag) through the command line on a tiny model."""

import json

from seektune.data.io import read_jsonl
from seektune.rag import Index
from tests.conftest import cli, write_recipe
from tests.unit.test_rag_index import HashEmbedder

DOCS = {
    "returns.md": "# Returns\n\nReturns are accepted within 45 days.\n",
    "shipping.md": "# Shipping\n\nStandard shipping costs $4.95.\n",
    "care.md": "# Warranty\n\nThe plan is LarkCare.\n",
    "zh.md": "# 退货\n\n退货期限是45天。\n",
    "hours.md": "# Hours\n\nOpen 7am to 9pm.\n",
}


def test_rows_train_with_passages_and_the_answer_cites_the_one_holding_it(tmp_path, tiny_llama, faq_file):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    with Index.create(tmp_path / "idx", embedder=HashEmbedder(), chunk_tokens=40, overlap=0) as index:
        assert not index.add([folder])["failures"]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", data__max_length=256,
                          data__rag={"index": str(tmp_path / "idx"), "k": 2, "distractors": 1, "oracle_p": 1.0})
    result = cli("train", recipe)
    assert "data.rag -" in result.output
    plain = read_jsonl(tmp_path / "run" / "data" / "train.jsonl")
    trained = read_jsonl(tmp_path / "run" / "data" / "train.rag.jsonl")
    assert len(trained) == len(plain) > 0
    for before, after in zip(plain, trained):
        question = [m for m in before["messages"] if m["role"] == "user"][-1]["content"]
        user = [m for m in after["messages"] if m["role"] == "user"][-1]["content"]
        answer = after["messages"][-1]["content"]
        oracle = after["meta"]["rag"]["oracle"]
        assert user.endswith(question) and f"{oracle}" in user  # the passage holding the answer is shown
        number = user.split("\n").index(next(line for line in user.split("\n") if line.startswith("[") and
                                              oracle in line))
        assert answer.endswith("]") and answer.startswith(before["messages"][-1]["content"])
        assert all(fact in index_text for fact in before["meta"]["facts"]
                   for index_text in [DOCS[oracle.split("#")[0]]]), number
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["train_rows"] == len(trained)  # no row lost to the longer prompt (max_length 256)
