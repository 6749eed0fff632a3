"""R1 usage defaults: a model whose template opens <think> is sampled at DeepSeek's temperature 0.6 / top-p 0.95
unless asked otherwise, and greedy decoding of it is allowed with a warning."""

import pytest

from seektune.models.registry import R1_SAMPLING, opens_think, sampling_for
from seektune.models.templates import DEEPSEEK_R1, DEEPSEEK_V3


@pytest.fixture
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def test_an_r1_template_is_recognised_by_its_generation_prompt(tokenizer):
    tokenizer.chat_template = DEEPSEEK_R1
    assert opens_think(tokenizer)
    tokenizer.chat_template = DEEPSEEK_V3
    assert not opens_think(tokenizer)
    tokenizer.chat_template = None
    assert not opens_think(tokenizer)  # no template at all: not a reasoning one


def test_sampling_defaults_follow_the_model_and_yield_to_what_is_asked():
    assert sampling_for(True, None, None) == (R1_SAMPLING["temperature"], R1_SAMPLING["top_p"], None)
    assert sampling_for(False, None, None) == (0.0, 1.0, None)
    assert sampling_for(True, 0.9, None)[:2] == (0.9, 1.0)  # asked: as asked
    assert sampling_for(True, None, 0.8)[:2] == (0.6, 0.8)
    temperature, _, warning = sampling_for(True, 0.0, None)
    assert temperature == 0.0 and "repeat" in warning  # greedy only when asked, and then with a warning
    assert sampling_for(False, 0.0, None)[2] is None


CONVERSATION = [
    {"role": "system", "content": "You are the store's assistant."},
    {"role": "user", "content": "How long is the return window?"},
    {"role": "assistant", "content": "45 days.", "reasoning": "The handbook says 45 days."},
    {"role": "user", "content": "And for exchanges?"},
    {"role": "assistant", "content": "60 days.", "reasoning": "Exchanges get 60 days, longer than returns."},
]


@pytest.mark.parametrize("policy, kept", [("keep", ["The handbook", "Exchanges get"]),
                                          ("drop_history", ["Exchanges get"]), ("drop", [])])
def test_training_text_holds_the_reasoning_the_recipe_keeps(tokenizer, policy, kept):
    from seektune.data.render import render
    from seektune.data.formats import with_reasoning

    tokenizer.chat_template = DEEPSEEK_R1
    rendered = render(tokenizer, with_reasoning({"messages": CONVERSATION, "meta": {}}, policy)["messages"])
    text = tokenizer.decode(rendered["input_ids"])
    trained = tokenizer.decode([t for t, label in zip(rendered["input_ids"], rendered["labels"]) if label != -100])
    for reasoning in ("The handbook", "Exchanges get"):
        assert (reasoning in text) == (reasoning in kept)
        assert (reasoning in trained) == (reasoning in kept)  # kept reasoning carries the loss
    assert "60 days." in trained and "<think>" in text


def test_an_r1_prompt_holds_the_system_prompt_in_the_first_user_turn(tokenizer):
    from seektune.data.render import prompt_text

    tokenizer.chat_template = DEEPSEEK_R1
    text = prompt_text(tokenizer, CONVERSATION[:2])
    head, _, rest = text.partition("<｜User｜>")
    assert "store's assistant" not in head  # no system prompt before the first user turn
    assert rest.startswith("You are the store's assistant.\n\nHow long is the return window?")
    assert text.endswith("<｜Assistant｜><think>\n")
