"""Known model families: chat template, default LoRA targets and end-of-turn token.

A family is matched by a substring of the model id / path (lower-cased) or by the
config's ``model_type``. The first match wins, so specific families come first.
"""

from __future__ import annotations

from dataclasses import dataclass

_LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_ALL = _LLAMA_ATTENTION + ("gate_proj", "up_proj", "down_proj")
# DeepSeek-V2/V3 Multi-head Latent Attention projections (q_proj on V2-Lite, q_a/q_b with q-LoRA)
# and o_proj; no MLP. Routed experts are left alone by default: adapting every expert
# multiplies the adapter size by the expert count for little gain.
_DEEPSEEK_MLA = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")


@dataclass(frozen=True)
class Family:
    name: str
    patterns: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    template: str = "chatml"  # registry template used when the tokenizer has none
    prefer_registry_template: bool = False  # use ours even if the tokenizer has one (reasoning field support)
    lora_targets: tuple[str, ...] = _LLAMA_ATTENTION
    eos_token: str | None = None  # end-of-turn token the model must learn to emit
    reasoning: bool = False  # answers start with <think>...</think>


FAMILIES: tuple[Family, ...] = (
    Family(
        "deepseek-r1-distill",
        patterns=("deepseek-r1-distill", "r1-distill"),
        template="deepseek-r1",
        prefer_registry_template=True,
        lora_targets=_LLAMA_ALL,
        eos_token="<｜end▁of▁sentence｜>",
        reasoning=True,
    ),
    Family(
        "deepseek-r1",
        patterns=("deepseek-r1",),
        template="deepseek-r1",
        prefer_registry_template=True,
        lora_targets=_DEEPSEEK_MLA,
        eos_token="<｜end▁of▁sentence｜>",
        reasoning=True,
    ),
    Family(
        "deepseek-coder",
        patterns=("deepseek-coder",),
        template="deepseek-coder",
        lora_targets=_LLAMA_ALL,
        eos_token="<|EOT|>",
    ),
    Family(
        "deepseek-llm",
        patterns=("deepseek-llm",),
        template="deepseek-llm",
        lora_targets=_LLAMA_ALL,
        eos_token="<｜end▁of▁sentence｜>",
    ),
    Family(
        "deepseek-v3",
        patterns=("deepseek-v3", "deepseek-v2"),
        model_types=("deepseek_v3", "deepseek_v2"),
        template="deepseek-v3",
        lora_targets=_DEEPSEEK_MLA,
        eos_token="<｜end▁of▁sentence｜>",
    ),
    Family("smollm2", patterns=("smollm",), template="chatml", lora_targets=_LLAMA_ATTENTION, eos_token="<|im_end|>"),
    Family("qwen2", patterns=("qwen",), model_types=("qwen2", "qwen3"), template="chatml", eos_token="<|im_end|>"),
    Family("llama", model_types=("llama", "mistral"), template="chatml"),
)

GENERIC = Family("generic", template="chatml", lora_targets=_LLAMA_ATTENTION)

# DeepSeek's usage recommendation for R1-family models: sample at temperature 0.6 (0.5-0.7) with top-p 0.95;
# greedy decoding makes them repeat themselves
R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}


def opens_think(tokenizer) -> bool:
    """Whether the model's chat template starts every answer inside ``<think>`` (R1's templates end the generation
    prompt with ``<think>\n``): such a model reasons before it answers and wants R1's sampling."""
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - no usable template: not a reasoning template either
        return False
    return isinstance(text, str) and text.rstrip().endswith("<think>")


def sampling_for(reasoning: bool, temperature: float | None, top_p: float | None) -> tuple[float, float, str | None]:
    """``(temperature, top_p, warning)``: settings left None take R1's for a reasoning model and greedy otherwise;
    asking a reasoning model for greedy decoding is allowed, with a warning."""
    if temperature is None:
        temperature = R1_SAMPLING["temperature"] if reasoning else 0.0
        top_p = top_p if top_p is not None else (R1_SAMPLING["top_p"] if reasoning else 1.0)
    top_p = 1.0 if top_p is None else top_p
    warning = None
    if reasoning and temperature == 0:
        warning = ("greedy decoding of a reasoning (R1-style) model: it tends to repeat itself; DeepSeek recommends "
                   "temperature 0.6 and top_p 0.95 (leave temperature unset to get them)")
    return temperature, top_p, warning


def find_family(model_id: str, model_type: str | None = None) -> Family:
    name = model_id.lower()
    for family in FAMILIES:
        if any(pattern in name for pattern in family.patterns):
            return family
    for family in FAMILIES:
        if model_type and model_type in family.model_types:
            return family
    return GENERIC
