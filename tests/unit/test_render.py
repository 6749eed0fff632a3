import pytest
from transformers import AutoTokenizer

from seektune.data.render import IGNORE_INDEX, RenderError, prompt_text, render, segments
from seektune.models.registry import find_family
from seektune.models.load import load_tokenizer
from seektune.models.templates import TEMPLATES

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How long do I have to return something?"},
    {"role": "assistant", "content": "Returns are accepted within 45 days."},
    {"role": "user", "content": "And shipping?"},
    {"role": "assistant", "content": "Standard shipping costs $4.95."},
]


@pytest.fixture
def chatml_tokenizer(tiny_tokenizer_dir):
    return load_tokenizer(str(tiny_tokenizer_dir), find_family("tiny"), "chatml")


def labelled_text(tokenizer, rendered):
    ids = [i for i, label in zip(rendered["input_ids"], rendered["labels"]) if label != IGNORE_INDEX]
    return tokenizer.decode(ids)


def test_only_assistant_tokens_and_eos_carry_loss(chatml_tokenizer):
    rendered = render(chatml_tokenizer, CONVERSATION)
    assert labelled_text(chatml_tokenizer, rendered) == (
        "Returns are accepted within 45 days.<|im_end|>Standard shipping costs $4.95.<|im_end|>")
    # labels equal the input ids wherever they are set
    assert all(l in (IGNORE_INDEX, i) for i, l in zip(rendered["input_ids"], rendered["labels"]))
    # the full token sequence is the template's rendering of the conversation
    full = chatml_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert chatml_tokenizer.decode(rendered["input_ids"]) == full


def test_the_last_labelled_token_is_eos(chatml_tokenizer):
    rendered = render(chatml_tokenizer, CONVERSATION[:3])
    last = max(i for i, label in enumerate(rendered["labels"]) if label != IGNORE_INDEX)
    assert rendered["input_ids"][last] == chatml_tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_eos_is_appended_when_the_template_has_none(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    pieces = segments(tok, CONVERSATION[1:3])
    assert pieces[1] == ("Returns are accepted within 45 days.\n" + tok.eos_token, True)


def test_truncation_that_leaves_no_answer_is_an_error(chatml_tokenizer):
    with pytest.raises(RenderError) as info:
        render(chatml_tokenizer, CONVERSATION[1:3], max_length=5)
    assert info.value.reason == "no_labels_after_truncation"
    assert len(render(chatml_tokenizer, CONVERSATION[1:3], max_length=40)["input_ids"]) <= 40


def test_r1_template_emits_think_and_trains_on_reasoning(tiny_tokenizer_dir):
    tok = load_tokenizer(str(tiny_tokenizer_dir), find_family("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"))
    assert tok.eos_token == "<｜end▁of▁sentence｜>"
    messages = [{"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "It is 4.", "reasoning": "Two plus two is four."}]
    assert prompt_text(tok, messages).endswith("<｜User｜>2+2?<｜Assistant｜><think>\n")
    text = tok.apply_chat_template(messages, tokenize=False)
    assert "<think>\nTwo plus two is four.\n</think>\n\nIt is 4.<｜end▁of▁sentence｜>" in text
    rendered = render(tok, messages)
    assert labelled_text(tok, rendered) == "Two plus two is four.\n</think>\n\nIt is 4.<｜end▁of▁sentence｜>"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_registry_template_is_prefix_stable(tiny_tokenizer_dir, name):
    tok = load_tokenizer(str(tiny_tokenizer_dir), find_family("x"), name)
    rendered = render(tok, CONVERSATION)
    text = labelled_text(tok, rendered)
    assert "45 days." in text and "$4.95." in text
    assert "How long" not in text and "Be brief" not in text
