"""Hyper-parameter search: Optuna over recipe keys, trials that fall behind pruned early.

    seektune tune examples/customer-service/recipe.yaml --trials 8

The recipe's ``tune:`` section names the search space (recipe dotted key -> ``{low, high,
log?}`` or ``{choices: [...]}``), the val metric to optimise and the pruner. The data is
prepared once, in ``<out>/data`` (``<out>`` defaults to ``<output_dir>/tune``); each trial is
a complete run directory ``<out>/trial-NNN/`` whose splits are hard links to those files,
trained with the trial's sampled values applied as overrides.

* **Comparison.** Every evaluation (each epoch, or every ``train.eval_steps``; the last step
  always evaluates) reports the metric to the trial; a trial's value is its last
  evaluation's, or the best one when ``train.early_stopping`` keeps the best checkpoint on
  the same metric. Loss is minimised, fact_accuracy / rougeL / bleu maximised.
* **Pruning** (``pruner: median``): a trial whose metric is worse than the median of the
  earlier trials at the same evaluation stops there and is recorded as pruned. Evaluations
  are counted, not steps, so trials with different batch sizes meet at the same epochs.
  The final evaluation never prunes: by then the training is already paid for.
* **Failures.** A trial that raises (a NaN loss at a high learning rate, say) is recorded
  as failed with its message and the search goes on; if no trial completes, ``run`` raises.
* **Resuming.** The study lives in ``<out>/study.db`` (SQLite). Running the same command
  again continues it up to ``trials`` finished trials in total; a trial cut off by a kill
  is marked failed ("interrupted") and not counted. One ``seektune tune`` per ``<out>``
  at a time; a changed recipe or space needs a new ``<out>``.
* **Disk.** Only the best trial keeps its weights (``adapter/`` or ``model/`` and
  ``checkpoints/``); every other trial keeps its ``train.json``, logs and resolved recipe.

Results: ``<out>/trials.csv`` and ``<out>/tune.json`` (every trial, the best one), and
``<out>/best.yaml``: the recipe with the best values applied, writing to
``<output_dir>-best``, for ``seektune run <out>/best.yaml``.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from seektune.recipe import EarlyStoppingSpec, Recipe, RecipeError, load_recipe
from seektune.runs import RunDir, run_of

log = logging.getLogger(__name__)

STUDY_NAME = "seektune-tune"
SPLITS = ("train.jsonl", "val.jsonl", "test.jsonl")  # read-only in a trial: hard-linked, not copied
NOT_TUNABLE = {  # first key part -> why a trial cannot vary it
    "data": "the data is prepared once for every trial",
    "eval": "trials are compared on the val split during training; eval: settings do not apply",
    "tune": "the search's own settings",
    "output_dir": "each trial writes to its own directory",
    "stages": "tune trains one-stage recipes",
    "update": "used by `seektune update` only",
}


def trial_dir_of(out: Path, number: int) -> Path:
    """``<out>/trial-NNN``: each trial is a complete run directory of its own."""
    return Path(out) / f"trial-{number:03d}"


def run(recipe_path: str | Path, overrides: list[str] | None = None, trials: int | None = None,
        out: str | Path | None = None) -> dict[str, Any]:
    """Search the recipe's ``tune.space`` with ``trials`` trials (default ``tune.trials``).

    Prints one line per finished trial and a table at the end; returns what ``<out>/tune.json``
    holds: ``{"out", "metric", "direction", "trials": [...], "best": {...}, "best_recipe"}``,
    each trial ``{"number", "state", "params", "value", "steps", "seconds", "error", "dir"}``.
    A bad recipe or space raises RecipeError before anything runs; RuntimeError (after the
    results are written) when no trial completed.
    """
    import optuna

    overrides = list(overrides or [])
    recipe = load_recipe(recipe_path, overrides)
    spec = recipe.tune
    if trials is not None and trials < 1:
        raise RecipeError(f"--trials must be at least 1, got {trials}")
    total = trials or spec.trials
    out = Path(out) if out is not None else run_of(recipe).tune
    check_tunable(recipe)
    space = check_space(recipe_path, overrides, spec.space)

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial replaces optuna's
    try:
        return _search(recipe_path, overrides, recipe, space, total, out)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _search(recipe_path, overrides: list[str], recipe: Recipe, space: dict[str, dict[str, Any]], total: int,
            out: Path) -> dict[str, Any]:
    import optuna

    from seektune.data.io import read_jsonl
    from seektune.train import pipeline

    spec = recipe.tune
    study = open_study(out, recipe, space, total)
    base = load_recipe(recipe_path, overrides + [override("output_dir", str(out))])
    pipeline.ensure_prepared(base)
    val = RunDir(out).split("val")
    if not read_jsonl(val):
        raise RecipeError(f"tune compares trials on the val split, and {val} is empty: "
                          "set data.split.val (e.g. 0.1) to a share that leaves val rows")

    def objective(trial) -> float:
        params = {key: suggest(trial, key, dist) for key, dist in space.items()}
        trial_dir = trial_dir_of(out, trial.number)
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        link_data(RunDir(out).data, RunDir(trial_dir).data)
        trial.set_user_attr("dir", str(trial_dir))
        started = time.monotonic()
        try:
            # no job estimate per trial: a trial never evaluates on the test split, so its timed batch is waste
            trial_recipe = load_recipe(recipe_path, overrides + [override(k, v) for k, v in params.items()]
                                       + [override("output_dir", str(trial_dir)), "train.estimate=false"])
            return train_trial(trial_recipe, trial, spec.metric)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            log.debug("trial %d failed", trial.number, exc_info=True)
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
            gc.collect()
            _empty_cuda_cache()

    def finished(study, frozen) -> None:
        keep_best_weights_only(study, out)
        print_progress(study, frozen, spec.metric, total)

    remaining = total - len(counted_trials(study))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=spec.timeout_s, catch=(Exception,),
                       callbacks=[finished])
    keep_best_weights_only(study, out)
    summary = write_results(study, out, recipe_path, overrides, recipe, spec.metric)
    print_table(summary)
    if summary["best"] is None:
        errors = "; ".join(f"trial {t['number']}: {t['error']}" for t in summary["trials"] if t["error"])
        raise RuntimeError(f"no trial completed ({errors or 'every trial was pruned'}); see {out / 'tune.json'}")
    return summary


# ---------------------------------------------------------------- checking the recipe and space


def check_tunable(recipe: Recipe) -> None:
    if recipe.task != "sft" or recipe.stages:
        raise RecipeError("tune trains one-stage chat recipes (task: sft, no stages:; any objective); "
                          f"this one has task {recipe.task}" + (", stages" if recipe.stages else ""))
    if recipe.data.split.val == 0:
        raise RecipeError("tune compares trials on the val split: set data.split.val above 0 (e.g. 0.1)")


def check_space(recipe_path, overrides: list[str], space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The space with numbers parsed (YAML reads ``1e-4`` as a string), or a RecipeError naming the key:
    an unknown key, a malformed range, an empty range, or a value the recipe rejects (each bound
    and each choice is applied and validated)."""
    if not space:
        raise RecipeError("tune.space is empty: name at least one recipe key, "
                          "e.g. train.lr: {low: 1.0e-4, high: 1.0e-3}")
    checked = {}
    for key, dist in space.items():
        where = f"tune.space: {key}"
        head = key.split(".")[0]
        if head in NOT_TUNABLE:
            raise RecipeError(f"{where}: {head} keys cannot be tuned ({NOT_TUNABLE[head]})")
        if not isinstance(dist, dict):
            raise RecipeError(f"{where}: expected {{low, high, log?}} or {{choices: [...]}}, got {dist!r}")
        if "choices" in dist:
            if set(dist) != {"choices"} or not isinstance(dist["choices"], list) or not dist["choices"]:
                raise RecipeError(f"{where}: choices must be a non-empty list, alone (got {dist!r})")
            dist = {"choices": list(dist["choices"])}
            values = dist["choices"]
        else:
            unknown = set(dist) - {"low", "high", "log"}
            if unknown or not {"low", "high"} <= set(dist):
                raise RecipeError(f"{where}: a range is {{low, high, log?}} and choices are {{choices: [...]}}; "
                                  f"got keys {sorted(dist)}")
            low, high = _number(dist["low"], f"{where}.low"), _number(dist["high"], f"{where}.high")
            log_scale = bool(dist.get("log", False))
            if not low < high:
                raise RecipeError(f"{where}: the range {low}..{high} is empty (low must be below high; "
                                  "use choices: [value] to fix a value)")
            if log_scale and low <= 0:
                raise RecipeError(f"{where}: a log range needs low > 0, got {low}")
            dist = {"low": low, "high": high, "log": log_scale}
            values = [low, high]
        for value in values:
            try:
                load_recipe(recipe_path, overrides + [override(key, value)])
            except RecipeError as exc:
                reasons = str(exc).split("\n", 1)[-1]  # without the "<file>: invalid recipe" line
                raise RecipeError(f"{where}: {key}={value!r} is not a valid recipe setting:\n{reasons}") from None
        checked[key] = dist
    return checked


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool):
        raise RecipeError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: expected a number, got {value!r}") from None


def override(key: str, value: Any) -> str:
    """``key=value`` in the form ``apply_overrides`` parses back to exactly ``value``."""
    return f"{key}={yaml_text(value)}"


def yaml_text(value: Any) -> str:
    """One-line YAML of a value (``1.0e-05``, ``[q_proj, v_proj]``); ``str(1e-5)`` would read back as a string."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


# ---------------------------------------------------------------- the study


def open_study(out: Path, recipe: Recipe, space: dict[str, dict[str, Any]], trials: int):
    """Create ``<out>/study.db``, or load it when the recipe and space are the ones it started with."""
    import optuna

    metric = recipe.tune.metric
    fingerprint = json.loads(json.dumps({
        "metric": metric, "space": space,
        "recipe": recipe.model_dump(mode="json", exclude={"tune", "output_dir"}),
    }))
    out.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / 'study.db').resolve()}")
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, load_if_exists=True,
        direction="minimize" if metric == "eval_loss" else "maximize",
    )
    started = study.user_attrs.get("fingerprint")
    if started is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif started != fingerprint:
        changed = [k for k in ("metric", "space") if started[k] != fingerprint[k]]
        changed += [f"recipe {k}" for k, v in fingerprint["recipe"].items() if started["recipe"].get(k) != v]
        raise RecipeError(f"{out / 'study.db'} belongs to a search with another {', '.join(changed)}; "
                          f"tune into a new --out, or delete {out} to start over")
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # one `seektune tune` per <out>: a trial still running in the study was cut off
        storage.set_trial_user_attr(trial._trial_id, "error", "interrupted")
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    # a fresh seed per resumption: the same seed would sample the first trials over again;
    # a few random trials, then TPE (optuna's default waits 10, most of a tuning budget)
    startup = max(2, min(10, trials // 3))
    study.sampler = optuna.samplers.TPESampler(seed=recipe.tune.seed + len(study.trials), n_startup_trials=startup)
    study.pruner = make_pruner(recipe.tune.pruner)
    return study


def make_pruner(name: str):
    """median: stop a trial below the median of the completed ones at the same evaluation, once two completed."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2) if name == "median" else optuna.pruners.NopPruner()


def counted_trials(study) -> list:
    """Finished trials that count towards ``trials``: interrupted ones do not."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))]


def suggest(trial, key: str, dist: dict[str, Any]) -> Any:
    """The trial's value for ``key``: an int range when both bounds are ints, a float range otherwise,
    a categorical for choices (lists and mappings among them are sampled by their YAML text)."""
    if "choices" in dist:
        choices = dist["choices"]
        if all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            return trial.suggest_categorical(key, choices)
        return from_label(dist, trial.suggest_categorical(key, [yaml_text(c) for c in choices]))
    if isinstance(dist["low"], int) and isinstance(dist["high"], int):
        return trial.suggest_int(key, dist["low"], dist["high"], log=dist["log"])
    return trial.suggest_float(key, float(dist["low"]), float(dist["high"]), log=dist["log"])


def from_label(dist: dict[str, Any], sampled: Any) -> Any:
    """The choice a sampled label stands for (optuna stores only plain values; lists go by their YAML)."""
    if "choices" not in dist or sampled in dist["choices"]:
        return sampled
    return dist["choices"][[yaml_text(c) for c in dist["choices"]].index(sampled)]


def link_data(source: Path, target: Path) -> None:
    """The prepared data in a trial: the splits hard-linked (copied where links fail), the rest copied
    (the trainer appends render rejects to rejects.jsonl)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if not path.is_file():
            continue
        if path.name in SPLITS:
            try:
                os.link(path, target / path.name)
                continue
            except OSError:
                pass
        shutil.copy2(path, target / path.name)


# ---------------------------------------------------------------- one trial


class ReportToTrial(TrainerCallback):
    """Reports each evaluation's ``metric`` to an Optuna trial (step = evaluation number, so trials
    with different batch sizes are compared at the same epoch) and stops training when the pruner
    says so; ``train_trial`` then raises ``TrialPruned``. The final evaluation never prunes."""

    def __init__(self, trial, metric: str):
        self.trial = trial
        self.key = metric if metric == "eval_loss" else f"eval_{metric}"
        self.values: list[float] = []
        self.pruned_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        # with eval_steps the last step may fall between evaluations: evaluate it, so every trial ends scored
        if args.eval_strategy == "steps" and state.global_step >= state.max_steps:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.key)
        if value is None:
            return
        self.values.append(float(value))
        self.trial.report(float(value), len(self.values))
        if state.global_step < state.max_steps and self.trial.should_prune():
            self.pruned_at = state.global_step
            control.should_training_stop = True


def train_trial(recipe: Recipe, trial, metric: str) -> float:
    """Train one trial's recipe (its data already linked in) and return its value of ``metric``."""
    import optuna
    from transformers.trainer_callback import ProgressCallback

    from seektune.train import pipeline
    from seektune.train.callbacks import GenerationMetric
    from seektune.train.run import leaf

    main_process = pipeline.ensure_prepared(recipe)
    built = leaf(recipe).build(recipe, main_process)  # sft, distill, dpo / orpo / kto alike
    trainer = built.trainer
    trainer.remove_callback(ProgressCallback)  # one line per trial instead of a bar per trial
    stopping = recipe.train.early_stopping
    if metric != "eval_loss" and not any(isinstance(c, GenerationMetric) and c.metric == metric
                                         for c in trainer.callback_handler.callbacks):
        rows = stopping or EarlyStoppingSpec()  # its generation_rows and max_new_tokens
        val = [r for r in built.val_records if "messages" in r]
        trainer.add_callback(GenerationMetric(built.tokenizer, val, metric, rows.generation_rows, rows.max_new_tokens))
    reporter = ReportToTrial(trial, metric)
    trainer.add_callback(reporter)  # after GenerationMetric: it reads the eval_<metric> that one adds
    try:
        pipeline.train_and_save(recipe, built, main_process)
    finally:
        trial.set_user_attr("steps", trainer.state.global_step)
    if reporter.pruned_at is not None:
        raise optuna.TrialPruned(f"{metric} {reporter.values[-1]:.4g} behind the median at step {reporter.pruned_at}")
    if not reporter.values:
        raise RuntimeError(f"training never evaluated {metric} on the val split "
                           f"(see {run_of(recipe).rejects})")
    if stopping and stopping.metric == metric and trainer.state.best_metric is not None:
        return float(trainer.state.best_metric)  # the best checkpoint is the one kept
    return reporter.values[-1]


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def keep_best_weights_only(study, out: Path) -> None:
    best = _best_number(study)
    for trial in study.get_trials(deepcopy=False):
        if trial.number == best or trial.state.name == "RUNNING":
            continue
        trial_run = RunDir(trial_dir_of(out, trial.number))
        for path in (trial_run.adapter, trial_run.model, trial_run.checkpoints, trial_run.last_good):
            if path.exists():
                shutil.rmtree(path)


def _best_number(study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no completed trial yet
        return None


# ---------------------------------------------------------------- results


def trial_record(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One trial as tune.json holds it; ``params`` in the space's order."""
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, "running")
    value = trial.value
    if state == "pruned" and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]  # where it was stopped
    params = {k: from_label(dist, trial.params[k]) for k, dist in space.items() if k in trial.params}
    return {"number": trial.number, "state": state, "params": params, "value": value,
            "steps": trial.user_attrs.get("steps"), "seconds": trial.user_attrs.get("seconds"),
            "error": trial.user_attrs.get("error"), "dir": trial.user_attrs.get("dir")}


def write_results(study, out: Path, recipe_path, overrides: list[str], recipe: Recipe, metric: str) -> dict[str, Any]:
    """``trials.csv``, ``tune.json`` and (when a trial completed) ``best.yaml``; returns tune.json's content."""
    space = space_of(study)
    records = [trial_record(t, space) for t in study.get_trials(deepcopy=False)]
    best_number = _best_number(study)
    best = next((r for r in records if r["number"] == best_number), None)
    summary = {"out": str(out), "metric": metric, "direction": study.direction.name.lower(),
               "trials": records, "best": best, "best_recipe": None}
    if best is not None:
        best_path = out / "best.yaml"
        best_dir = f"{str(recipe.output_dir).rstrip('/')}-best"
        best_recipe = load_recipe(recipe_path, overrides + [override(k, v) for k, v in best["params"].items()]
                                  + [override("output_dir", best_dir)])
        settings = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        best_path.write_text(
            f"# Best of {len(records)} trials of `seektune tune {recipe_path}` (trial {best['number']}, "
            f"{metric} {best['value']:.4g}): {settings}\n#\n#   seektune run {best_path}\n"
            + yaml.safe_dump(best_recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
            encoding="utf-8")
        summary["best_recipe"] = str(best_path)
    with (out / "trials.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", metric, "steps", "seconds", *space, "error", "dir"])
        for r in records:
            writer.writerow([r["number"], r["state"], r["value"], r["steps"], r["seconds"],
                             *(_cell(r["params"].get(k)) for k in space), r["error"], r["dir"]])
    (out / "tune.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return summary


def space_of(study) -> dict[str, dict[str, Any]]:
    return study.user_attrs["fingerprint"]["space"]


def _cell(value: Any) -> Any:
    return yaml_text(value) if isinstance(value, (list, dict)) else value


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return yaml_text(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_progress(study, frozen, metric: str, total: int) -> None:
    record = trial_record(frozen, space_of(study))
    done = len(counted_trials(study))
    params = " ".join(f"{k}={_short(v)}" for k, v in record["params"].items())
    value = f"{metric} {_short(record['value'])}" if record["value"] is not None else record["error"]
    best = _best_number(study)
    best_text = f"best: trial {best} ({_short(study.best_value)})" if best is not None else "no best yet"
    steps = f"{record['steps']} steps, " if record["steps"] is not None else ""
    print(f"tune: trial {record['number']} ({done}/{total}) {record['state']}: {value} | {params} | "
          f"{steps}{record['seconds']} s | {best_text}", flush=True)


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    trials = summary["trials"]
    keys = list(dict.fromkeys(k for t in trials for k in t["params"]))
    best = summary["best"]["number"] if summary["best"] else None
    table = Table(title=f"tune: {summary['metric']} ({summary['direction']}), {len(trials)} trials")
    for column in ("trial", *keys, summary["metric"], "state", "steps", "s"):
        table.add_column(column, justify="left" if column == "state" else "right", overflow="fold")
    for t in trials:
        cells = [f"{t['number']}{' *' if t['number'] == best else ''}",
                 *(_short(t["params"].get(k, "")) for k in keys), _short(t["value"]),
                 t["state"] + (f": {t['error']}" if t["error"] else ""), _short(t["steps"]), _short(t["seconds"])]
        # Text, not markup: a value like [q_proj, v_proj] or an error message is shown as it is
        table.add_row(*map(Text, cells), style="bold green" if t["number"] == best else None)
    console = Console()
    console.print(table)
    if summary["best_recipe"]:
        console.print(Text(f"best: trial {best}, written as a recipe: seektune run {summary['best_recipe']}"),
                      soft_wrap=True)
