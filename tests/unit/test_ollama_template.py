"""The Modelfile's Go templates build, for every chat, the text the Jinja chat template builds.

    .venv/bin/python -m pytest -q tests/unit/test_ollama_template.py

``render_ollama_template`` does what Ollama does with a chat: system messages become
``.System``, the rest ``.Messages``, then the Go template runs. The Jinja side is rendered by
transformers (``apply_chat_template``), as training and serving render it.
"""

import pytest
from transformers import AutoTokenizer

from seektune.export.gguf import OLLAMA_TEMPLATES, default_system_prompt, render_ollama_template
from seektune.models.templates import CHATML, DEEPSEEK_R1

USER = {"role": "user", "content": "How long do I have to return something?"}
CHATS = {
    "one question": [USER],
    "with a system message": [{"role": "system", "content": "Be brief."}, USER],
    "multi-turn": [{"role": "system", "content": "Be brief."}, USER,
                   {"role": "assistant", "content": "45 days."}, {"role": "user", "content": "运费多少？"}],
    "multi-turn, no system": [USER, {"role": "assistant", "content": "45 days."},
                              {"role": "user", "content": "And {{ braces }}?"}],
}
# SmolLM2-135M-Instruct's own template: ChatML that writes a system message into a chat without one.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.mark.parametrize("chat", CHATS.values(), ids=CHATS.keys())
@pytest.mark.parametrize(("fmt", "template"), [("chatml", CHATML), ("deepseek-r1", DEEPSEEK_R1)])
def test_go_template_renders_what_the_jinja_template_renders(tokenizer, chat, fmt, template):
    jinja = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, chat_template=template)
    # The DeepSeek-R1 Jinja template writes BOS as text; under Ollama, llama.cpp adds it as a token.
    bos = tokenizer.bos_token if fmt == "deepseek-r1" else ""
    assert bos + render_ollama_template(OLLAMA_TEMPLATES[fmt], chat) == jinja


def test_ollama_joins_system_messages_and_merges_consecutive_turns():
    chat = [{"role": "system", "content": "A."}, {"role": "system", "content": "B."},
            {"role": "user", "content": "x"}, {"role": "user", "content": "y"}]
    assert render_ollama_template(OLLAMA_TEMPLATES["chatml"], chat) == (
        "<|im_start|>system\nA.\n\nB.<|im_end|>\n<|im_start|>user\nx\n\ny<|im_end|>\n<|im_start|>assistant\n")


def test_go_actions_outside_the_subset_are_refused():
    for template in ("{{ with .System }}x{{ end }}", "{{ if and .System .Messages }}x{{ end }}",
                     "{{ .System | trim }}", "{{- .System }}", "{{ template \"x\" }}"):
        with pytest.raises(ValueError, match="unsupported Go template"):
            render_ollama_template(template, [USER])
    with pytest.raises(ValueError, match="has no"):
        render_ollama_template("{{ if .System }}x", [USER])
    with pytest.raises(ValueError, match="unexpected"):
        render_ollama_template("x{{ end }}", [USER])


def test_the_default_system_prompt_of_a_template_goes_to_the_modelfile(tokenizer):
    tokenizer.chat_template = SMOLLM2
    default = default_system_prompt(tokenizer)
    assert default == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    # with it as SYSTEM, Ollama's prompt for a chat without a system message is the Jinja one
    jinja = tokenizer.apply_chat_template([USER], tokenize=False, add_generation_prompt=True)
    assert render_ollama_template(OLLAMA_TEMPLATES["chatml"], [{"role": "system", "content": default}, USER]) == jinja
    for template in (CHATML, DEEPSEEK_R1):
        tokenizer.chat_template = template
        assert default_system_prompt(tokenizer) is None
