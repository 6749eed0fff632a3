"""The retrieval index (seektune/rag/index.py): SQLite FTS5 + usearch, updated one document at a time.

A hashed bag-of-words embedder stands in for MiniLM so these run in a second; the real encoder is
exercised by tests/e2e (serve and eval with --rag)."""

import re
import sqlite3

import pytest

from seektune.rag import Index, RagIndexError
from seektune.rag.index import RRF_K, HashingEmbedder
from seektune.rag.prompt import with_passages


def HashEmbedder():  # noqa: N802 - the built-in model-free embedder, 64 buckets
    return HashingEmbedder(64)


def _docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "shipping.md").write_text(
        "# Shipping\n\nExpress shipping costs $14.50 per order and arrives in 2 business days.\n\n"
        "## Returns\n\nEvery return gets an authorisation number starting with RTN.\n", encoding="utf-8")
    (folder / "points.md").write_text(
        "# Petal Points\n\nPetal Points expire after 15 months with no account activity.\n", encoding="utf-8")
    (folder / "zh.md").write_text("# 退货\n\n预付退货标签的费用是3.50美元，会从退款中扣除。\n", encoding="utf-8")
    return folder


def _index(tmp_path, chunk_tokens=40):
    return Index.create(tmp_path / "idx", embedder=HashEmbedder(), chunk_tokens=chunk_tokens, overlap=0)


def _rows(index):
    return {row[0]: row[1:] for row in index.db.execute("SELECT chunk_id, id, sha256, embedding FROM chunks")}


def test_documents_are_indexed_with_ids_and_found_by_meaning_letters_and_chinese_words(tmp_path):
    folder = _docs(tmp_path)
    with _index(tmp_path) as index:
        report = index.add([folder])
        assert sorted(report["added"]) == ["points.md", "shipping.md", "zh.md"] and not report["failures"]
        assert [d["name"] for d in index.documents()] == ["points.md", "shipping.md", "zh.md"]
        assert index.chunk_ids("shipping.md") == ["shipping.md#c1", "shipping.md#c2"]
        assert index.search("How much is express shipping?", k=1)[0].chunk_id == "shipping.md#c1"
        assert index.search("RTN", k=1)[0].chunk_id == "shipping.md#c2"  # a code, by its letters
        top = index.search("退货标签收费吗", k=1)[0]
        assert top.document == "zh.md" and "3.50美元" in top.text and top.lexical is not None


def test_a_chunk_found_by_both_sides_outranks_one_found_by_one(tmp_path):
    with _index(tmp_path) as index:
        index.add([_docs(tmp_path)])
        hits = index.search("When do Petal Points expire?", k=3)
        assert hits[0].chunk_id == "points.md#c1"
        assert hits[0].dense is not None and hits[0].lexical is not None
        assert hits[0].score == pytest.approx(max(h.score for h in hits))
        # both rankings contributed: more than the best one side alone can give (hashing weighs as much as BM25)
        assert HashEmbedder().fusion_weight == 1.0 and hits[0].score > 1 / (RRF_K + 1)


def test_updating_one_document_changes_only_its_chunks(tmp_path):
    folder = _docs(tmp_path)
    with _index(tmp_path) as index:
        index.add([folder])
        before = _rows(index)
        (folder / "points.md").write_text("# Petal Points\n\nPetal Points now expire after 24 months.\n",
                                          encoding="utf-8")
        report = index.add([folder])
        assert report["replaced"] == ["points.md"]
        assert sorted(report["unchanged"]) == ["shipping.md", "zh.md"]
        after = _rows(index)
        for chunk_id, row in before.items():
            if not chunk_id.startswith("points.md"):
                assert after[chunk_id] == row  # same row id, text hash and embedding: untouched
        assert after["points.md#c1"][1] != before["points.md#c1"][1]
        assert "24 months" in index.search("Petal Points expire", k=1)[0].text
        assert not any("15 months" in h.text for h in index.search("Petal Points 15 months", k=5))


def test_removed_documents_are_never_returned_and_survive_reopening(tmp_path):
    folder = _docs(tmp_path)
    with _index(tmp_path) as index:
        index.add([folder])
        assert index.remove(["shipping.md", "nope.md"]) == ["shipping.md"]
        assert all(h.document != "shipping.md" for h in index.search("express shipping RTN $14.50", k=10))
        count = len(index)
    with Index.open(tmp_path / "idx", embedder=HashEmbedder()) as index:
        assert len(index) == count and index.chunk("shipping.md#c1") is None
        assert all(h.document != "shipping.md" for h in index.search("express shipping", k=10))


def test_a_lost_or_stale_vector_file_is_rebuilt_from_the_database(tmp_path):
    with _index(tmp_path) as index:
        index.add([_docs(tmp_path)])
        expected = [h.chunk_id for h in index.search("express shipping cost", k=3)][:2]  # third: a tie
    (tmp_path / "idx" / "vectors.usearch").unlink()  # a crash between the two writes
    with Index.open(tmp_path / "idx", embedder=HashEmbedder()) as index:
        assert [h.chunk_id for h in index.search("express shipping cost", k=3)][:2] == expected
    (tmp_path / "idx" / "vectors.json").write_text('{"generation": -1}')  # saved at another generation
    with Index.open(tmp_path / "idx", embedder=HashEmbedder()) as index:
        assert [h.chunk_id for h in index.search("express shipping cost", k=3)][:2] == expected


def test_unreadable_documents_are_reported_and_the_rest_indexed(tmp_path):
    folder = _docs(tmp_path)
    (folder / "empty.md").write_text("", encoding="utf-8")
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00")
    (folder / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    with _index(tmp_path) as index:
        report = index.add([folder, tmp_path / "missing.pdf"])
        reasons = {f["document"]: f["reason"] for f in report["failures"]}
        assert reasons["empty.md"] == "empty" and reasons["blob.txt"] == "binary"
        assert reasons["sheet.xlsx"] == "unsupported_type" and reasons[str(tmp_path / "missing.pdf")] == "not_found"
        assert sorted(report["added"]) == ["points.md", "shipping.md", "zh.md"]


def test_queries_are_data_not_fts_syntax(tmp_path):
    with _index(tmp_path) as index:
        index.add([_docs(tmp_path)])
        for query in ['"unbalanced', "shipping AND OR NOT", "NEAR(express shipping)", "col:umn*",
                      "'; DROP TABLE chunks;"]:
            index.search(query, k=2)  # no sqlite3.OperationalError
        assert len(index) == 4
        assert index.search("   ", k=2) == [] and index.search("?!", k=2) == []


def test_opening_what_is_not_an_index_says_so(tmp_path):
    with pytest.raises(RagIndexError, match="no index at"):
        Index.open(tmp_path / "none")
    with _index(tmp_path):
        pass
    with pytest.raises(RagIndexError, match="already holds an index"):
        Index.create(tmp_path / "idx", embedder=HashEmbedder())

    with pytest.raises(RagIndexError, match="built with the encoder hashing-64"):
        Index.open(tmp_path / "idx", embedder=HashingEmbedder(32))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "index.sqlite").write_bytes(b"not a database at all" * 10)
    with pytest.raises((RagIndexError, sqlite3.DatabaseError)):
        Index.open(tmp_path / "junk")


def test_passages_go_into_the_user_turn_numbered_with_their_source(tmp_path):
    with _index(tmp_path) as index:
        index.add([_docs(tmp_path)])
        hits = index.search("express shipping", k=2)
    turn = with_passages("How much is express shipping?", hits)
    assert turn.startswith("Answer the question using only the passages below.")
    assert re.search(r"^\[1\] shipping\.md#c1\b", turn, re.M) and "[2] " in turn
    assert turn.endswith("Question: How much is express shipping?")
    assert with_passages("退货标签收费吗", hits).endswith("问题: 退货标签收费吗")
    assert with_passages("anything?", []) == "anything?"


def test_an_unchanged_file_is_not_parsed_again(tmp_path, monkeypatch):
    import seektune.docs.read as read

    folder = _docs(tmp_path)
    with _index(tmp_path) as index:
        index.add([folder])
        parsed = []
        real = read.read_document
        monkeypatch.setattr(read, "read_document", lambda file, name=None: parsed.append(name) or real(file, name))
        (folder / "points.md").write_text("# Petal Points\n\nPoints expire after 24 months.\n", encoding="utf-8")
        report = index.add([folder])
        assert parsed == ["points.md"] and sorted(report["unchanged"]) == ["shipping.md", "zh.md"]


def test_a_setting_an_existing_index_does_not_have_is_an_error_not_ignored(tmp_path):
    Index.open_or_create(tmp_path / "idx", encoder="hashing-64", chunk_tokens=40, overlap=0).close()
    Index.open_or_create(tmp_path / "idx", encoder="hashing-64").close()  # the same settings, or none: fine
    Index.open_or_create(tmp_path / "idx").close()
    with pytest.raises(RagIndexError, match=r"built with chunk_tokens 40 \(asked: 120\)"):
        Index.open_or_create(tmp_path / "idx", chunk_tokens=120)


def test_the_index_command_does_not_create_an_index_to_query_or_remove_from(tmp_path):
    from tests.conftest import cli

    result = cli("index", "--out", tmp_path / "typo", "--query", "shipping", exit_code=2)
    assert "no index at" in result.output and not (tmp_path / "typo").exists()
    cli("index", _docs(tmp_path), "--out", tmp_path / "idx", "--encoder", "hashing")
    result = cli("index", "--out", tmp_path / "idx", "--remove", "shiping.md", exit_code=2)
    assert "not in the index" in result.output and "shipping.md" in result.output
    result = cli("index", tmp_path / "missing.md", "--out", tmp_path / "idx", exit_code=2)
    assert "not_found" in result.output and "none of the 1 document(s) could be indexed" in result.output


def _rag_recipe(tmp_path, documents, **rag):
    import yaml

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"paths": ["faq.jsonl"], "rag": {"distractors": 1}},
        "rag": {"documents": documents, "index": "idx", "encoder": "hashing-64", "chunk_tokens": 40, "overlap": 0,
                "k": 2, **rag},
        "output_dir": str(tmp_path / "run")}), encoding="utf-8")
    return recipe


def test_a_recipes_rag_section_builds_its_index_and_keeps_it_to_the_listed_documents(tmp_path):
    from seektune.recipe import load_recipe
    from tests.conftest import cli

    docs = _docs(tmp_path)
    recipe = _rag_recipe(tmp_path, ["docs/shipping.md", "docs/points.md", "docs/zh.md"])
    loaded = load_recipe(recipe)
    assert loaded.data.rag.index == loaded.rag.index == str((tmp_path / "idx").resolve())
    assert loaded.data.rag.k == 2  # data.rag gives no k: the rag: section's
    result = cli("index", recipe, "--query", "express shipping")
    assert "added 3" in result.output and "1. shipping.md#c1" in result.output
    with Index.open(tmp_path / "idx") as idx:
        before = _rows(idx)
    # points.md leaves the list, shipping.md cannot be read any more: points.md is removed, shipping.md kept
    (docs / "shipping.md").write_bytes(b"# Shipping\x00\x00")
    result = cli("index", _rag_recipe(tmp_path, ["docs/shipping.md", "docs/zh.md"]))
    with Index.open(tmp_path / "idx") as idx:
        after = _rows(idx)
        assert sorted(d["name"] for d in idx.documents()) == ["shipping.md", "zh.md"]
    assert {cid: row for cid, row in before.items() if not cid.startswith("points.md")} == after
    assert "removed 1" in result.output and "unchanged 1" in result.output and "binary" in result.output
    # a listed document that has gone missing is reported and keeps its chunks too (here none can be read: exit 2)
    (docs / "zh.md").unlink()
    result = cli("index", _rag_recipe(tmp_path, ["docs/shipping.md", "docs/zh.md"]), exit_code=2)
    assert "not_found" in result.output and "none of the 2 document(s) could be indexed" in result.output
    with Index.open(tmp_path / "idx") as idx:
        assert _rows(idx) == after


def test_a_recipes_rag_section_is_checked_before_anything_is_built(tmp_path):
    from seektune.recipe import RecipeError, load_recipe
    from tests.conftest import cli

    _docs(tmp_path)
    recipe = _rag_recipe(tmp_path, ["docs/shipping.md"])
    result = cli("index", recipe, "--out", tmp_path / "other", exit_code=2)
    assert "come from its rag: section" in result.output and not (tmp_path / "other").exists()
    with pytest.raises(RecipeError, match="overlap"):
        load_recipe(_rag_recipe(tmp_path, ["docs/shipping.md"], overlap=40))
    recipe.write_text("data: {paths: [faq.jsonl], rag: {k: 2}}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="data.rag needs an index"):
        load_recipe(recipe)
    cli("index", _rag_recipe(tmp_path, ["docs/shipping.md"]))
    result = cli("index", _rag_recipe(tmp_path, ["docs/shipping.md"], chunk_tokens=80), exit_code=2)
    assert "built with chunk_tokens 40 (asked: 80)" in result.output and "delete" in result.output
