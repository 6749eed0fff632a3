"""GPU training benchmark: seektune's training path against plain trl on real-size DeepSeek-shaped models.

    python benchmarks/gpu.py                      # one H200: about 8 minutes (--budget-s 480), bf16
    python benchmarks/gpu.py --dry-run            # the same code on the CPU, tiny shapes, fp32 (~1 minute)
    python benchmarks/gpu.py --shapes r1-distill-qwen-7b --budget-s 200   # one shape

On the lent GPU machine (no network) the missing packages travel as wheels made by
``benchmarks/gpu_wheels.sh``; see benchmarks/README.md, "gpu.py", for the whole device command.

Models are built from the real configurations (the dicts in SHAPES, copied from each model's
config.json) with random weights drawn on the device: throughput does not depend on the
weights, and a 7B checkpoint of random numbers would cost 15 GB of disk and a minute of the
lease. seektune still resolves the model directory (config + tokenizer), picks the family,
chat template, dtype, quantisation and everything after loading; only the reading of weights
is replaced (``load_random_weights``). The tokenizer is a byte-level BPE trained here on the
customer-service FAQ (no tokenizer can be downloaded there); its ids fit every vocabulary.

Every side trains the same rendered rows (``long_tail_rows`` of ``train_throughput.py``, the
answers repeated so the longest rows reach ~2k tokens), in the same order, from the same
random weights, for the same optimiser steps of the same rows:

* ``seektune``: ``seektune.train.pipeline.build_trainer``, what ``seektune train`` runs: LoRA
  r=16 on all linear layers, padding-free batches with per-row attention (flash-attention's
  varlen kernel when ``flash_attn`` is installed, per-row sdpa otherwise), trl's label-only
  fused head on CUDA, its memory plan (``gradient_checkpointing: auto``) and Liger when
  installed; ``train.sampling=random`` so that it draws trl's row order.
* ``trl``: plain ``trl.SFTTrainer`` with its defaults (padded batches, bf16, gradient
  checkpointing, no Liger) on the same rows, given as ``input_ids``/``labels``;
  ``max_length=None`` since the rows are already rendered (trl's 1,024 would cut the long ones).
* ``trl_padding_free``: the same with trl's own ``padding_free=True``.

Extra cases: QLoRA (4-bit NF4, bitsandbytes) on the 7B shape, Liger on and off on the 7B
shape, full fine-tuning on the 1.5B shape. A case that cannot run here (no CUDA, a package
missing, the architecture missing from this transformers) prints a line with ``skipped`` and
the reason; a case that fails prints ``error``. Once ``--budget-s`` is spent the remaining
cases are skipped.

Figures per case (one JSON line each): non-padding tokens/s over the steps after the warm-up
ones; MFU = useful FLOP/s over a bf16 ``torch.mm`` peak measured at the start of the same run
(fp32 in the dry run); useful FLOPs are those of ``train_throughput.useful_flops`` (forward and
input-gradient backward of real tokens, causal attention per row, the head on labelled
tokens only; for full fine-tuning 1.5x that for the weight gradients; MLA/MoE counted with
the routed experts each token runs); peak memory during training (CUDA: the allocator's peak
after the model is built; CPU: the process's peak resident set, reset before training);
first and last training loss. The last line is a summary whose ``ratio`` is seektune's
tokens/s over trl padding-free's on the 7B shape (or the first shape where both ran).

Each shape runs in its own process; Liger patches transformers' modules for the rest of a
process, so within a shape the cases that may use Liger run last.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from train_throughput import EXAMPLE, BatchLog, long_tail_rows, step_timer, useful_flops

SEED = 7
SYSTEM_PROMPT = "You are the customer support assistant of Larkspur Goods."

# ---------------------------------------------------------------- the model shapes (facts from each config.json)

SHAPES = {
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (Qwen2 architecture)
    "r1-distill-qwen-7b": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=3584, intermediate_size=18944,
        num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
        max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        use_sliding_window=False, sliding_window=4096, max_window_layers=28, hidden_act="silu"),
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (Qwen2 architecture)
    "r1-distill-qwen-1.5b": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=1536, intermediate_size=8960,
        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
        max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        use_sliding_window=False, sliding_window=4096, max_window_layers=21, hidden_act="silu"),
    # deepseek-ai/DeepSeek-V2-Lite: MLA attention (no q-LoRA), 1 dense layer then MoE (64 routed experts, 6 per
    # token, 2 shared); 15.7B parameters, 2.4B active per token. Its YaRN rope scaling is left out: it changes no
    # FLOP and its config keys moved between transformers versions.
    "deepseek-v2-lite": dict(
        model_type="deepseek_v2", architectures=["DeepseekV2ForCausalLM"], hidden_size=2048, intermediate_size=10944,
        moe_intermediate_size=1408, num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16,
        n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1, q_lora_rank=None,
        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, vocab_size=102400,
        n_group=1, topk_group=1, topk_method="greedy", norm_topk_prob=False, routed_scaling_factor=1.0,
        max_position_embeddings=163840, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        attention_bias=False, hidden_act="silu"),
    # meta-llama/Meta-Llama-3-8B
    "llama-3-8b": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
        max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attention_bias=False, hidden_act="silu"),
}
# The dry run keeps each architecture (GQA, MLA, MoE with a dense first layer) at a size a CPU core trains in seconds.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=1024)
TINY_EXTRA = {
    "r1-distill-qwen-7b": dict(num_key_value_heads=2, max_window_layers=2),
    "r1-distill-qwen-1.5b": dict(num_key_value_heads=2, max_window_layers=2),
    "deepseek-v2-lite": dict(num_key_value_heads=4, moe_intermediate_size=32, n_routed_experts=4,
                             num_experts_per_tok=2, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                             v_head_dim=8),
    "llama-3-8b": dict(num_key_value_heads=2),
}
HEADLINE = "r1-distill-qwen-7b"


@dataclass(frozen=True)
class Case:
    shape: str
    side: str  # seektune | trl | trl_padding_free
    method: str  # lora | qlora | full
    liger: bool | None = None  # None: the side's own default (seektune: on when installed on a GPU; trl: off)

    @property
    def name(self) -> str:
        liger = {None: "", True: "/liger", False: "/no-liger"}[self.liger]
        return f"{self.shape}/{self.side}/{self.method}{liger}"

    @property
    def slug(self) -> str:
        return self.name.split("/", 1)[1].replace("/", "-")


def _cases(shape: str, *sides: tuple) -> list[Case]:
    return [Case(shape, *side) for side in sides]


# In the order they run (most wanted first); within a shape, those that may use Liger last (see the module doc).
PLAN = {
    "r1-distill-qwen-7b": _cases("r1-distill-qwen-7b", ("trl_padding_free", "lora"), ("trl", "lora"),
                                 ("seektune", "lora", False), ("trl_padding_free", "qlora"), ("seektune", "lora"),
                                 ("seektune", "qlora"), ("trl_padding_free", "lora", True)),
    "r1-distill-qwen-1.5b": _cases("r1-distill-qwen-1.5b", ("trl_padding_free", "lora"), ("trl", "lora"),
                                   ("trl_padding_free", "full"), ("seektune", "lora"), ("seektune", "full")),
    "deepseek-v2-lite": _cases("deepseek-v2-lite", ("trl_padding_free", "lora"), ("trl", "lora"), ("seektune", "lora")),
    "llama-3-8b": _cases("llama-3-8b", ("trl_padding_free", "lora"), ("trl", "lora"), ("seektune", "lora")),
}


@dataclass(frozen=True)
class Settings:
    steps: int  # optimiser steps per case
    warmup: int  # steps left out of the timing (kernels compile, the allocator grows)
    batch_size: int  # rows per optimiser step
    rows: int  # long-tail rows generated (90% train)
    target_tokens: int  # the longest rows reach about this many tokens
    matmul_n: int  # size of the square matmul that measures the peak


GPU = Settings(steps=12, warmup=2, batch_size=16, rows=400, target_tokens=2048, matmul_n=8192)
DRY = Settings(steps=3, warmup=1, batch_size=4, rows=40, target_tokens=160, matmul_n=512)


def shape_config(shape: str, dry_run: bool) -> dict:
    return {**SHAPES[shape], **(TINY | TINY_EXTRA[shape] if dry_run else {})}


# ---------------------------------------------------------------- inputs: tokenizer, model folders, rows, recipes


SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
    "<think>", "</think>", "<|EOT|>", "<pad>",
]


def build_tokenizer(texts: list[str], vocab_size: int = 1000):
    """A byte-level BPE (any text encodes) with the ChatML and DeepSeek special tokens, as tests/conftest.py builds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<pad>")


def scaled_rows(tokenizer, n: int, target_tokens: int) -> tuple[list[dict], int]:
    """``long_tail_rows`` with each answer repeated so that the longest rows reach about ``target_tokens``: the
    same long-tailed length distribution, stretched (the repeat factor is returned)."""
    rows = long_tail_rows(n, seed=0)
    longest_answer = max(len(tokenizer(r["answer"])["input_ids"]) for r in rows)
    longest_prompt = max(len(tokenizer(SYSTEM_PROMPT + r["question"])["input_ids"]) for r in rows) + 32  # template
    repeat = max(1, (target_tokens - longest_prompt) // longest_answer)
    return [{**r, "answer": " ".join([r["answer"]] * repeat)} for r in rows], repeat


def write_inputs(workdir: Path, shapes: list[str], settings: Settings, dry_run: bool) -> dict:
    """Model folders (config.json + tokenizer, no weights), the rows and one recipe per shape, under ``workdir``."""
    import yaml
    from transformers import AutoConfig

    faq = [json.loads(line) for line in (EXAMPLE / "data" / "faq_en.jsonl").read_text(encoding="utf-8").splitlines()]
    tokenizer = build_tokenizer([r["question"] for r in faq] + [r["answer"] for r in faq] + [SYSTEM_PROMPT])
    rows, repeat = scaled_rows(tokenizer, settings.rows, settings.target_tokens)
    (workdir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for shape in shapes:
        model_dir = workdir / "models" / shape  # the folder name is what picks seektune's model family
        fields = shape_config(shape, dry_run)
        AutoConfig.for_model(fields.pop("model_type"), **fields).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        (workdir / shape).mkdir(parents=True, exist_ok=True)
        (workdir / shape / "recipe.yaml").write_text(yaml.safe_dump({
            "model": str(model_dir),
            "data": {"paths": [str(workdir / "rows.jsonl")], "format": "columns",
                     "columns": {"user": "question", "assistant": "answer"}, "system_prompt": SYSTEM_PROMPT,
                     "max_length": 2 * settings.target_tokens,  # rows are sized by `repeat`; none is cut
                     "dedup": {"exact": False, "near": False}, "leakage": {"check": False},
                     "filters": {"max_repetition": None},  # the answers repeat on purpose
                     "split": {"train": 0.9, "val": 0.1, "test": 0.0, "seed": SEED}},
            "train": {"lr": 2.0e-4, "seed": SEED},
        }), encoding="utf-8")
    return {"rows": len(rows), "answer_repeat": repeat}


def case_overrides(case: Case, settings: Settings) -> list[str]:
    return [f"train.max_steps={settings.steps}", f"train.batch_size={settings.batch_size}", "train.grad_accum=1",
            "train.logging_steps=1", "train.val_loss=false", "train.report_to=[]",
            "train.sampling=random",  # with the same seed: trl's row order, so the losses can be compared
            f"method.name={case.method}", "method.r=16", "method.alpha=32", "method.dropout=0.0",
            "method.target_modules=all-linear"]


# ---------------------------------------------------------------- random weights, through seektune's loading


def random_model(config, dtype, quantization_config=None):
    """The architecture of ``config`` with random weights drawn on the device (seeded: every side gets the same).

    QLoRA: the bf16 weights are handed to ``from_pretrained`` as a state dict so that transformers' bitsandbytes
    quantiser makes the 4-bit model, as it does from a checkpoint (falling back to a checkpoint on disk)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(SEED)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if quantization_config is None:
        return model
    model_class, state = type(model), model.state_dict()
    del model
    kwargs = dict(config=config, quantization_config=quantization_config, device_map={"": 0}, dtype=dtype)
    try:
        return model_class.from_pretrained(None, state_dict=state, **kwargs)
    except Exception as exc:  # noqa: BLE001 - an older transformers may refuse a state dict with a quantiser
        print(f"gpu.py: quantising from a state dict failed ({exc!r}); writing a checkpoint instead", file=sys.stderr)
        from safetensors.torch import save_file

        folder = Path(tempfile.mkdtemp(prefix="seektune-gpu-weights-"))
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
            config.save_pretrained(folder)
            del state
            return model_class.from_pretrained(folder, **kwargs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def load_random_weights(name, *, dtype="auto", chat_template=None, trust_remote_code=False, device=None,
                        quantization_config=None):
    """``seektune.models.load.load_model`` with the weights drawn at random instead of read (see the module doc):
    the same folder resolution, family, tokenizer and chat template, dtype and quantisation."""
    from transformers import AutoConfig

    from seektune.models.load import LoadedModel, family_of, load_tokenizer, pick_dtype, resolve_model_path

    path = resolve_model_path(name)
    family = family_of(name, path)
    tokenizer = load_tokenizer(path, family, chat_template, trust_remote_code)
    model = random_model(AutoConfig.from_pretrained(path), pick_dtype(dtype), quantization_config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, family, path)


# ---------------------------------------------------------------- one case (inside a shape's worker process)


def mla_moe_useful_flops(config, batch: dict) -> float:
    """``train_throughput.useful_flops`` for Multi-head Latent Attention and MoE layers (DeepSeek-V2/V3): the
    weights each token multiplies (its routed experts, the shared ones, the router), attention scores per row."""
    hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    qk, v = config.qk_nope_head_dim + config.qk_rope_head_dim, config.v_head_dim
    rank = config.q_lora_rank
    query = hidden * heads * qk if not rank else hidden * rank + rank * heads * qk
    attention = (query + hidden * (config.kv_lora_rank + config.qk_rope_head_dim)
                 + config.kv_lora_rank * heads * (config.qk_nope_head_dim + v) + heads * v * hidden)
    experts = config.n_shared_experts + config.num_experts_per_tok
    moe = 3 * hidden * config.moe_intermediate_size * experts + hidden * config.n_routed_experts
    dense_layers = config.first_k_dense_replace
    weights = layers * attention + dense_layers * 3 * hidden * config.intermediate_size + (layers - dense_layers) * moe
    forward = (2 * weights * batch["real"] + layers * sum(n * n for n in batch["lengths"]) * heads * (qk + v)
               + 2 * hidden * config.vocab_size * batch["labelled"])
    return 2.0 * forward


def case_flops(config, batch: dict, full: bool) -> float:
    mla = getattr(config, "kv_lora_rank", None) is not None
    flops = mla_moe_useful_flops(config, batch) if mla else useful_flops(config, batch)
    return 1.5 * flops if full else flops  # full fine-tuning adds the weight-gradient matmuls: one more forward


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def skip_reason(case: Case, cuda: bool) -> str | None:
    if case.method == "qlora" and not cuda:
        return "QLoRA quantises the base to 4-bit NF4 with bitsandbytes, whose kernels need a CUDA GPU (this is a CPU)"
    if case.method == "qlora" and not has("bitsandbytes"):
        return "bitsandbytes is not installed (benchmarks/gpu_wheels.sh brings it)"
    if case.liger is not None and not cuda:
        return "Liger's kernels are Triton GPU kernels (this is a CPU; seektune's default runs without Liger here)"
    if case.liger is not None and not has("liger_kernel"):
        return "liger-kernel is not installed (benchmarks/gpu_wheels.sh brings it)"
    return None


@contextlib.contextmanager
def liger_hidden(hide: bool):
    """seektune turns Liger on when ``liger_kernel`` can be found; a ``None`` in ``sys.modules`` makes
    ``importlib.util.find_spec`` answer None, as on a machine without it (liger-off cases run before any Liger)."""
    if not hide:
        yield
        return
    sys.modules["liger_kernel"] = None
    try:
        yield
    finally:
        sys.modules.pop("liger_kernel", None)


def seektune_trainer(recipe):
    from seektune.train import pipeline

    return pipeline.build_trainer(recipe).trainer


def trl_trainer(recipe, case: Case, cuda: bool):
    """Plain trl.SFTTrainer on seektune's rendered rows, with trl's defaults except where the module doc says."""
    from trl import SFTConfig, SFTTrainer

    from seektune.train import pipeline
    from seektune.train.methods import PEFT_METHODS, apply_freezing, peft_config, quantization_config

    loaded = load_random_weights(recipe.model.name, dtype=recipe.model.dtype,
                                 quantization_config=quantization_config(recipe.method))
    apply_freezing(loaded.model, recipe.method)
    train_set, _, _ = pipeline.render_splits(recipe, loaded.tokenizer)
    train = recipe.train
    args = SFTConfig(
        output_dir=str(recipe.run_dir / "checkpoints"), max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size, learning_rate=train.lr, lr_scheduler_type=train.schedule,
        warmup_steps=train.warmup_ratio, seed=train.seed, data_seed=train.seed, logging_steps=1,
        eval_strategy="no", save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True,
        max_length=None,  # the rows are rendered and sized already (trl's padding_free also requires it)
        padding_free=case.side == "trl_padding_free", use_liger_kernel=case.liger is True,
        # on the CPU (dry run) trl's bf16 autocast default is far too slow; on a GPU trl keeps its default
        **({} if cuda else {"bf16": False, "use_cpu": True}),
    )
    adapter = peft_config(recipe.method, loaded.family, loaded.model) if recipe.method.name in PEFT_METHODS else None
    return SFTTrainer(model=loaded.model, args=args, train_dataset=train_set.remove_columns(["length"]),
                      processing_class=loaded.tokenizer, peft_config=adapter)


def cuda_sync_callback():
    """Makes the step timer's clock read after the GPU has finished the step (added before the timer)."""
    import torch
    from transformers import TrainerCallback

    class CudaSync(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()

    return CudaSync()


def reset_peak_memory(cuda: bool) -> bool:
    """Start a fresh peak: CUDA's allocator counter, or the process's peak RSS (Linux: clear_refs 5)."""
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_gib(cuda: bool) -> float:
    import resource

    import torch

    if cuda:
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 2**20
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(trainer, settings: Settings, peak_flops: float, full: bool, cuda: bool) -> dict:
    """Train, timing the steps after the warm-up ones; tokens and FLOPs counted from the batches the collator made."""
    from seektune.train.packing import causal_lm_of

    log = BatchLog(trainer.data_collator)
    trainer.data_collator = log
    if cuda:
        trainer.add_callback(cuda_sync_callback())
    timer = step_timer()
    trainer.add_callback(timer)
    fresh_peak = reset_peak_memory(cuda)
    trainer.train()
    peak = peak_memory_gib(cuda)
    steps, accum = trainer.state.global_step, trainer.args.gradient_accumulation_steps
    steady = log.batches[settings.warmup * accum: steps * accum]  # the dataloader may fetch one batch ahead
    seconds = timer.ends[steps - 1] - timer.ends[settings.warmup - 1]
    config = causal_lm_of(trainer.model).config
    real, computed = sum(b["real"] for b in steady), sum(b["computed"] for b in steady)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    figures = {
        "steps": steps,
        "tokens_per_s": real / seconds,
        "mfu": sum(case_flops(config, b, full) for b in steady) / seconds / peak_flops,
        "peak_mem_gib": peak,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "s_per_step": seconds / (steps - settings.warmup),
        "padding_efficiency": real / computed,
        "real_tokens_per_step": real / (steps - settings.warmup),
        "attention": config._attn_implementation,
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "micro_batch": trainer.args.per_device_train_batch_size,
        "liger": bool(trainer.args.use_liger_kernel),
    }
    if cuda:
        figures["peak_reserved_gib"] = torch_reserved_gib()
    if not fresh_peak:
        figures["peak_mem_note"] = "process peak since start (could not reset it)"
    return figures


def torch_reserved_gib() -> float:
    import torch

    return torch.cuda.max_memory_reserved() / 2**30


def run_case(case: Case, shape_dir: Path, settings: Settings, peak_flops: float, deadline: float, cuda: bool) -> dict:
    from seektune.recipe import load_recipe

    line = {"case": case.name, "shape": case.shape, "side": case.side, "method": case.method, "liger": case.liger,
            "steps": settings.steps}
    reason = skip_reason(case, cuda)
    if reason is None and time.time() > deadline:
        reason = "the time budget (--budget-s) was spent before this case"
    if reason:
        return {**line, "skipped": reason}
    out_dir = shape_dir / case.slug
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(shape_dir / "prepared" / "data", out_dir / "data")
    recipe = load_recipe(shape_dir / "recipe.yaml", case_overrides(case, settings) + [f"output_dir={out_dir}"])
    started = time.perf_counter()
    try:
        with liger_hidden(case.side == "seektune" and case.liger is False):
            trainer = seektune_trainer(recipe) if case.side == "seektune" else trl_trainer(recipe, case, cuda)
        built_s = time.perf_counter() - started
        figures = measure(trainer, settings, peak_flops, case.method == "full", cuda)
    except Exception as exc:  # noqa: BLE001 - one case failing (an OOM, a kernel) must not stop the others
        traceback.print_exc()
        return {**line, "error": f"{type(exc).__name__}: {exc}"[:600]}
    return {**line, **figures, "build_s": built_s, "wall_s": time.perf_counter() - started}


def worker(shape: str, workdir: Path, settings: Settings, peak_flops: float, deadline: float) -> None:
    """Prepare the shape's data once, then run its cases in order, one JSON line each on the real stdout."""
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # everything else anything prints (seektune, trl, C libraries) goes to the log
    sys.stdout = sys.stderr
    import torch

    from seektune.data import prepare
    from seektune.recipe import load_recipe
    from seektune.train import pipeline

    # The one substitution: weights drawn at random rather than read (see the module doc and load_random_weights).
    pipeline.load_model = load_random_weights
    cuda = torch.cuda.is_available()
    shape_dir = workdir / shape
    prepared = load_recipe(shape_dir / "recipe.yaml", [f"output_dir={shape_dir / 'prepared'}"])
    prepare.run(prepared)
    for case in PLAN[shape]:
        print(f"gpu.py: {case.name}", file=sys.stderr, flush=True)
        line = run_case(case, shape_dir, settings, peak_flops, deadline, cuda)
        results.write(json.dumps(line) + "\n")
        results.flush()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


# ---------------------------------------------------------------- the run


def matmul_peak_flops(n: int, cuda: bool, repeats: int = 10) -> float:
    """FLOP/s of a square ``torch.mm`` (bf16 on the GPU, fp32 on the CPU): the mean of ``repeats`` after 3 warm-ups."""
    import torch

    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del a, b
    if cuda:
        torch.cuda.empty_cache()
    return 2 * n**3 * repeats / seconds


def run_worker(shape: str, args, settings: Settings, peak_flops: float, deadline: float, log) -> list[dict]:
    """One shape's process: its JSON lines as they come; a line for each case it never reported."""
    command = [sys.executable, __file__, "--worker", shape, "--workdir", str(args.workdir),
               "--peak-flops", repr(peak_flops), "--deadline", repr(deadline)] + (["--dry-run"] if args.dry_run else [])
    command += ["--steps", str(settings.steps), "--batch-size", str(settings.batch_size)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=os.environ.copy())
    # a case still running at the end of the budget gets --grace-s more, then the worker is stopped
    watchdog = threading.Timer(max(1.0, deadline + args.grace_s - time.time()), process.kill)
    watchdog.start()
    lines = []
    try:
        for raw in process.stdout:
            line = json.loads(raw)
            lines.append(line)
            print(json.dumps(line), flush=True)
        process.wait()
    finally:
        watchdog.cancel()
    done = {line["case"] for line in lines}
    for case in PLAN[shape]:
        if case.name in done:
            continue
        base = {"case": case.name, "shape": case.shape, "side": case.side, "method": case.method,
                "liger": case.liger, "steps": settings.steps}
        if time.time() >= deadline + args.grace_s - 1:
            line = {**base, "skipped": f"stopped at the end of the time budget (--budget-s + {args.grace_s:g} s)"}
        else:
            line = {**base, "error": f"the shape's process exited ({process.returncode}) before this case; see the log"}
        lines.append(line)
        print(json.dumps(line), flush=True)
    return lines


def summarise(lines: list[dict], peak_flops: float, args, inputs: dict, started: float, cuda: bool) -> dict:
    ran = {line["case"]: line for line in lines if "tokens_per_s" in line}

    def figure(shape, side, method="lora", liger=None, key="tokens_per_s"):
        line = ran.get(Case(shape, side, method, liger).name)
        return line[key] if line else None

    by_shape = {}
    for shape in PLAN:
        ours, pf, plain = (figure(shape, s) for s in ("seektune", "trl_padding_free", "trl"))
        by_shape[shape] = {"seektune": ours, "trl_padding_free": pf, "trl": plain,
                           "ratio": ours / pf if ours and pf else None,
                           "ratio_vs_trl_defaults": ours / plain if ours and plain else None}
    headline = next((s for s in [HEADLINE, *PLAN] if by_shape[s]["ratio"]), None)
    agreement = None
    if headline:
        ours, pf = (ran[Case(headline, side, "lora").name]["losses"] for side in ("seektune", "trl_padding_free"))
        agreement = max(abs(a - b) / abs(b) for a, b in zip(ours, pf))
    return {
        "ratio": by_shape[headline]["ratio"] if headline else None,
        "ratio_shape": headline,
        "ratio_is": "seektune tokens/s / trl padding_free tokens/s (LoRA r=16 all-linear, same rows and steps)",
        "loss_agreement": agreement,
        "loss_agreement_is": "max over steps of |seektune loss - trl padding_free loss| / trl's, on ratio_shape",
        "ratio_liger_off": (figure(HEADLINE, "seektune", liger=False) / by_shape[HEADLINE]["trl_padding_free"]
                            if figure(HEADLINE, "seektune", liger=False) and by_shape[HEADLINE]["trl_padding_free"]
                            else None),
        "by_shape": by_shape,
        "matmul_peak_tflops": peak_flops / 1e12,
        "matmul_peak_is": f"{'bf16' if cuda else 'fp32'} torch.mm {(DRY if args.dry_run else GPU).matmul_n}^3",
        "cases": {"ran": len(ran), "skipped": sum("skipped" in line for line in lines),
                  "errors": sum("error" in line for line in lines)},
        "dry_run": bool(args.dry_run),
        "device": device_name(cuda),
        "versions": versions(),
        "data": inputs,
        "budget_s": args.budget_s,
        "wall_s": time.time() - started,
    }


def device_name(cuda: bool) -> str:
    import torch

    if cuda:
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "liger-kernel",
                 "flash-attn", "seektune"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny shapes, fp32: checks the script")
    parser.add_argument("--budget-s", type=float, default=480, help="cases not started by then are skipped")
    parser.add_argument("--grace-s", type=float, default=60, help="a case running at the budget's end gets this long")
    parser.add_argument("--shapes", nargs="+", choices=list(PLAN), default=list(PLAN))
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per case (default: 12, dry run 3)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step (default: 16, dry run 4)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the run here (default: a temp dir)")
    parser.add_argument("--log", type=Path, default=None, help="the workers' output (default: <workdir>/gpu.log)")
    parser.add_argument("--worker", choices=list(PLAN), help=argparse.SUPPRESS)
    parser.add_argument("--peak-flops", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU even on a GPU machine
    base = DRY if args.dry_run else GPU
    settings = Settings(**{**asdict(base), **{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size))
                                              if v is not None}})
    if settings.steps <= settings.warmup:
        parser.error(f"--steps must be above the {settings.warmup} warm-up steps")
    if args.worker:
        worker(args.worker, args.workdir, settings, args.peak_flops, args.deadline)
        return

    started = time.time()
    deadline = started + args.budget_s
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seektune-gpu-bench-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu.py: no CUDA GPU here; the cases run on the CPU at full size (use --dry-run for the quick check)",
              file=sys.stderr)
    shapes = [s for s in PLAN if s in args.shapes]
    runnable = [s for s in shapes if has(f"transformers.models.{SHAPES[s]['model_type']}")]
    inputs = write_inputs(args.workdir, runnable, settings, args.dry_run)
    peak_flops = matmul_peak_flops(settings.matmul_n, cuda, repeats=10 if cuda else 3)
    print(f"gpu.py: matmul peak {peak_flops / 1e12:.2f} TFLOP/s; runs in {args.workdir}", file=sys.stderr)
    lines: list[dict] = []
    with open(args.log or args.workdir / "gpu.log", "a", encoding="utf-8") as log:
        for shape in shapes:
            if shape not in runnable:
                reason = (f"this transformers ({versions()['transformers']}) has no "
                          f"{SHAPES[shape]['model_type']} architecture")
            elif time.time() > deadline:
                reason = "the time budget (--budget-s) was spent before this shape"
            else:
                lines += run_worker(shape, args, settings, peak_flops, deadline, log)
                continue
            for case in PLAN[shape]:
                line = {"case": case.name, "shape": shape, "side": case.side, "method": case.method,
                        "liger": case.liger, "steps": settings.steps, "skipped": reason}
                lines.append(line)
                print(json.dumps(line), flush=True)
    summary = summarise(lines, peak_flops, args, inputs, started, cuda)
    print(json.dumps(summary), flush=True)
    if summary["cases"]["errors"] or summary["ratio"] is None or not math.isfinite(summary["ratio"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
