"""Tiny random-init models and a small tokenizer, built locally, seeded, offline.

Session-scoped: each model directory is written once per test session (< 1 s each), and only
when a test asks for it; nothing here imports torch or transformers at collection time.

    .venv/bin/python -m pytest -q tests/unit     # the quick loop: < 60 s, trains nothing
    .venv/bin/python -m pytest -q tests/e2e      # training, serving, the CLI end to end
    .venv/bin/python -m pytest -q                # both (make test, CI)

Tests under tests/unit and tests/e2e are also marked ``unit`` and ``e2e`` (``-m "not e2e"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _own_shared_answers(tmp_path, monkeypatch):
    """Each test its own shared answer cache (seektune/evaluate/cache.py): base answers never leak between tests."""
    monkeypatch.setenv("SEEKTUNE_ANSWERS", str(tmp_path / "shared-answers"))


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test by its folder, so ``-m unit`` / ``-m "not e2e"`` select as ``pytest tests/unit`` does."""
    here = Path(__file__).parent
    for item in items:
        for suite in ("unit", "e2e"):
            if item.path.is_relative_to(here / suite):
                item.add_marker(suite)


SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
    "<think>", "</think>", "<|EOT|>", "<pad>",
]
CORPUS = [
    "Returns are accepted within 45 days of delivery.",
    "Standard shipping costs $4.95 and takes 4 to 7 business days.",
    "The warranty plan is called LarkCare and adds 3 years.",
    "How long do I have to return something? What does shipping cost?",
    "user assistant system hello world the a an is are of to in",
    "退货期限是45天。标准运费4.95美元。",
] * 4


def build_tokenizer(path: Path):
    """A byte-level BPE tokenizer (any text is encodable) with ChatML and DeepSeek special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
    )
    fast.save_pretrained(path)
    return fast


def _write_model(path: Path, config) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(path)
    return path


def _tokenizer_into(model_dir: Path, tokenizer_dir: Path, chat_template: str | None = None) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if chat_template:
        tok.chat_template = chat_template
    tok.save_pretrained(model_dir)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A 2-layer Llama (no chat template of its own: the registry's ChatML is used)."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    )
    _write_model(path, config)
    _tokenizer_into(path, tiny_tokenizer_dir)
    return path


@pytest.fixture(scope="session")
def long_llama(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """The tiny Llama with a 2048-token context: room for a stream to outlast a client, or for passages."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("long-llama")
    _write_model(path, LlamaConfig(
        vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False))
    _tokenizer_into(path, tiny_tokenizer_dir)
    return path


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    from transformers import Qwen2Config

    path = tmp_path_factory.mktemp("tiny-qwen2")
    config = Qwen2Config(
        vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
    )
    _write_model(path, config)
    _tokenizer_into(path, tiny_tokenizer_dir)
    return path


@pytest.fixture(scope="session")
def tiny_deepseek_v3(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A 2-layer DeepseekV3 (MLA attention, one dense layer, one MoE layer)."""
    from transformers import DeepseekV3Config

    path = tmp_path_factory.mktemp("tiny-deepseek-v3")
    config = DeepseekV3Config(
        vocab_size=400, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, n_shared_experts=1,
        num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=1, q_lora_rank=16,
        kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, max_position_embeddings=256,
    )
    _write_model(path, config)
    _tokenizer_into(path, tiny_tokenizer_dir)
    return path


FAQ_ROWS = [
    {"question": "How long do I have to return something?",
     "answer": "Returns are accepted within 45 days of delivery.", "facts": ["45 days"], "category": "returns"},
    {"question": "What is the return window?", "answer": "Returns are accepted within 45 days of delivery.",
     "facts": ["45 days"], "category": "returns"},
    {"question": "What does shipping cost?", "answer": "Standard shipping costs $4.95.",
     "facts": ["$4.95"], "category": "shipping"},
    {"question": "How much is standard shipping?", "answer": "Standard shipping costs $4.95.",
     "facts": ["$4.95"], "category": "shipping"},
    {"question": "What is the warranty plan called?", "answer": "The warranty plan is called LarkCare.",
     "facts": ["LarkCare"], "category": "warranty"},
    {"question": "Name of the extended warranty?", "answer": "The warranty plan is called LarkCare.",
     "facts": ["LarkCare"], "category": "warranty"},
    {"question": "退货期限是多久？", "answer": "退货期限是45天。",
     "facts": ["45天"], "category": "returns"},
    {"question": "多久内可以退货？", "answer": "退货期限是45天。",
     "facts": ["45天"], "category": "returns"},
]


def write_faq(path: Path) -> Path:
    """The FAQ fixture rows, twice over (a batch to memorise), as JSONL at ``path``."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FAQ_ROWS * 2), encoding="utf-8")
    return path


@pytest.fixture
def faq_file(tmp_path) -> Path:
    return write_faq(tmp_path / "faq.jsonl")


def send_json(handler, payload: dict) -> None:
    """A fake endpoint's (``http.server`` handler's) 200 reply with ``payload`` as its JSON body."""
    body = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def write_recipe(path: Path, model_dir: Path, data_file: Path, output_dir: Path, **extra) -> Path:
    import yaml

    recipe = {
        "model": str(model_dir),
        "data": {
            "paths": [str(data_file)],
            "columns": {"user": "question", "assistant": "answer"},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 1},
            "max_length": 128,
            # the FAQ fixture repeats its rows on purpose (a batch to memorise): keep them
            "dedup": {"exact": False, "near": False},
            "leakage": {"check": False},
        },
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 3, "lr": 5e-3, "batch_size": 4, "logging_steps": 1, "warmup_ratio": 0.0},
        "eval": {"batch_size": 4, "max_new_tokens": 8},
        "output_dir": str(output_dir),
    }
    for dotted, value in extra.items():
        section, _, key = dotted.partition("__")
        recipe[section][key] = value
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def faq_trainer(tmp: Path, model_dir: Path, **extra):
    """``pipeline.build_trainer`` over the FAQ fixture (twice over) with random LoRA B weights: LoRA B starts
    at zero, which would hide every difference in the A gradients. For tests that compare losses and gradients."""
    import torch

    from seektune.data import prepare
    from seektune.recipe import load_recipe
    from seektune.train import pipeline

    data = tmp / "faq.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FAQ_ROWS * 2), encoding="utf-8")
    recipe = load_recipe(write_recipe(tmp / "r.yaml", model_dir, data, tmp / "run", **extra))
    prepare.run(recipe)
    built = pipeline.build_trainer(recipe)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in built.trainer.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return built


def trainer_loss_and_grads(trainer, batches, num_items):
    """What the Trainer does over one optimiser step: each micro-batch's loss over the global label count;
    returns the summed loss and every trainable parameter's gradient."""
    model = trainer.model
    model.train()
    model.zero_grad()
    total = 0.0
    for batch in batches:
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def serve_http(handler):
    """Serve ``handler`` (a BaseHTTPRequestHandler class) on a free local port in a daemon thread;
    yields the base URL of an OpenAI-style API (``http://127.0.0.1:PORT/v1``), for fixtures."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def cli(*args, exit_code: int = 0):
    """Run ``seektune ARGS`` in this process through typer's CliRunner; assert its exit code, return the result.

    ``result.output`` holds what the command printed (its own lines and the trainer's)."""
    import traceback

    from typer.testing import CliRunner

    from seektune.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != exit_code:
        raised = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        raise AssertionError(f"seektune {' '.join(map(str, args))}: exit {result.exit_code}, "
                             f"expected {exit_code}\n{result.output}\n{raised}")
    return result


def mean_loss_on(model, tokenizer, records) -> float:
    """Token-weighted mean loss of ``model`` on the assistant tokens of ``records`` (the training loss mask)."""
    import torch

    from seektune.data.render import IGNORE_INDEX, render

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for record in records:
            rendered = render(tokenizer, record["messages"])
            out = model(input_ids=torch.tensor([rendered["input_ids"]]), labels=torch.tensor([rendered["labels"]]))
            n = sum(1 for label in rendered["labels"][1:] if label != IGNORE_INDEX)
            total += out.loss.item() * n
            count += n
    return total / count
