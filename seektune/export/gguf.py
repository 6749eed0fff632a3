"""GGUF export: a Llama or Qwen2 checkpoint as one llama.cpp file, and an Ollama Modelfile for it.

    seektune export runs/customer-service --to gguf --quant q8_0

The file follows llama.cpp's ``convert_hf_to_gguf.py``, so llama.cpp, Ollama and
transformers' GGUF loader (``from_pretrained(dir, gguf_file=...)``) all read it:

- metadata under llama.cpp's keys (``{arch}.context_length``, ``{arch}.rope.freq_base``, ...);
- tensor names from gguf-py's ``TensorNameMap``; Llama's Q and K rows permuted the way
  llama.cpp's rope expects (transformers undoes it when loading); tied embeddings write no
  ``output.weight``;
- norms and biases (1-D) always f32; 2-D weights in the chosen type, falling back to f16
  for a tensor whose rows do not split into the type's blocks, as llama.cpp does;
- the byte-level BPE tokenizer as ``tokenizer.ggml.*`` with the pre-tokenizer named the
  way llama.cpp names it, and the chat template as ``tokenizer.chat_template``.

Quantisation runs in Python (gguf-py's ``gguf.quants``), one tensor at a time, and the file
is streamed to disk tensor by tensor, so peak memory is about one tensor. gguf-py can
quantise q8_0, q4_0 and q4_1 but no k-quant (it only dequantises those), so the 4-bit
type here is q4_0. Like ``llama-quantize``, q4_0 keeps the output projection (the
embedding, when tied) at 8 bits: it is where 4 bits cost the most quality.

The Ollama ``Modelfile`` carries a Go template per chat format; ``render_ollama_template``
renders one as Ollama would, so the export stage can check it builds the Jinja template's text.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable

import gguf
import numpy as np

from seektune.export.merge import checkpoint_files

F32, F16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16
Q8_0, Q4_0 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0

# HF model_type -> gguf-py architecture. Qwen2 covers DeepSeek-R1-Distill-Qwen; Llama covers SmolLM2.
ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}


@dataclass(frozen=True)
class QuantPlan:
    file_type: gguf.LlamaFileType
    weights: gguf.GGMLQuantizationType  # every 2-D weight ...
    output: gguf.GGMLQuantizationType  # ... but the output projection (the embedding when tied)


QUANTS = {
    "f32": QuantPlan(gguf.LlamaFileType.ALL_F32, F32, F32),
    "f16": QuantPlan(gguf.LlamaFileType.MOSTLY_F16, F16, F16),
    "q8_0": QuantPlan(gguf.LlamaFileType.MOSTLY_Q8_0, Q8_0, Q8_0),
    # llama-quantize gives the output Q6_K; gguf-py cannot write Q6_K, and Q8_0 is what llama.cpp
    # itself falls back to when a row does not fit Q6_K's 256-wide blocks.
    "q4_0": QuantPlan(gguf.LlamaFileType.MOSTLY_Q4_0, Q4_0, Q8_0),
}

# llama.cpp names a BPE pre-tokenizer by hashing the ids of this text (convert_hf_to_gguf.py,
# get_vocab_base_pre); these are the hashes of the families seektune targets.
_PRE_TOKENIZER_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZER_HASHES = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / 2 / 2.5
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
# Otherwise the split is read off tokenizer.json. Both names below are ones llama.cpp and
# transformers' GGUF tokenizer reader reproduce exactly.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def write_gguf(model_dir: Path, out_file: Path, quant: str = "f16", *, chat_template: str | None = None,
               name: str | None = None) -> dict[str, Any]:
    """Write the Hugging Face causal LM in ``model_dir`` to ``out_file`` as GGUF.

    ``chat_template`` replaces the tokenizer's own (seektune's registry template, for a model
    whose tokenizer has none). Returns the figures for ``export.json``.
    """
    from transformers import AutoConfig, AutoTokenizer

    model_dir, out_file = Path(model_dir), Path(out_file)
    if quant not in QUANTS:
        raise ValueError(f"unsupported GGUF quant {quant!r}; choose one of: {', '.join(QUANTS)}")
    config = AutoConfig.from_pretrained(model_dir)
    arch = _architecture(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    plan = QUANTS[quant]

    tmp = out_file.with_name(f".{out_file.name}.partial")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    try:
        with ExitStack() as stack:
            tensors = _plan_tensors(model_dir, config, arch, plan, stack)
            _add_hyperparameters(writer, config, name or model_dir.name, plan)
            _add_tokenizer(writer, model_dir, tokenizer, config.vocab_size, chat_template)
            for t in tensors:
                writer.add_tensor_info(t.gguf_name, t.stored_shape, t.stored_dtype, t.nbytes, raw_dtype=t.qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for t in tensors:
                writer.write_tensor_data(t.convert())
        writer.close()
        os.replace(tmp, out_file)  # readers see the old file or the whole new one, never a partial one
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)

    return {"file": str(out_file), "bytes": out_file.stat().st_size, "quant": quant,
            "architecture": gguf.MODEL_ARCH_NAMES[arch], "tensors": len(tensors),
            "tensor_types": dict(Counter(t.qtype.name for t in tensors)), "vocab_size": config.vocab_size}


def _architecture(config) -> gguf.MODEL_ARCH:
    model_type = getattr(config, "model_type", None)
    heads = getattr(config, "architectures", None) or []
    if model_type not in ARCHITECTURES or (heads and not any(h.endswith("ForCausalLM") for h in heads)):
        raise ValueError(f"GGUF export supports the architectures {', '.join(ARCHITECTURES)} "
                         f"(LlamaForCausalLM, Qwen2ForCausalLM); this model is {model_type!r} {heads}")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        # llama.cpp stores scaled rope as extra keys / a rope_freqs tensor, and transformers'
        # GGUF loader reads none of it back: the round trip would change the model.
        raise ValueError(f"GGUF export supports default rope only; this model uses {rope['rope_type']!r} rope scaling")
    return ARCHITECTURES[model_type]


def _add_hyperparameters(writer: gguf.GGUFWriter, config, name: str, plan: QuantPlan) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(plan.file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


@dataclass
class _Tensor:
    """One tensor to write: where to read it, and what it becomes."""

    gguf_name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    read: Callable[[], np.ndarray]  # the float32 tensor, in the HF layout
    permute_heads: tuple[int, int] | None = None  # (n_head, n_head_kv) for llama's Q / K

    @property
    def stored_dtype(self):
        return {F32: np.float32, F16: np.float16}.get(self.qtype, np.uint8)

    @property
    def stored_shape(self) -> tuple[int, ...]:
        if self.qtype in (F32, F16):
            return self.shape
        return gguf.quant_shape_to_byte_shape(self.shape, self.qtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.stored_shape)) * np.dtype(self.stored_dtype).itemsize

    def convert(self) -> np.ndarray:
        data = self.read()
        if self.permute_heads:
            data = _permute(data, *self.permute_heads)
        return gguf.quants.quantize(data, self.qtype)


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's Q/K row order (convert_hf_to_gguf.py, LlamaModel.permute): its rope rotates
    interleaved pairs, transformers' rotates the two halves of each head."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _plan_tensors(model_dir: Path, config, arch: gguf.MODEL_ARCH, plan: QuantPlan, stack: ExitStack) -> list[_Tensor]:
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    n_head, n_head_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    tensors = []
    for path in checkpoint_files(model_dir):
        handle = stack.enter_context(safe_open(path, framework="pt"))
        for hf_name in handle.keys():
            if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                continue  # recomputed by every runtime / the embedding, as llama.cpp does
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ValueError(f"tensor {hf_name!r} has no GGUF name for {gguf.MODEL_ARCH_NAMES[arch]}")
            shape = tuple(handle.get_slice(hf_name).get_shape())
            permute = None
            if arch == gguf.MODEL_ARCH.LLAMA and ".attn_q." in gguf_name:
                permute = (n_head, n_head)
            elif arch == gguf.MODEL_ARCH.LLAMA and ".attn_k." in gguf_name:
                permute = (n_head, n_head_kv)
            read = (lambda h=handle, n=hf_name: h.get_tensor(n).float().numpy())  # bf16 has no numpy dtype
            tensors.append(_Tensor(gguf_name, shape, _tensor_type(gguf_name, shape, plan, tied), read, permute))
    return tensors


def _tensor_type(gguf_name: str, shape: tuple[int, ...], plan: QuantPlan, tied: bool) -> gguf.GGMLQuantizationType:
    if len(shape) == 1:
        return F32  # norms and biases, as llama.cpp keeps them
    is_output = gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight")
    qtype = plan.output if is_output else plan.weights
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if shape[-1] % block_size == 0 else F16


def _add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, tokenizer, vocab_size: int,
                   chat_template: str | None) -> None:
    """The tokenizer as ``tokenizer.ggml.*``, the way convert_hf_to_gguf.py writes a GPT-2 style BPE."""
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(vocab.values())}, past the model's vocab_size {vocab_size}")
    reverse = {i: token for token, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")  # rows the embedding has but the tokenizer never produces
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if token in special or _looks_special(token)
                         else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(model_dir, tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    specials = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not specials.merges:
        raise ValueError(f"{model_dir}/tokenizer.json holds no BPE merges")
    # The ids and flags transformers itself uses for this tokenizer win over the files' raw fields.
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            specials.special_token_ids[kind] = token_id
    with_specials = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    added_some = len(with_specials) > len(without)
    specials.add_special_token["bos"] = added_some and with_specials[0] == tokenizer.bos_token_id
    specials.add_special_token["eos"] = added_some and with_specials[-1] == tokenizer.eos_token_id
    if chat_template is not None:
        specials.chat_template = chat_template
    specials.add_to_gguf(writer, quiet=True)


def _looks_special(token: str) -> bool:
    """Added tokens some repos leave unmarked that llama.cpp still treats as control tokens."""
    return (token in ("<pad>", "<mask>") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>")))


def pre_tokenizer_name(model_dir: Path, tokenizer) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE (``tokenizer.ggml.pre``)."""
    ids = tokenizer.encode(_PRE_TOKENIZER_CHECK_TEXT)
    known = _PRE_TOKENIZER_HASHES.get(sha256(str(ids).encode()).hexdigest())
    if known:
        return known
    if not (model_dir / "tokenizer.json").is_file():
        raise ValueError(f"GGUF export needs the fast tokenizer's tokenizer.json in {model_dir}")
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if spec.get("model", {}).get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise ValueError("GGUF export supports byte-level BPE tokenizers (tokenizer.ggml.model 'gpt2') only")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex == _QWEN2_SPLIT:
            return "qwen2"
        if regex == _LLAMA3_SPLIT:
            return "llama-bpe"
    raise ValueError(f"GGUF export cannot name this tokenizer's pre-tokenizer ({json.dumps(pre)[:200]}); "
                     "supported: gpt-2, smollm, qwen2, deepseek-r1-qwen, llama-bpe")


# --- Ollama ------------------------------------------------------------------------------------

# Ollama's Go templates for the chat formats seektune trains. System messages reach a template
# as .System; the generation prompt is what follows the last user turn.
OLLAMA_TEMPLATES = {
    "chatml": (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ range .Messages }}{{ if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"
        "<|im_start|>assistant\n{{ else if eq .Role \"assistant\" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"
    ),
    # seektune's DeepSeek-R1 template: earlier answers carry an empty think block, the new
    # turn opens one for the model to reason in; the system prompt opens the first user turn
    # (.Messages holds it first, so that turn is message 1). BOS comes from tokenizer.ggml.add_bos_token.
    "deepseek-r1": (
        "{{ range $i, $m := .Messages }}{{ if eq .Role \"user\" }}<｜User｜>"
        "{{ if eq $i 1 }}{{ if $.System }}{{ $.System }}\n\n{{ end }}{{ end }}{{ .Content }}<｜Assistant｜><think>\n"
        "{{ else if eq .Role \"assistant\" }}\n</think>\n\n{{ .Content }}<｜end▁of▁sentence｜>{{ end }}{{ end }}"
    ),
}
OLLAMA_STOPS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "deepseek-r1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"),
}


def render_ollama_template(template: str, messages: list[dict[str, str]]) -> str:
    """The prompt Ollama builds from one of :data:`OLLAMA_TEMPLATES` for ``messages``.

    Ollama's preparation first (its ``collate``): ``.System`` is every system message joined by
    a blank line, ``.Messages`` all messages with consecutive ones of a role merged the same
    way. Then the few Go ``text/template`` actions these templates use: ``if`` / ``else if`` /
    ``else`` / ``end``, ``range .Messages`` and ``range $i, $m := .Messages``, ``eq .Role "user"`` and
    ``eq $i 1``, and fields (``.System``, ``.Role``, ``.Content``, ``$.System``). Anything else is refused
    rather than guessed.
    """
    collated: list[dict[str, str]] = []
    for m in messages:
        if collated and collated[-1]["Role"] == m["role"]:
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    tokens = re.split(r"{{\s*(.*?)\s*}}", template)  # text, action, text, action, ...
    nodes, end = _parse_go(tokens, 1)
    if end < len(tokens):
        raise ValueError(f"unexpected {{{{ {tokens[end]} }}}} in the template")
    return "".join(_render_go(nodes, {"System": system, "Messages": collated}))


def _parse_go(tokens: list[str], i: int) -> tuple[list, int]:
    """Nodes from ``tokens[i - 1]`` on, up to the ``end`` / ``else`` that closes them (its index)."""
    nodes: list = [("text", tokens[i - 1])]
    while i < len(tokens):
        action = tokens[i]
        if action == "end" or action.startswith("else"):
            return nodes, i
        if action.startswith(("if ", "range ")):
            branches, condition = [], action
            while True:
                body, i = _parse_go(tokens, i + 2)
                if i >= len(tokens):
                    raise ValueError(f"{{{{ {action} }}}} has no {{{{ end }}}}")
                branches.append((condition, body))
                if tokens[i] == "end":
                    break
                condition = tokens[i].removeprefix("else").strip() or "if true"
            nodes.append(("block", branches))
        elif action.startswith((".", "$")):
            nodes.append(("field", action))
        else:
            raise ValueError(f"unsupported Go template action {{{{ {action} }}}}")
        nodes.append(("text", tokens[i + 1]))
        i += 2
    return nodes, i


def _go_value(expression: str, dot: dict[str, Any]) -> Any:
    if expression.startswith('"'):
        return json.loads(expression)  # a Go string literal in the subset used: "user"
    if expression.isdigit():
        return int(expression)
    if expression == "$i":
        return dot["$i"]
    if expression.startswith("$."):  # a field of the template's root (inside a range)
        return _go_value(expression[1:], dot.get("$", dot))
    if expression.startswith(".") and expression[1:] in dot:
        return dot[expression[1:]]
    raise ValueError(f"unsupported Go template value {expression}")


def _render_go(nodes: list, dot: dict[str, Any]):
    for kind, value in nodes:
        if kind == "text":
            yield value
        elif kind == "field":
            yield str(_go_value(value, dot))
        else:
            for condition, body in value:
                keyword, *args = re.findall(r'"[^"]*"|\S+', condition)
                if keyword == "range":  # range .Messages, or range $i, $m := .Messages
                    for number, item in enumerate(_go_value(args[-1], dot)):
                        yield from _render_go(body, {**item, "$i": number, "$": dot.get("$", dot)})
                    break
                if _go_test(args, dot):
                    yield from _render_go(body, dot)
                    break


def _go_test(args: list[str], dot: dict[str, Any]) -> bool:
    if args == ["true"]:  # {{ else }}
        return True
    if args[0] == "eq":
        return _go_value(args[1], dot) == _go_value(args[2], dot)
    return bool(_go_value(args[0], dot))


def default_system_prompt(tokenizer) -> str | None:
    """The system prompt ``tokenizer``'s chat template writes into a chat that has none (SmolLM2's
    names the model SmolLM). Given as the Modelfile's SYSTEM, Ollama then builds the prompt the
    model was trained on; the Go templates write no system block of their own."""
    fmt = chat_format(tokenizer.chat_template)
    if fmt is None:
        return None
    chat = [{"role": "user", "content": "?"}]
    jinja = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    marked = render_ollama_template(OLLAMA_TEMPLATES[fmt], [{"role": "system", "content": "\0"}, *chat])
    before, _, after = marked.partition("\0")  # the chat with a system prompt, around where it goes
    middle = jinja[len(before): len(jinja) - len(after)]
    found = jinja.startswith(before) and jinja.endswith(after) and middle.strip()
    return middle if found and middle not in tokenizer.all_special_tokens else None


def chat_format(template: str | None) -> str | None:
    """Which of :data:`OLLAMA_TEMPLATES` a Jinja chat template renders, if any."""
    if not template:
        return None
    if "<|im_start|>" in template and "<|im_end|>" in template:
        return "chatml"
    if "<｜User｜>" in template and "<｜Assistant｜>" in template:
        return "deepseek-r1"
    return None


def write_modelfile(gguf_file: Path, out: Path | None = None, *, chat_template: str | None = None,
                    system: str | None = None) -> Path:
    """An Ollama ``Modelfile`` next to ``gguf_file`` (or at ``out``): ``ollama create NAME -f Modelfile``.

    The chat format comes from ``chat_template``, else from the template stored in the GGUF.
    A format seektune has no Go template for gets none, and Ollama falls back on the GGUF's.
    """
    gguf_file = Path(gguf_file)
    out = Path(out) if out is not None else gguf_file.parent / "Modelfile"
    if system is not None and '"""' in system:
        raise ValueError('an Ollama SYSTEM prompt cannot contain """')
    stored_template, eos = _gguf_chat_metadata(gguf_file)
    fmt = chat_format(chat_template if chat_template is not None else stored_template)

    source = os.path.relpath(gguf_file.resolve(), out.parent.resolve())
    lines = [f"# Ollama Modelfile written by seektune: ollama create NAME -f {out.name}",
             f"FROM ./{source}" if not source.startswith("..") else f"FROM {source}", ""]
    if fmt is None:
        lines += ["# No Go template for this chat format: Ollama uses the Jinja template stored in the GGUF",
                  "# (tokenizer.chat_template) instead.", ""]
    else:
        lines += [f'TEMPLATE """{OLLAMA_TEMPLATES[fmt]}"""', ""]
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    stops = list(OLLAMA_STOPS.get(fmt, ()))
    if eos and eos not in stops:
        stops.append(eos)
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def _gguf_chat_metadata(gguf_file: Path) -> tuple[str | None, str | None]:
    """(tokenizer.chat_template, the EOS token's text) from a GGUF's metadata."""
    reader = gguf.GGUFReader(gguf_file)
    fields = reader.fields
    template = fields["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in fields else None
    eos = None
    if "tokenizer.ggml.eos_token_id" in fields and "tokenizer.ggml.tokens" in fields:
        eos = fields["tokenizer.ggml.tokens"].contents(int(fields["tokenizer.ggml.eos_token_id"].contents()))
    return template, eos
