"""A run directory and everything about its layout: the one place that spells a run's paths.

    run = RunDir("runs/customer-service")
    run.split("test")           # runs/customer-service/data/test.jsonl
    recipe, loaded, tuned = run.load_tuned()

Every stage writes into one run directory and later stages read only from it::

    recipe.resolved.yaml         the recipe after defaults and overrides
    data/                        {train,val,test}.jsonl, derived splits (e.g. train.distilled.jsonl),
                                 rejects.jsonl, summary.json, card.json / card.html, replay.json
    adapter/ | model/            the trained adapter (peft) or the whole trained model (full, freeze, merged)
    classifier/ ngram/           task classification: the fine-tuned encoder; the character n-gram classifier
    checkpoints/ last-good/      sealed checkpoints; the weights before a non-finite loss
    train.json logs/             loss history; TensorBoard logs
    progress.jsonl               each logged step and the step count while training runs (the studio's live curve)
    eval/ eval-old/ human_eval/  metrics, samples, answer cache; an update's old-run eval; human sheets
    distill/                     a distillation's teacher caches
    export/<kind>/               merged, int8, onnx, gguf
    stages/<NN>-<name>/          one run directory per stage of a ``stages:`` recipe
    tune/                        a hyper-parameter search: trials, best.yaml
    feedback.sqlite              what ``seektune serve`` recorded
    report.html report.json      the report
    update.json                  what ``seektune update`` measured

No module outside this one joins run paths by hand: a new file of a run gets a name here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from seektune.recipe import RESOLVED_NAME, Recipe, RecipeError, load_recipe

SPLITS = ("train", "val", "test")


class RunDir:
    """The paths of one run directory, and what can be asked of it (which weights it holds, the
    tuned model). Constructing one touches nothing on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------ recipe

    @property
    def resolved_recipe(self) -> Path:
        return self.path / RESOLVED_NAME

    def is_run(self) -> bool:
        """Whether this directory holds a seektune run (a resolved recipe)."""
        return self.resolved_recipe.is_file()

    def recipe(self) -> Recipe:
        """The run's resolved recipe (a RecipeError names the directory when it is not a run)."""
        if not self.is_run():
            raise RecipeError(f"{self.path} is not a seektune run directory (no {RESOLVED_NAME})")
        return load_recipe(self.resolved_recipe)

    def save_recipe(self, recipe: Recipe) -> Path:
        """Write the resolved recipe, which every later stage reads instead of flags."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        self.resolved_recipe.write_text(
            f"# Resolved recipe written by seektune; `seektune eval/chat {self.path}` reads it.\n"
            + yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        return self.resolved_recipe

    # ------------------------------------------------------------ data

    @property
    def data(self) -> Path:
        return self.path / "data"

    def split(self, name: str) -> Path:
        """``data/<name>.jsonl``: train / val / test, or a derived split such as ``train.distilled``."""
        return self.data / f"{name}.jsonl"

    @property
    def rejects(self) -> Path:
        return self.data / "rejects.jsonl"

    @property
    def data_summary(self) -> Path:
        return self.data / "summary.json"

    @property
    def card_json(self) -> Path:
        return self.data / "card.json"

    @property
    def card_html(self) -> Path:
        return self.data / "card.html"

    @property
    def replay_info(self) -> Path:
        return self.data / "replay.json"

    def is_prepared(self) -> bool:
        return self.split("train").is_file()

    # ------------------------------------------------------------ training

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_good(self) -> Path:
        return self.path / "last-good"

    @property
    def last_good_step(self) -> Path:
        return self.last_good / "STEP"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def train_summary(self) -> Path:
        return self.path / "train.json"

    @property
    def progress(self) -> Path:
        return self.path / "progress.jsonl"

    @property
    def classifier(self) -> Path:
        return self.path / "classifier"

    @property
    def ngram_classifier(self) -> Path:
        """A classification run's character n-gram classifier: the baseline beside ``classifier/``, or with
        method linear the whole model."""
        return self.path / "ngram"

    @property
    def source(self) -> Path:
        """Inputs a stage wrote for prepare to read (e.g. classification pairs built from QA rows)."""
        return self.path / "source"

    def has_adapter(self) -> bool:
        return (self.adapter / "adapter_config.json").is_file()

    def has_model(self) -> bool:
        return (self.model / "config.json").is_file()

    def is_trained(self) -> bool:
        return self.has_adapter() or self.has_model() or self.train_summary.is_file()

    def trained_weights(self) -> Path | None:
        """``adapter/`` when the run trained an adapter, else ``model/`` when it saved a whole model."""
        if self.has_adapter():
            return self.adapter
        if self.has_model():
            return self.model
        return None

    def stage(self, index: int, name: str) -> RunDir:
        """The run directory of stage ``index`` (0-based) of a ``stages:`` recipe."""
        return RunDir(self.path / "stages" / f"{index + 1:02d}-{name}")

    # ------------------------------------------------------------ distillation

    @property
    def distill(self) -> Path:
        return self.path / "distill"

    @property
    def teacher_topk(self) -> Path:
        return self.distill / "teacher_topk.safetensors"

    @property
    def teacher_topk_meta(self) -> Path:
        return self.distill / "teacher_topk.json"

    @property
    def distill_answers(self) -> Path:
        return self.distill / "answers.jsonl"

    @property
    def distill_empty_answers(self) -> Path:
        return self.distill / "empty_answers.jsonl"

    @property
    def distill_sequence(self) -> Path:
        return self.distill / "sequence.json"

    # ------------------------------------------------------------ synthesis (seektune synth / review)

    @property
    def synth(self) -> Path:
        return self.path / "synth"

    @property
    def synth_chunks(self) -> Path:
        """Every chunk the documents gave, with its provenance (``chunks.jsonl``)."""
        return self.synth / "chunks.jsonl"

    @property
    def synth_cache(self) -> Path:
        """Teacher answers keyed by (teacher, prompt): a rerun asks only what is missing."""
        return self.synth / "teacher_cache.jsonl"

    @property
    def synth_rejects(self) -> Path:
        """Generated rows a quality gate dropped, and documents that could not be read, with reason codes."""
        return self.synth / "rejects.jsonl"

    @property
    def synth_summary(self) -> Path:
        return self.synth / "summary.json"

    @property
    def review_store(self) -> Path:
        """The kept rows and people's decisions on them (``seektune/data/review.py``)."""
        return self.synth / "review.sqlite"

    # ------------------------------------------------------------ evaluation

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def metrics(self) -> Path:
        return self.eval / "metrics.json"

    @property
    def samples(self) -> Path:
        return self.eval / "samples.jsonl"

    @property
    def eval_cache(self) -> Path:
        return self.eval / "cache.jsonl"

    @property
    def eval_old(self) -> Path:
        """An update's evaluation of the old run's test split (forgetting)."""
        return self.path / "eval-old"

    @property
    def human_eval(self) -> Path:
        return self.path / "human_eval"

    @property
    def human_results(self) -> Path:
        return self.human_eval / "results.json"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def update_summary(self) -> Path:
        return self.path / "update.json"

    # ------------------------------------------------------------ export, serve, tune

    def export(self, kind: str) -> Path:
        """``export/<kind>``: merged, int8, onnx or gguf."""
        return self.path / "export" / kind

    @property
    def feedback_db(self) -> Path:
        return self.path / "feedback.sqlite"

    @property
    def feedback_export(self) -> Path:
        return self.path / "feedback.jsonl"

    @property
    def tune(self) -> Path:
        return self.path / "tune"

    # ------------------------------------------------------------ models

    def load_tuned(self):
        """The run's tuned model and its base: ``(recipe, loaded_base, tuned)``.

        For adapter methods ``tuned`` is the base with the adapter attached (its
        ``disable_adapter()`` gives the base back, so one copy of the weights serves both);
        for full / freeze it is the saved model, and ``loaded_base.model`` the untouched base.
        """
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from seektune.models.load import load_model

        recipe = self.recipe()
        if self.trained_weights() is None:
            raise FileNotFoundError(f"{self.path} has no trained adapter or model yet; run `seektune train` first")
        loaded = load_model(
            recipe.model.name,
            dtype=recipe.model.dtype,
            chat_template=recipe.model.chat_template,
            trust_remote_code=recipe.model.trust_remote_code,
        )
        if self.has_adapter():
            model = PeftModel.from_pretrained(loaded.model, self.adapter)
        else:
            model = AutoModelForCausalLM.from_pretrained(self.model, dtype=loaded.model.dtype)
            model.to(loaded.model.device)
        model.eval()
        return recipe, loaded, model


def run_of(recipe: Recipe) -> RunDir:
    """The run directory a recipe writes to (its ``output_dir``)."""
    return RunDir(recipe.output_dir)


def is_run_dir(path: str | Path) -> bool:
    return RunDir(path).is_run()


def fingerprint(directory: Path) -> str:
    """Content hash of a model or adapter directory's weights and configs (caches key on it).

    Files up to 512 MB are hashed whole; larger weight files by size and modification
    time, so fingerprinting a multi-GB base model stays instant.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*")):
        if not path.is_file() or path.suffix not in {".safetensors", ".json", ".bin", ".gguf", ".jinja"}:
            continue
        stat = path.stat()
        digest.update(path.name.encode())
        if stat.st_size <= 512 * 2**20:
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(2**20), b""):
                    digest.update(chunk)
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_tuned(path: str | Path):
    """``RunDir(path).load_tuned()``: ``(recipe, loaded_base, tuned)``."""
    return RunDir(path).load_tuned()
