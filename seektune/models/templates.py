"""Chat templates that a tokenizer may lack, written for seektune.

Each template renders ``messages`` (``role``, ``content``, optional ``reasoning``) and,
with ``add_generation_prompt``, the opening of the assistant's turn. They are built so
that rendering ``messages[:i]`` with the generation prompt is a prefix of rendering
``messages[:i+1]``: the renderer relies on that to find the assistant tokens that carry
the loss, and it makes training text match what the model sees at inference.
"""

from __future__ import annotations

# ChatML, as used by SmolLM2 and Qwen2.
CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# DeepSeek-R1 (and its Qwen/Llama distills): the assistant turn opens with <think>, the
# reasoning follows, then </think> and the answer. The generation prompt already holds
# "<think>\n", so the model is always asked to reason first, as DeepSeek recommends. DeepSeek
# also advises no system prompt: a system message is folded into the first user turn (its text,
# a blank line, then the user's). A recipe that wants it elsewhere sets model.chat_template.
DEEPSEEK_R1 = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}{%- set ns.system = messages[0]['content'] -%}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '<｜User｜>' }}"
    "{%- if ns.system -%}{{ ns.system + '\n\n' }}{%- set ns.system = '' -%}{%- endif -%}"
    "{{ message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<｜Assistant｜><think>\n' }}"
    "{%- if message.reasoning is defined and message.reasoning -%}{{ message.reasoning }}{%- endif -%}"
    "{{ '\n</think>\n\n' + message['content'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<｜Assistant｜><think>\n' }}{%- endif -%}"
)

# DeepSeek-V2 / V3 chat: the same markers without the reasoning block.
DEEPSEEK_V3 = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}{{ messages[0]['content'] }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<｜Assistant｜>' }}{%- endif -%}"
)

# deepseek-llm-*-chat: "User: ...\n\nAssistant: ...<eos>".
DEEPSEEK_LLM = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}{{ messages[0]['content'] + '\n\n' }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)

# DeepSeek-Coder-*-instruct: Alpaca-like sections, each answer closed by <|EOT|>.
DEEPSEEK_CODER = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}{{ messages[0]['content'] + '\n' }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '### Instruction:\n' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '### Response:\n' + message['content'] + '\n<|EOT|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Response:\n' }}{%- endif -%}"
)

TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "deepseek-r1": DEEPSEEK_R1,
    "deepseek-v3": DEEPSEEK_V3,
    "deepseek-llm": DEEPSEEK_LLM,
    "deepseek-coder": DEEPSEEK_CODER,
}


def resolve_template(value: str) -> str:
    """A registry template name, or a Jinja string given verbatim in the recipe."""
    if value in TEMPLATES:
        return TEMPLATES[value]
    if "{%" in value or "{{" in value:
        return value
    raise ValueError(f"unknown chat template {value!r}; use a Jinja string or one of: {', '.join(TEMPLATES)}")
