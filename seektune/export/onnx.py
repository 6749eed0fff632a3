"""ONNX export of a causal LM with past key values, and greedy generation on onnxruntime.

    seektune export runs/customer-service --to onnx
    seektune chat runs/customer-service --backend onnx

One graph serves prefill and decoding. Its inputs are ``input_ids`` [batch, seq],
``attention_mask`` [batch, past + seq], ``position_ids`` [batch, seq] and, for every layer,
``past_key_values.{i}.key`` / ``.value`` [batch, kv_heads, past, head_dim]; its outputs are
``logits`` [batch, seq, vocab] and ``present.{i}.key`` / ``.value`` [batch, kv_heads,
past + seq, head_dim]. The first step feeds empty past tensors (past = 0).

The exported directory is self-contained for chat: ``model.onnx`` (and ``model.onnx.data``
when the weights are large), the tokenizer with its chat template, and ``onnx_config.json``.
Running it needs onnxruntime, numpy and the tokenizer, not torch.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
CONFIG_FILE = "onnx_config.json"
# Opset 17 runs on every onnxruntime since 1.14 and has all the TorchScript exporter needs
# (scaled_dot_product_attention lowers from opset 14); the TorchScript exporter stops at 20.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 20
# Above this many weight bytes the weights go to one side file: a protobuf stops at 2 GiB.
EXTERNAL_DATA_BYTES = 1 << 30
# The export checks itself: onnxruntime logits must match PyTorch's this closely (float32).
PARITY_TOLERANCE = 1e-2


class OnnxExportError(RuntimeError):
    pass


def input_names(num_layers: int) -> list[str]:
    return ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")
    ]


def output_names(num_layers: int) -> list[str]:
    return ["logits"] + [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def position_ids_from_mask(attention_mask: np.ndarray) -> np.ndarray:
    """Positions as Hugging Face ``generate`` computes them: count real tokens; padding gets 1."""
    positions = np.cumsum(attention_mask, axis=-1) - 1
    return np.where(attention_mask == 0, 1, positions).astype(np.int64)


# --------------------------------------------------------------------------- export


def _flat_cache_module(model, num_layers: int):
    """``model`` with the cache as flat tensors in and out, which is what an ONNX graph can carry."""
    import torch
    from transformers import DynamicCache

    class FlatCacheCausalLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            # DynamicCache's first argument (``ddp_cache_data``) fills each layer from (key, value) pairs.
            cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(num_layers)], config=self.model.config)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            present = []
            for layer in cache.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return FlatCacheCausalLM().eval()


def _cache_shapes(model) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per layer ((kv_heads, key_dim), (kv_heads, value_dim)), read from one real forward rather than guessed
    from config fields (head_dim, MLA's separate key and value widths, ... differ between families)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long), past_key_values=cache, use_cache=True)
    if any(cache.is_sliding) or any(getattr(layer, "keys", None) is None for layer in cache.layers):
        raise OnnxExportError(
            "ONNX export supports models whose every layer keeps a full key/value cache; this one has "
            "sliding-window or cache-sharing layers"
        )
    return [((layer.keys.shape[1], layer.keys.shape[3]), (layer.values.shape[1], layer.values.shape[3]))
            for layer in cache.layers]


def _example_inputs(shapes, vocab_size: int):
    """Batch 2, 3 new tokens after 4 cached ones, one row left-padded.

    Tracing records the Python branches these shapes take, so they must take the general ones: more
    than one new token (transformers packs grouped-query attention differently for exactly one), a
    non-empty cache (an empty one makes ``get_seq_length`` a constant 0), and batch > 1.
    """
    import torch

    batch, seq, past = 2, 3, 4
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch, seq), generator=generator)
    attention_mask = torch.ones(batch, past + seq, dtype=torch.long)
    attention_mask[0, :2] = 0
    position_ids = torch.from_numpy(position_ids_from_mask(attention_mask.numpy()))[:, past:]
    cache = []
    for (kv_heads, key_dim), (v_heads, value_dim) in shapes:
        cache += [torch.randn(batch, kv_heads, past, key_dim, generator=generator),
                  torch.randn(batch, v_heads, past, value_dim, generator=generator)]
    return (input_ids, attention_mask, position_ids, *cache)


def _dynamic_axes(num_layers: int) -> dict[str, dict[int, str]]:
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "past_plus_seq"},
            "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    for name in input_names(num_layers)[3:]:
        axes[name] = {0: "batch", 2: "past"}
    for name in output_names(num_layers)[1:]:
        axes[name] = {0: "batch", 2: "past_plus_seq"}
    return axes


def _trace_to_onnx(module, example, path: Path, num_layers: int, opset: int) -> None:
    """torch.onnx's TorchScript exporter (``dynamo=False``), chosen over the torch.export-based default
    after measuring both on SmolLM2-135M (torch 2.13, onnxruntime 1.32, one thread): it exported in 14 s
    against 84 s, its graph decoded at 37 tokens/s against 22, its logits were closer to PyTorch's
    (1e-4 against 6e-4), and it needs no onnxscript. Its cost is that Python branches are frozen at
    trace time, which ``_example_inputs`` handles and export_onnx's parity check verifies. The exporter is
    deprecated but present in torch 2.13; the warnings it is expected to give are silenced as noise."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # about negative indices in advanced indexing: the mask code indexes with aranges, never negative
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            module, example, str(path), dynamo=False, opset_version=opset,
            input_names=input_names(num_layers), output_names=output_names(num_layers),
            dynamic_axes=_dynamic_axes(num_layers),
        )


def _write_model_file(traced_dir: Path, out_dir: Path) -> list[str]:
    """Move the traced graph into ``out_dir``: one file, or the graph plus one ``model.onnx.data`` side file
    when the weights are large. The side file is filled tensor by tensor, so a multi-GB model is never held in
    memory twice; past 2 GiB the exporter itself writes one file per tensor, which this gathers up."""
    import onnx

    traced = traced_dir / MODEL_FILE
    for name in (MODEL_FILE, DATA_FILE):
        (out_dir / name).unlink(missing_ok=True)
    if len(list(traced_dir.iterdir())) == 1 and traced.stat().st_size <= EXTERNAL_DATA_BYTES:
        shutil.move(traced, out_dir / MODEL_FILE)
        return [MODEL_FILE]
    proto = onnx.load(str(traced), load_external_data=False)
    with open(out_dir / DATA_FILE, "wb") as data:
        for tensor in proto.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                where = {entry.key: entry.value for entry in tensor.external_data}
                with open(traced_dir / where["location"], "rb") as source:
                    source.seek(int(where.get("offset", 0)))
                    raw = source.read(int(where["length"])) if "length" in where else source.read()
            elif len(tensor.raw_data) > 1024:
                raw = tensor.raw_data
            else:
                continue  # small constants stay in the graph
            data.write(b"\0" * (-data.tell() % 4096))  # page-aligned, so onnxruntime can map the weights
            offset = data.tell()
            data.write(raw)
            tensor.ClearField("raw_data")
            del tensor.external_data[:]
            for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(proto, str(out_dir / MODEL_FILE))
    return [MODEL_FILE, DATA_FILE]


def _parity_case(module, example) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Inputs for a prefill with an empty cache (one row left-padded), PyTorch's logits for them, and the mask
    of real positions. Taken before tracing so that the PyTorch weights can be freed afterwards."""
    import torch

    input_ids, _, _, *cache = example
    mask = torch.ones_like(input_ids)
    mask[0, 0] = 0
    positions = torch.from_numpy(position_ids_from_mask(mask.numpy()))
    inputs = (input_ids, mask, positions, *[t[:, :, :0] for t in cache])
    with torch.no_grad():
        expected = module(*inputs)[0].numpy()
    return [t.numpy() for t in inputs], expected, mask.numpy().astype(bool)


def _parity(model_file: Path, inputs: list[np.ndarray], expected: np.ndarray, real: np.ndarray) -> float:
    """Max |logit difference| between onnxruntime and PyTorch over the real (unpadded) positions."""
    session = _session(model_file, threads=None)
    got = session.run(["logits"], dict(zip(input_names((len(inputs) - 3) // 2), inputs)))[0]
    return float(np.abs(got - expected)[real].max())


def export_onnx(model_dir: Path, out_dir: Path, *, opset: int | None = None) -> dict[str, Any]:
    """Write ``out_dir/model.onnx`` (float32, with past key values), the tokenizer and ``onnx_config.json``.

    ``model_dir`` is a Hugging Face causal-LM directory (Llama, Qwen2, ... ; a run's merged export).
    Returns the figures for export.json: file, bytes, opset, layers, parity against PyTorch.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from seektune.models.load import family_of, load_tokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    opset = DEFAULT_OPSET if opset is None else opset
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET} for this exporter, got {opset}")
    # The chat template is resolved the way training and `seektune chat` resolve it (the tokenizer's own,
    # else the family's), then saved with the tokenizer so the ONNX directory needs nothing else.
    tokenizer = load_tokenizer(str(model_dir), family_of(str(model_dir), str(model_dir)))
    # float32: onnxruntime's CPU kernels have no bfloat16 matmul, and float16 on CPU is slower than float32.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    if model._can_set_experts_implementation():
        # Mixture-of-experts (DeepSeek-V3, Qwen-MoE): the default kernels pick experts with data-dependent
        # shapes (histc, a loop over the experts hit) that a trace would freeze; batched_mm gathers each
        # token's expert weights with static shapes, so the graph routes every input correctly.
        model.set_experts_implementation("batched_mm")
    shapes = _cache_shapes(model)
    num_layers, model_type = len(shapes), model.config.model_type
    vocab_size = int(model.config.get_text_config().vocab_size)
    module = _flat_cache_module(model, num_layers)
    example = _example_inputs(shapes, vocab_size)
    parity_inputs, expected, real = _parity_case(module, example)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onnx-trace-", dir=out_dir) as traced:
        _trace_to_onnx(module, example, Path(traced) / MODEL_FILE, num_layers, opset)
        del model, module, example  # the PyTorch weights are not needed again: lower the peak for what follows
        gc.collect()
        files = _write_model_file(Path(traced), out_dir)
    diff = _parity(out_dir / MODEL_FILE, parity_inputs, expected, real)
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise OnnxExportError(f"onnxruntime logits differ from PyTorch's by {diff:.3g} (> {PARITY_TOLERANCE})")

    tokenizer.save_pretrained(out_dir)
    eos_ids = [tokenizer.convert_tokens_to_ids(tokenizer.eos_token)] if tokenizer.eos_token else []
    (kv_heads, head_dim), (_, value_dim) = shapes[0]
    config = {
        "format": "seektune-onnx-causal-lm",
        "model_type": model_type,
        "source": str(model_dir),
        "num_layers": num_layers,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "value_head_dim": value_dim,
        "cache_shapes": [[list(k), list(v)] for k, v in shapes],
        "vocab_size": vocab_size,
        "dtype": "float32",
        "opset": opset,
        "inputs": input_names(num_layers),
        "outputs": output_names(num_layers),
        "eos_token_id": eos_ids,  # a list: some models end a turn with either of two tokens
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0],
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return {
        "file": MODEL_FILE,
        "files": files,
        "bytes": sum((out_dir / name).stat().st_size for name in files),
        "opset": opset,
        "layers": num_layers,
        "exporter": "torch.onnx TorchScript tracing (dynamo=False)",
        "max_abs_logit_diff": diff,
    }


# --------------------------------------------------------------------------- runtime


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxCausalLM:
    """An exported directory on onnxruntime (CPU): full forwards, greedy generation with the KV cache, and a
    streaming chat reply."""

    def __init__(self, onnx_dir: str | Path, *, threads: int | None = None):
        from transformers import AutoTokenizer

        self.dir = Path(onnx_dir)
        config_file = self.dir / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{self.dir} has no {CONFIG_FILE}; is it a `seektune export --to onnx` directory?")
        self.config = json.loads(config_file.read_text(encoding="utf-8"))
        self.session = _session(self.dir / MODEL_FILE, threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.dir)
        self.pad_token_id: int = self.config["pad_token_id"]
        self.eos_token_id: list[int] = self.config["eos_token_id"]
        self._past_names = self.config["inputs"][3:]

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        cache = []
        for (kv_heads, key_dim), (v_heads, value_dim) in self.config["cache_shapes"]:
            cache += [np.zeros((batch, kv_heads, 0, key_dim), np.float32),
                      np.zeros((batch, v_heads, 0, value_dim), np.float32)]
        return cache

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One graph call: (logits [batch, seq, vocab], present key/values [batch, heads, past + seq, dim])."""
        feeds = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64),
                 "position_ids": np.asarray(position_ids, np.int64), **dict(zip(self._past_names, past))}
        logits, *present = self.session.run(None, feeds)
        return logits, present

    def logits(self, input_ids, attention_mask) -> np.ndarray:
        """A full forward with an empty cache (padded rows: positions counted like Hugging Face does)."""
        input_ids, attention_mask = np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64)
        positions = position_ids_from_mask(attention_mask)
        return self.forward(input_ids, attention_mask, positions, self.empty_cache(len(input_ids)))[0]

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        if not rows or any(len(row) == 0 for row in rows):
            raise ValueError("every prompt needs at least one token")
        width = max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), self.pad_token_id, np.int64)
        attention_mask = np.zeros((len(rows), width), np.int64)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row):] = row
            attention_mask[i, width - len(row):] = 1
        return input_ids, attention_mask

    def greedy_steps(self, rows: Sequence[Sequence[int]], max_new_tokens: int,
                     eos_token_id: Sequence[int]) -> Iterator[np.ndarray]:
        """Yield the next token of every row, step by step; a finished row yields -1. Prefill takes the whole
        left-padded batch with an empty cache; each later step feeds one token and the growing cache."""
        input_ids, attention_mask = self._left_pad(rows)
        positions = position_ids_from_mask(attention_mask)
        past = self.empty_cache(len(rows))
        done = np.zeros(len(rows), bool)
        eos = np.asarray(list(eos_token_id), np.int64)
        for _ in range(max_new_tokens):
            logits, past = self.forward(input_ids, attention_mask, positions, past)
            # a finished row goes on decoding padding, unseen by the others, as Hugging Face generate does
            next_tokens = np.where(done, self.pad_token_id, logits[:, -1].argmax(-1))
            yield np.where(done, -1, next_tokens)
            done |= np.isin(next_tokens, eos)
            if done.all():
                return
            input_ids = next_tokens[:, None]
            attention_mask = np.concatenate([attention_mask, np.ones((len(rows), 1), np.int64)], axis=1)
            positions = positions[:, -1:] + 1

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a prompt; text is taken as already rendered (chat template included), so no special
        tokens are added."""
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return [int(t) for t in prompt]

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 64,
                 eos_token_id: int | Sequence[int] | None = None) -> list[list[int]]:
        """Greedy new tokens per prompt, batched with left padding; each list ends at its first EOS (kept)."""
        eos = self.eos_token_id if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int)
                                                              else list(eos_token_id))
        results: list[list[int]] = [[] for _ in prompts]
        for tokens in self.greedy_steps([self.encode(p) for p in prompts], max_new_tokens, eos):
            for row, token in zip(results, tokens.tolist()):
                if token >= 0:
                    row.append(token)
        return results

    def stream(self, messages: list[dict[str, Any]], max_new_tokens: int = 256) -> Iterator[str]:
        """The assistant's reply to ``messages`` as text pieces, as they are decoded (EOS and special tokens
        left out). A piece is held back while it ends in half a multi-byte character."""
        from seektune.data.render import prompt_ids

        ids = self.encode(prompt_ids(self.tokenizer, messages))  # user text never becomes a control token
        tokens: list[int] = []
        sent = ""
        for step in self.greedy_steps([ids], max_new_tokens, self.eos_token_id):
            token = int(step[0])
            if token < 0 or token in self.eos_token_id:
                break
            tokens.append(token)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd") or len(text) <= len(sent):
                continue
            yield text[len(sent):]
            sent = text
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if len(text) > len(sent):
            yield text[len(sent):]


def chat_backend(onnx_dir: str | Path, *, threads: int | None = None) -> Callable[[list[dict], int], Iterator[str]]:
    """``(messages, max_new_tokens) -> text pieces`` over an exported directory, for ``seektune chat``."""
    model = OnnxCausalLM(onnx_dir, threads=threads)

    def reply(messages: list[dict], max_new_tokens: int = 256) -> Iterator[str]:
        return model.stream(messages, max_new_tokens)

    return reply
