"""Fine-tuning methods -> a peft config (LoRA, DoRA) for the trainer."""

from __future__ import annotations

from peft import LoraConfig

from seektune.models.registry import Family
from seektune.recipe import MethodSpec


def peft_config(method: MethodSpec, family: Family) -> LoraConfig:
    """LoRA / DoRA on the recipe's target modules, or the model family's defaults."""
    targets = method.target_modules if method.target_modules is not None else list(family.lora_targets)
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=targets,
        use_rslora=method.rslora,
        use_dora=method.name == "dora",
        bias="none",
    )


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
