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
