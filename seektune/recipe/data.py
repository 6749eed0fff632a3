"""The ``data:`` section of a recipe: where rows come from and what prepare does to them.

    seektune prepare examples/customer-service/recipe.yaml data.max_length=2048
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from seektune.recipe.base import _Section

class SplitSpec(_Section):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 42
    stratify_by: str | None = Field(None, description="meta field whose values are spread evenly over the splits.")
    group_by: str | None = Field(
        None, description="meta field (e.g. a conversation or ticket id) whose rows always stay in one split."
    )

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitSpec":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios train+val+test must sum to 1, got {total:g}")
        if self.stratify_by and self.group_by:
            raise ValueError("choose either stratify_by or group_by, not both")
        return self


class FilterSpec(_Section):
    min_chars: int = Field(1, ge=0, description="Each turn needs at least this many non-space characters.")
    max_chars: int | None = Field(None, gt=0, description="Longest conversation, in characters.")
    min_answer_chars: int = Field(1, ge=0)
    min_tokens: int | None = Field(None, ge=0, description="Fewest tokens of the target tokenizer.")
    max_tokens: int | None = Field(None, gt=0, description="Most tokens of the target tokenizer (contents only).")
    max_repetition: float | None = Field(0.5, ge=0, le=1, description="Highest share of repeated n-grams in an answer.")
    max_symbol_ratio: float | None = Field(0.5, ge=0, le=1, description="Highest share of symbol characters.")
    languages: list[Literal["en", "zh"]] | None = Field(None, description="Keep only these languages.")
    check_roles: bool = True
    overlength: Literal["drop", "truncate", "error"] = Field(
        "drop", description="A row longer than data.max_length after rendering: drop it, truncate it, or stop."
    )


class DedupSpec(_Section):
    compare: Literal["conversation", "prompt"] = Field(
        "conversation",
        description="Compare whole conversations, or only the user side (for FAQ data where many questions "
        "share one canonical answer by design). The leakage audit compares the same text.",
    )
    exact: bool = Field(True, description="Drop rows identical after normalisation (case, punctuation, width).")
    near: bool = Field(True, description="Drop near-duplicates found by MinHash-LSH on character n-grams.")
    threshold: float = Field(0.9, gt=0, le=1, description="Jaccard similarity at which two rows are duplicates.")
    ngram: int = Field(5, gt=0, description="Character n-gram size (characters, so Chinese works).")
    num_perm: int = Field(128, gt=0)
    keep: Literal["first", "longest"] = "first"


class LeakageSpec(_Section):
    check: bool = Field(True, description="Look for exact and near duplicates across train/val/test.")
    remove: bool = Field(True, description="Remove leaked rows from val/test (reported in rejects).")
    threshold: float = Field(0.9, gt=0, le=1)


class BalanceSpec(_Section):
    by: str = Field(..., description="meta field holding the category.")
    ratios: dict[str, float] = Field(..., description="Target proportions, e.g. {billing: 1, returns: 1.2}.")
    mode: Literal["down", "up"] = Field("down", description="down: drop surplus rows; up: repeat rows of small ones.")
    seed: int = 42


class ParaphraseSpec(_Section):
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")
    endpoint_model: str = "default"
    api_key_env: str | None = "OPENAI_API_KEY"
    model: str | None = Field(None, description="A local model (alias, directory, Hub id) used when no endpoint.")
    per_row: int = Field(1, gt=0)


class AugmentSpec(_Section):
    entities: dict[str, list[str]] | None = Field(None, description="Fill {name} placeholders with each value.")
    expand: dict[str, list[str]] | None = Field(None,
                                                  description="Term -> more specific terms, e.g. 患者: [糖尿病患者].")
    synonyms: dict[str, list[str]] | None = Field(None, description="Word -> synonyms swapped into questions.")
    per_row: int = Field(1, gt=0, description="New rows per source row for expand and synonyms.")
    paraphrase: ParaphraseSpec | None = None
    seed: int = 42


class DocumentSpec(_Section):
    chunk_tokens: int = Field(512, gt=8)
    overlap: int = Field(64, ge=0)


class RagContextSpec(_Section):
    """Train with retrieved context (RAFT, Zhang et al. 2024): each training question's user turn carries
    retrieved passages, the one holding its answer among distractors, so the model learns to answer from a
    passage, cite it, and say when the passages do not hold the answer."""

    index: str | None = Field(None, description="A `seektune index` directory, relative to the recipe file; "
                              "None: the rag: section's index.")
    k: int = Field(4, gt=0, le=20, description="Passages per question (as `serve --rag-k`); unset: rag.k.")
    oracle_p: float = Field(0.8, ge=0, le=1, description="Share of questions whose passages include the one holding "
                            "the answer (its meta.origin chunk, else the best chunk holding all its facts).")
    distractors: int = Field(3, ge=0, description="Retrieved passages that do not hold the answer, next to it.")
    cite: bool = Field(True, description="End each answer with the number of the passage it came from (\"[2]\").")
    without_answer: Literal["refuse", "answer"] = Field(
        "refuse", description="When the passages do not hold the answer: refuse (the answer becomes the refusal "
        "text, teaching the model to say so) or answer (keep it: the model must know it by heart, as in RAFT).")
    refusal: str | None = Field(None, description="The refusal text; None: the synth default in the row's language.")
    seed: int = 7


class DataSpec(_Section):
    paths: list[str] = Field(
        default_factory=list,
        description="Files or directories (JSONL/JSON/CSV/TSV/Parquet, saved HF datasets, .txt/.md/.pdf/.docx), "
        "relative to the recipe file.",
    )
    format: Literal["auto", "alpaca", "sharegpt", "messages", "columns", "text", "preference"] = Field(
        "auto", description="Row format; 'auto' detects it per row. preference: {prompt, chosen, rejected} pairs "
        "(dpo / orpo) or {prompt, completion, label} rows (kto)."
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Role -> field name for flat rows, e.g. {user: query, assistant: response, system: system}.",
    )
    meta_fields: list[str] = Field(
        default_factory=lambda: ["id", "category", "facts", "group"],
        description="Row fields copied into each record's meta (facts drive fact accuracy).",
    )
    system_prompt: str | None = Field(None, description="System message added to rows that have none.")
    max_length: int = Field(1024, gt=8, description="Token limit after rendering (see filters.overlength).")
    reasoning: Literal["keep", "drop_history", "drop"] = Field(
        "keep", description="Assistant turns' reasoning (<think>) in the prepared rows, so in training and in the "
        "history of eval prompts: keep every turn's (in the text and the loss); drop_history only the final turn's "
        "(as R1's own template shows history); drop none.")
    clean: list[str | dict[str, dict[str, Any]]] = Field(
        default_factory=lambda: ["strip_control", "strip_html", "unescape_html", "nfkc", "whitespace"],
        description="Ordered cleaning steps: strip_control, strip_html, unescape_html, nfkc, whitespace, "
        "punctuation, pii, regex (a name, or {name: {options}}). [] turns cleaning off.",
    )
    filters: FilterSpec = Field(default_factory=FilterSpec)
    dedup: DedupSpec = Field(default_factory=DedupSpec)
    balance: BalanceSpec | None = None
    augment: AugmentSpec | None = None
    documents: DocumentSpec = Field(default_factory=DocumentSpec)
    rag: RagContextSpec | None = Field(None, description="Train with retrieved passages in the user turn (see "
                                       "RagContextSpec); applied when training, so the prepared splits stay plain.")
    split: SplitSpec = Field(default_factory=SplitSpec)
    leakage: LeakageSpec = Field(default_factory=LeakageSpec)
    allow_poor_fit: bool = Field(False, description="task classification: train the encoder even when its tokenizer "
                                 "maps over 25% of the training tokens to [UNK] (see the data card's language fit).")

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        allowed = {"system", "user", "assistant", "reasoning"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"unknown role(s) {unknown} in columns; allowed: {sorted(allowed)}")
        if not {"user", "assistant"} <= set(value):
            raise ValueError("columns must map at least 'user' and 'assistant' to field names")
        return value
