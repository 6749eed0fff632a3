"""seektune.text: language, tokens, <think> splitting and match normalisation, with exact expected values."""

import ast
from pathlib import Path

import pytest

import seektune.text
from seektune.text import (
    cjk_tokens,
    is_cjk,
    language_of,
    normalise_for_match,
    split_think,
    strip_reasoning,
    tokens_of,
    without_code,
)

# ---------------------------------------------------------------- language


@pytest.mark.parametrize(("text", "language"), [
    ("Returns within 45 days.", "en"),
    ("退货期限是45天。", "zh"),
    ("签收后45天内可以退货。", "zh"),
    ("LarkCare在标准保修之外再延长3年", "zh"),  # 11 of 20 word characters are ideographs
    ("The LarkCare plan 延长保修", "en"),  # 4 of 19
    ("abcdefg一二三", "zh"),  # exactly 30%: the threshold counts as Chinese
    ("abcdefgh一二", "en"),  # 20%
    ("", "en"),
    ("？！...", "en"),  # no word characters at all
])
def test_language_of(text, language):
    assert language_of(text) == language


def test_is_cjk_takes_ideographs_only():
    assert [is_cjk(c) for c in ("中", "㐀", "a", "5", "，", "か", "")] == [True, True, False, False, False, False,
                                                                            False]


def test_without_code_drops_fenced_blocks_and_inline_spans():
    assert without_code("用 `pip install x` 安装") == "用   安装"
    assert without_code("运行：\n```python\nprint('hello world')\n```\n即可") == "运行：\n \n即可"
    assert language_of("用 `pip install seektune --upgrade` 安装") == "en"
    assert language_of(without_code("用 `pip install seektune --upgrade` 安装")) == "zh"


# ---------------------------------------------------------------- tokens


def test_tokens_of_english_words_and_chinese_characters():
    assert tokens_of("Returns within 45 days.") == ["returns", "within", "45", "days"]
    assert tokens_of("退货期限是45天。") == ["退", "货", "期", "限", "是", "45", "天"]
    assert tokens_of("LarkCare在保修之外再延长3年") == ["larkcare", "在", "保", "修", "之", "外", "再", "延", "长",
                                                      "3", "年"]
    assert tokens_of("snake_case, too") == ["snake", "case", "too"]  # '_' splits like punctuation


def test_cjk_tokens_keep_latin_runs_whole():
    assert cjk_tokens("用API退货") == ["用", "api", "退", "货"]
    assert cjk_tokens("") == []


# ---------------------------------------------------------------- <think>


@pytest.mark.parametrize(("content", "split"), [
    ("<think>r</think>answer", ("r", "answer")),
    ("<think>\n2 plus 2 is 4.\n</think>\n\nIt is 4.", ("2 plus 2 is 4.", "It is 4.")),
    ("  <think> x </think>  y ", ("x", "y ")),  # leading whitespace allowed; the answer keeps its tail
    ("<think></think>A", ("", "A")),  # an empty block is still a block
    ("no reasoning here", (None, "no reasoning here")),
    ("abc</think>answer", (None, "abc</think>answer")),  # only a closing tag: left to the caller
    ("<think>cut off mid-thought", (None, "<think>cut off mid-thought")),  # unclosed
    ("Answer first <think>x</think>", (None, "Answer first <think>x</think>")),  # not leading
])
def test_split_think(content, split):
    assert split_think(content) == split


def test_split_think_after_a_template_opened_the_tag():
    # R1 templates put <think> in the prompt, so the generation holds only </think>; callers prepend it.
    assert split_think("<think>" + "abc</think>answer") == ("abc", "answer")


@pytest.mark.parametrize(("text", "stripped"), [
    ("<think>abc</think>\n\nThe answer.", ("The answer.", 3)),
    ("abcd</think>Answer", ("Answer", 4)),  # only </think>: <think> was in the prompt
    ("<think>cut off mid-thought", ("", len("cut off mid-thought"))),
    ("plain answer", ("plain answer", 0)),
    ("<think> x </think>A<think>yy</think>B", ("AB", 3)),
    ("", ("", 0)),
])
def test_strip_reasoning(text, stripped):
    assert strip_reasoning(text) == stripped


# ---------------------------------------------------------------- normalisation


def test_normalise_for_match():
    assert normalise_for_match("  ＡＢＣ\u3000４５ Days\n\t") == "abc 45 days"
    assert normalise_for_match("退货 期限\n\n45天") == "退货 期限 45天"
    assert normalise_for_match("") == ""


# ---------------------------------------------------------------- layering


def test_text_imports_nothing_from_seektune():
    tree = ast.parse(Path(seektune.text.__file__).read_text(encoding="utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] == "seektune"]
