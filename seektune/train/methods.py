"""Fine-tuning methods: a peft config (lora, dora, qlora, prefix, prompt, ia3) or in-place freezing (full, freeze).

Every method leaves the model in the state the trainer needs: either a peft config the
trainer wraps around the base, or the base itself with ``requires_grad`` set on exactly
the parameters that should learn.
"""

from __future__ import annotations

import re

import torch

from seektune.models.registry import Family
from seektune.recipe import MethodSpec

PEFT_METHODS = {"lora", "dora", "qlora", "prefix", "prompt", "ia3"}


class MethodUnavailable(RuntimeError):
    """A method that cannot run on this machine; the message says why and what to use instead."""


def check_available(method: MethodSpec) -> None:
    if method.name != "qlora":
        return
    if not torch.cuda.is_available():
        raise MethodUnavailable(
            "method qlora quantises the base model to 4-bit NF4 with bitsandbytes, whose kernels need a CUDA GPU, "
            "and none is available here. Use method.name=lora: the same adapter on a full-precision base "
            "(a 135M-1.5B model fits in CPU memory)."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise MethodUnavailable("method qlora needs bitsandbytes: pip install bitsandbytes") from exc


def quantization_config(method: MethodSpec):
    """4-bit NF4 with double quantisation for qlora; None for every other method."""
    if method.name != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _module_names(model) -> set[str]:
    return {name.split(".")[-1] for name, _ in model.named_modules()}


def peft_config(method: MethodSpec, family: Family, model=None):
    """The peft config for a peft method, or None for full / freeze."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit

    if method.name in ("lora", "dora", "qlora"):
        targets = method.target_modules if method.target_modules is not None else list(family.lora_targets)
        return LoraConfig(
            task_type="CAUSAL_LM", r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
            target_modules=targets, use_rslora=method.rslora, use_dora=method.name == "dora", bias="none",
        )
    if method.name == "prefix":
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens)
    if method.name == "prompt":
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.RANDOM)
    if method.name == "ia3":
        present = _module_names(model) if model is not None else set()
        if isinstance(method.target_modules, list):
            targets = method.target_modules
        else:  # keys, values and the MLP output, as in the IA3 paper; MLA models scale kv_b_proj
            targets = [m for m in ("k_proj", "v_proj", "kv_b_proj", "down_proj") if m in present]
        feedforward = [m for m in targets if m in ("down_proj", "fc2", "c_proj")]
        return IA3Config(task_type="CAUSAL_LM", target_modules=targets, feedforward_modules=feedforward)
    return None


def _layers(model) -> list[torch.nn.Module]:
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        node = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, torch.nn.ModuleList):
            return list(node)
    raise MethodUnavailable("method freeze: cannot find the transformer layers of this model; use train_modules")


def apply_freezing(model, method: MethodSpec) -> None:
    """full: everything trains. freeze: only the last N layers and/or parameters matching ``train_modules``."""
    if method.name == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return
    if method.name != "freeze":
        return
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if method.train_last_layers:
        layers = _layers(model)
        if method.train_last_layers > len(layers):
            raise MethodUnavailable(
                f"method freeze: train_last_layers={method.train_last_layers} but the model has {len(layers)} layers")
        for layer in layers[-method.train_last_layers:]:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
    if method.train_modules:
        patterns = [re.compile(p) for p in method.train_modules]
        matched = 0
        for name, parameter in model.named_parameters():
            if any(p.search(name) for p in patterns):
                parameter.requires_grad_(True)
                matched += 1
        if not matched:
            raise MethodUnavailable(f"method freeze: no parameter name matches train_modules {method.train_modules}")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
