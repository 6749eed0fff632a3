"""ONNX export with past key values: onnxruntime answers like PyTorch, uses its cache, and needs no source dir."""

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from seektune.export import onnx as onnx_export  # noqa: E402
from seektune.export.onnx import OnnxCausalLM, chat_backend, export_onnx  # noqa: E402

PROMPTS = [
    "Returns are accepted within 45 days of delivery.",
    "How long do I have to return something?",
    "What does shipping cost?",
    "hello",
    "The warranty plan is called LarkCare and adds 3 years.",
    "退货期限是45天。",
    "user assistant system",
    "Standard shipping costs $4.95 and takes 4 to 7 business days.",
    "the a an is are of to in",
    "What is the return window?",
    "LarkCare",
    "How much is standard shipping? Name of the extended warranty?",
    "world",
    "标准运费4.95美元。",
    "is",
    "Returns are",
    "business days shipping costs",
    "hello world the a an",
    "What is",
    "3 years",
]
NEW_TOKENS = 12


# (kv heads, key dim, value dim) per architecture. DeepSeek-V3 (MoE layers) caches MLA's compressed latent
# (kv_lora_rank 16) as "key" and the shared rope key (qk_rope_head_dim 4) as "value", one head each.
CACHE_SHAPES = {"tiny_llama": (2, 8, 8), "tiny_qwen2": (2, 8, 8), "tiny_deepseek_v3": (1, 16, 4)}


@pytest.fixture(scope="module", params=list(CACHE_SHAPES))
def exported(request, tmp_path_factory):
    """(source model dir, ONNX dir, export figures) for each architecture."""
    model_dir = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp(f"onnx-{request.param}")
    return model_dir, out, export_onnx(model_dir, out), CACHE_SHAPES[request.param]


def _torch_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _left_padded(tokenizer, texts):
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


class RecordingSession:
    """Wraps an onnxruntime session and records, per call, the new-token count, the past length fed in, the
    present length and logits shape returned, and the last position's logits."""

    def __init__(self, session):
        self.session, self.calls, self.last_logits = session, [], []

    def run(self, output_names, feeds):
        outputs = self.session.run(output_names, feeds)
        self.calls.append({"seq": feeds["input_ids"].shape[1], "past": feeds["past_key_values.0.key"].shape[2],
                           "present": outputs[1].shape[2], "logits": outputs[0].shape})
        self.last_logits.append(outputs[0][:, -1])
        return outputs


def test_export_writes_a_graph_with_cache_inputs_and_outputs(exported):
    import onnx

    _, out, figures, (heads, key_dim, value_dim) = exported
    assert figures["file"] == "model.onnx" and figures["layers"] == 2 and figures["opset"] == 17
    assert figures["bytes"] == (out / "model.onnx").stat().st_size
    assert figures["max_abs_logit_diff"] < 1e-4
    config = json.loads((out / "onnx_config.json").read_text())
    assert config["num_layers"] == 2 and config["dtype"] == "float32"
    assert (config["num_kv_heads"], config["head_dim"], config["value_head_dim"]) == (heads, key_dim, value_dim)
    graph = onnx.load(str(out / "model.onnx")).graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert list(inputs) == config["inputs"] and list(outputs) == config["outputs"]
    assert inputs["input_ids"] == ["batch", "seq"] and inputs["attention_mask"] == ["batch", "past_plus_seq"]
    assert inputs["past_key_values.1.value"] == ["batch", heads, "past", value_dim]
    assert outputs["logits"] == ["batch", "seq", 400]
    assert outputs["present.1.key"] == ["batch", heads, "past_plus_seq", key_dim]


def test_onnxruntime_logits_match_pytorch_on_a_padded_batch(exported):
    model_dir, out, _, _ = exported
    lm = OnnxCausalLM(out, threads=1)
    batch = _left_padded(lm.tokenizer, PROMPTS[:6])
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    with torch.no_grad():
        expected = _torch_model(model_dir)(**batch).logits.numpy()
    got = lm.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    real = batch["attention_mask"].numpy().astype(bool)
    assert got.shape == expected.shape
    assert np.abs(got - expected)[real].max() < 1e-3


def test_greedy_generation_matches_hf_generate_using_the_cache(exported):
    """20 prompts in one left-padded batch on both sides, then 5 of them one by one; an EOS chosen from the
    output so that some rows stop early and keep decoding padding while others go on."""
    model_dir, out, _, _ = exported
    lm = OnnxCausalLM(out, threads=1)
    model = _torch_model(model_dir)
    free_run = lm.generate(PROMPTS, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    eos = free_run[0][NEW_TOKENS // 2]  # a token some row emits mid-way

    batch = _left_padded(lm.tokenizer, PROMPTS)
    with torch.no_grad():
        hf = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos,
                            pad_token_id=lm.pad_token_id, output_logits=True, return_dict_in_generate=True)
    width = batch["input_ids"].shape[1]
    expected = [row[: row.index(eos) + 1] if eos in row else row for row in hf.sequences[:, width:].tolist()]

    recorder = RecordingSession(lm.session)
    lm.session = recorder
    got = lm.generate(PROMPTS, max_new_tokens=NEW_TOKENS, eos_token_id=eos)
    assert got == expected
    assert any(len(row) < NEW_TOKENS for row in got) and any(len(row) == NEW_TOKENS for row in got)
    # prefill: the whole padded prompt with an empty cache; then one token per step on a growing cache
    assert recorder.calls[0] == {"seq": width, "past": 0, "present": width, "logits": (20, width, 400)}
    for step, call in enumerate(recorder.calls[1:], start=1):
        assert call == {"seq": 1, "past": width + step - 1, "present": width + step, "logits": (20, 1, 400)}
    assert len(recorder.calls) == max(len(row) for row in got)
    # every step's next-token logits, finished rows included, as generate saw them (a token match alone can
    # hide a wrong position or cache on a tiny random model)
    assert len(recorder.last_logits) == len(hf.logits)
    for ours, theirs in zip(recorder.last_logits, hf.logits):
        assert np.abs(ours - theirs.numpy()).max() < 1e-3

    for prompt in PROMPTS[:5]:
        ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            one = model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos,
                                 pad_token_id=lm.pad_token_id)[0, ids["input_ids"].shape[1]:].tolist()
        assert lm.generate([prompt], max_new_tokens=NEW_TOKENS, eos_token_id=eos) == [one]


def test_exported_directory_works_without_its_source(tmp_path, tiny_llama):
    from seektune.data.render import prompt_text
    from seektune.models.load import family_of, load_tokenizer

    source = tmp_path / "source"
    shutil.copytree(tiny_llama, source)
    export_onnx(source, tmp_path / "onnx")
    messages = [{"role": "user", "content": "How long do I have to return something?"}]
    expected_prompt = prompt_text(load_tokenizer(str(source), family_of(str(source), str(source))), messages)
    shutil.rmtree(source)
    moved = shutil.copytree(tmp_path / "onnx", tmp_path / "moved")
    shutil.rmtree(tmp_path / "onnx")

    lm = OnnxCausalLM(moved, threads=1)
    # the chat template seektune uses for this model (the registry's ChatML: the tokenizer had none) travelled along
    assert prompt_text(lm.tokenizer, messages) == expected_prompt and "<|im_start|>assistant" in expected_prompt
    tokens = lm.generate([expected_prompt], max_new_tokens=NEW_TOKENS)[0]
    reply = "".join(chat_backend(moved, threads=1)(messages, NEW_TOKENS))
    kept = [t for t in tokens if t not in lm.eos_token_id]
    assert reply == lm.tokenizer.decode(kept, skip_special_tokens=True) and reply


def test_large_weights_go_to_one_side_file(tmp_path, tiny_qwen2, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    figures = export_onnx(tiny_qwen2, tmp_path / "onnx")
    assert figures["files"] == ["model.onnx", "model.onnx.data"]
    graph, data = ((tmp_path / "onnx" / name).stat().st_size for name in figures["files"])
    assert figures["bytes"] == graph + data and data > graph  # the weight matrices live in the side file
    moved = shutil.copytree(tmp_path / "onnx", tmp_path / "moved")
    shutil.rmtree(tmp_path / "onnx")  # the graph must read the copied side file, not the original
    lm = OnnxCausalLM(moved, threads=1)
    batch = _left_padded(lm.tokenizer, PROMPTS[:3])
    with torch.no_grad():
        expected = _torch_model(tiny_qwen2)(**batch).logits.numpy()
    got = lm.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    assert np.abs(got - expected)[batch["attention_mask"].numpy().astype(bool)].max() < 1e-3


def test_unsupported_opset_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tmp_path / "missing", tmp_path / "out", opset=21)
