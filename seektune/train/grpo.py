"""The train stage for ``objective: grpo``: trl's GRPOTrainer with seektune's rule rewards.

    seektune train examples/customer-service/grpo.yaml

Each prepared row's conversation up to its last user turn is a prompt; the model samples
``grpo.num_generations`` answers to it, the rewards of ``grpo.rewards`` score each
(``seektune/train/rewards.py``), and the policy moves toward the answers that beat their group's
mean. The row's last assistant turn (``reference``), its ``meta.facts`` (``facts``) and the question's
language (``language``) travel with the prompt as columns trl hands to every reward.

The reference model of the KL term (``grpo.beta``) is the starting weights: with a fresh LoRA adapter,
the base with the adapter disabled; training on from ``model.adapter`` (e.g. an SFT run's), a frozen
copy of that adapter; for full / freeze, a copy of the starting model.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from seektune.data import prepare
from seektune.data.io import Reject, read_jsonl
from seektune.data.render import control_safe, mark_user_text, prompt_ids
from seektune.recipe import Recipe
from seektune.runs import run_of
from seektune.text import language_of
from seektune.train import pipeline
from seektune.train.callbacks import DropReferenceAdapter
from seektune.train.checkpoint import GuardedMixin
from seektune.train.rewards import GlossaryEntry, make_reward

log = logging.getLogger(__name__)


def prompt_rows(records: list[dict[str, Any]], tokenizer, max_prompt_length: int, split: str):
    """Records -> ``(rows, prompt_lengths, rejects)``: trl's conversational prompt rows with the reward columns,
    each prompt's length in tokens, and rejects for prompts that are too long or have no user turn to answer."""
    rows, lengths, rejects = [], [], []
    for record in records:
        messages = record["messages"]
        prompt = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
        origin = record["meta"].get("origin", "?")
        if not prompt or prompt[-1]["role"] != "user":
            rejects.append(Reject(origin, f"grpo:{split}", "no_prompt", "no user turn to answer", record))
            continue
        length = len(prompt_ids(tokenizer, prompt))
        if length > max_prompt_length:
            rejects.append(Reject(origin, f"grpo:{split}", "prompt_too_long",
                                  f"{length} prompt tokens, over {max_prompt_length}", record))
            continue
        reference = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        facts = [str(f) for f in record["meta"].get("facts") or [] if str(f).strip()]
        rows.append({"prompt": mark_user_text(tokenizer, prompt), "reference": reference, "facts": facts,
                     "language": language_of(prompt[-1]["content"])})
        lengths.append(length)
    return rows, lengths, rejects


def glossary_entries(recipe: Recipe) -> list[GlossaryEntry]:
    """The glossary reward's entries: eval.glossary's terms with eval.forbidden's variants."""
    forbidden = recipe.eval.forbidden
    terms = list(dict.fromkeys([*(recipe.eval.glossary or []), *forbidden]))
    return [GlossaryEntry(term, tuple(forbidden.get(term, ()))) for term in terms]


def trainer_classes():
    from trl import GRPOConfig, GRPOTrainer

    class GuardedGRPOTrainer(GuardedMixin, GRPOTrainer):
        """trl's GRPOTrainer with sealed checkpoints and the non-finite loss guard."""

    return GuardedGRPOTrainer, GRPOConfig


def objective_fields(recipe: Recipe) -> dict[str, Any]:
    """The recipe's grpo section as fields of trl's GRPOConfig."""
    spec = recipe.grpo
    vllm = _vllm_available()
    return {"num_generations": spec.num_generations, "max_completion_length": spec.max_completion_length,
            "temperature": spec.temperature, "top_p": spec.top_p, "beta": spec.beta, "loss_type": spec.loss_type,
            "scale_rewards": spec.scale_rewards, "num_iterations": spec.num_iterations,
            "reward_weights": [reward.weight for reward in spec.rewards], "log_completions": False,
            # on CUDA with vLLM installed, trl generates the groups through vLLM (colocated); else transformers
            "use_vllm": vllm, **({"vllm_mode": "colocate"} if vllm else {})}


def _vllm_available() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def reward_figures(history: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """First and last logged mean of each reward (and of the weighted sum, the KL and the completion length)."""
    figures: dict[str, Any] = {}
    keys = {f"reward_{name}": f"rewards/{name}/mean" for name in names}
    keys.update(reward="reward", kl="kl", completion_length="completions/mean_length")
    for label, key in keys.items():
        values = [h[key] for h in history if key in h]
        figures[f"first_{label}"] = values[0] if values else None
        figures[f"last_{label}"] = values[-1] if values else None
    return figures


def run(recipe: Recipe) -> Path:
    """Train with GRPO and save the result; returns the run directory."""
    main_process = pipeline.ensure_prepared(recipe)
    return pipeline.train_and_save(recipe, build(recipe, main_process), main_process)


def build(recipe: Recipe, main_process: bool = True) -> pipeline.Built:
    """trl's GRPOTrainer over the prepared rows' prompts, with the recipe's rewards, ready to run."""
    from datasets import Dataset

    spec = recipe.grpo
    run = run_of(recipe)
    train_records = read_jsonl(run.split("train"))
    loaded, adapter_config = pipeline.load_student(recipe)
    tokenizer = control_safe(loaded.tokenizer)
    limit = spec.max_prompt_length or recipe.data.max_length
    rows, lengths, rejects = prompt_rows(train_records, tokenizer, limit, "train")
    if main_process:
        prepare.record_late_rejects(run, "grpo", rejects)
    if not rows:
        raise ValueError(f"no training prompts left (of {len(train_records)} rows: {len(rejects)} too long for "
                         f"{limit} tokens or without a user turn); see data/rejects.jsonl")
    from seektune.models.registry import opens_think

    opened = opens_think(tokenizer)  # an R1 template: every completion starts inside <think>
    glossary = glossary_entries(recipe)
    rewards = [make_reward(reward, glossary, opened) for reward in spec.rewards]
    names = [getattr(function, "__name__", reward.name) for function, reward in zip(rewards, spec.rewards)]
    trainer_class, config_class = trainer_classes()
    fields = objective_fields(recipe)
    args = pipeline.training_args(recipe, False, config_class=config_class, sampling="random", **fields)
    pipeline.use_tensorboard_dir(recipe)
    model = loaded.model
    trainer = trainer_class(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=adapter_config,
        callbacks=[DropReferenceAdapter(), pipeline.progress_callback(recipe)],
        keep_checkpoints=recipe.train.save_total_limit,
    )
    if spec.beta and trainer.ref_model is not None and recipe.model.merge:
        # full / freeze: trl loaded the reference from the model's path, which misses model.merge
        trainer.ref_model = trainer.accelerator.prepare_model(
            copy.deepcopy(model).eval().requires_grad_(False), evaluation_mode=True)
    token_counts = Dataset.from_dict({"length": [length + spec.max_completion_length
                                                 for length in lengths for _ in range(spec.num_generations)]})
    return pipeline.Built(trainer, tokenizer, token_counts, loaded.family.name, "padded",
                          extra=lambda trained: {"grpo": {
                              **{k: v for k, v in fields.items() if k != "log_completions"},
                              "rewards": [reward.model_dump(exclude_none=True) for reward in spec.rewards],
                              "training_prompts": len(rows), "prompts_left_out": len(rejects),
                              **reward_figures(trained.state.log_history, names)}})
