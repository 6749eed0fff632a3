"""The ``grpo:`` section of a recipe: reward-based tuning with rule rewards (``objective: grpo``).

    objective: grpo
    model: {name: smollm2-135m-instruct, adapter: ../../runs/customer-service/adapter}
    grpo:
      num_generations: 4
      rewards: [facts, {name: format, weight: 0.2}]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from seektune.recipe.base import _Section

REWARD_NAMES = ("facts", "match", "format", "language", "glossary", "length", "python", "judge")


class RewardSpec(_Section):
    """One reward and its weight in the sum GRPO's advantages are computed from."""

    name: Literal["facts", "match", "format", "language", "glossary", "length", "python", "judge"] = Field(
        ..., description="facts: share of the row's meta.facts in the answer; match: the final \\boxed{} (or "
        "pattern) value equals the reference's; format: one non-empty <think>...</think>, then an answer; "
        "language: share of the row's language in reasoning and answer; glossary: required terms used as written, "
        "no forbidden variant; length: 1 up to budget tokens, 0 at twice it; python: your own, module:function; "
        "judge (opt-in): an OpenAI-compatible endpoint scores each answer 0-10 against the reference by a rubric.")
    weight: float = Field(1.0, description="Weight in the summed reward.")
    pattern: str | None = Field(None, description="match: a regular expression whose first group is the final "
                                "answer (default: the last \\boxed{...}).")
    budget: int = Field(256, gt=0, description="length: completion tokens before the penalty starts.")
    function: str | None = Field(None, description="python: module:function, called as trl calls a reward "
                                 "function (prompts, completions, completion_ids, **columns) -> [float | None].")
    endpoint: str | None = Field(None, description="judge: the base URL of an OpenAI-compatible API.")
    model: str = Field("default", description="judge: the model name sent.")
    rubric: str | None = Field(None, description="judge: what a good answer is (default: correct, complete and "
                               "consistent with the reference, in the question's language).")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="judge: the variable holding the API key.")

    @model_validator(mode="after")
    def _python_needs_function(self) -> "RewardSpec":
        if self.name == "python" and not (self.function and ":" in self.function):
            raise ValueError("a python reward needs function: module:function")
        if self.function and self.name != "python":
            raise ValueError(f"function: is for python rewards, not {self.name}")
        if self.name == "judge" and not (self.endpoint or "").startswith(("http://", "https://")):
            raise ValueError("a judge reward needs endpoint: the base URL of an OpenAI-compatible API")
        return self


class GrpoSpec(_Section):
    """objective: grpo, through trl's GRPOTrainer: for each prompt, num_generations sampled answers are scored
    by the rewards and the model moves toward the better ones of its own group."""

    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="facts")],
                                      description="The rewards, each a name or {name, weight, ...}.")
    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt (a group); train.batch_size x "
                                 "train.grad_accum must be a multiple of it.")
    max_completion_length: int = Field(96, gt=0, description="Longest sampled answer, in tokens.")
    max_prompt_length: int | None = Field(None, gt=0, description="Prompts longer than this many tokens are left "
                                          "out (reported in data/rejects.jsonl); None: data.max_length.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature of the groups.")
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.04, ge=0, description="KL pull to the reference, the starting weights (0: no reference "
                        "model, faster; DeepSeek-R1 used 0.001, DeepSeekMath 0.04).")
    loss_type: str = Field("dapo", description="trl's loss_type: grpo, dr_grpo, dapo (trl's default), bnpo, ...")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantages divided by the reward std of the group, the batch, or not at all (Dr. GRPO).")
    num_iterations: int = Field(1, gt=0, description="Optimisation passes over each batch of generations.")

    @field_validator("rewards", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        return [{"name": item} if isinstance(item, str) else item for item in value or []]

    @model_validator(mode="after")
    def _some_reward(self) -> "GrpoSpec":
        if not self.rewards:
            raise ValueError("grpo.rewards is empty; name at least one (e.g. [facts, format])")
        if all(reward.weight == 0 for reward in self.rewards):
            raise ValueError("every grpo reward has weight 0: nothing would be learned")
        return self
