"""`seektune tune`: Optuna over recipe keys on the tiny Llama, data prepared once, pruning, resuming."""

import csv
import json
import os
from types import SimpleNamespace

import pytest
import yaml

from seektune import tune
from seektune.data import prepare
from seektune.recipe import RecipeError, apply_overrides, load_recipe
from tests.conftest import write_recipe


def tune_recipe(tmp_path, model_dir, data_file, tune_section, **extra):
    path = write_recipe(tmp_path / "r.yaml", model_dir, data_file, tmp_path / "run", **extra)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["tune"] = tune_section
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def prepare_calls(monkeypatch):
    calls = []
    real = prepare.run

    def counting(recipe):
        calls.append(recipe.output_dir)
        return real(recipe)

    monkeypatch.setattr(prepare, "run", counting)
    return calls


def test_three_trials_prepare_once_keep_the_best_and_resume(tmp_path, tiny_llama, faq_file, prepare_calls):
    space = {"train.lr": {"low": "1e-3", "high": 3.0e-2, "log": True}, "method.r": {"choices": [2, 4]}}
    recipe_file = tune_recipe(tmp_path, tiny_llama, faq_file, {"trials": 3, "space": space, "seed": 0},
                              train__max_steps=2)
    summary = tune.run(recipe_file)
    out = tmp_path / "run" / "tune"

    with (out / "trials.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and [r["state"] for r in rows] == ["complete"] * 3
    assert json.loads((out / "tune.json").read_text()) == summary

    # the best value is the lowest final val loss any trial wrote to its train.json
    final_losses = {t["number"]: json.loads((out / f"trial-{t['number']:03d}" / "train.json").read_text())
                    ["eval_loss"] for t in summary["trials"]}
    assert all(t["value"] == pytest.approx(final_losses[t["number"]]) for t in summary["trials"])
    best = summary["best"]
    assert best["value"] == pytest.approx(min(final_losses.values()))
    assert len({t["params"]["train.lr"] for t in summary["trials"]}) == 3  # sampled, not repeated
    assert all(1e-3 <= t["params"]["train.lr"] <= 3e-2 and t["params"]["method.r"] in (2, 4) and t["steps"] == 2
               for t in summary["trials"])

    # best.yaml is a recipe `seektune run` accepts, carrying the best trial's values
    best_recipe = load_recipe(out / "best.yaml")
    assert best_recipe.train.lr == best["params"]["train.lr"]
    assert best_recipe.method.r == best["params"]["method.r"]
    assert best_recipe.output_dir == f"{tmp_path / 'run'}-best"
    assert best_recipe.data.paths == [str(faq_file)] and best_recipe.train.max_steps == 2

    # prepared once; every trial reads the same files (hard links); only the best keeps weights
    assert prepare_calls == [str(out)]
    for t in summary["trials"]:
        trial_dir = out / f"trial-{t['number']:03d}"
        for split in ("train.jsonl", "val.jsonl", "test.jsonl"):
            assert os.path.samefile(trial_dir / "data" / split, out / "data" / split)
        assert (trial_dir / "adapter").is_dir() == (t["number"] == best["number"])
        assert load_recipe(trial_dir / "recipe.resolved.yaml").train.lr == t["params"]["train.lr"]

    # running it again continues the study: --trials 4 adds one trial, data not prepared again
    resumed = tune.run(recipe_file, trials=4)
    assert [t["number"] for t in resumed["trials"]] == [0, 1, 2, 3]
    assert resumed["trials"][:3] == summary["trials"]
    assert resumed["trials"][3]["params"]["train.lr"] not in {t["params"]["train.lr"] for t in summary["trials"]}
    assert prepare_calls == [str(out)]
    # ... but not with another space
    with pytest.raises(RecipeError, match="another space"):
        tune.run(tune_recipe(tmp_path, tiny_llama, faq_file, {"trials": 4, "space": {"train.lr": space["train.lr"]}},
                             train__max_steps=2))


class PruneTrial:
    """A pruner that stops one given trial at its first evaluation."""

    def __init__(self, number):
        self.number = number

    def prune(self, study, trial):
        return trial.number == self.number


def test_pruned_and_failed_trials_are_recorded_and_the_search_goes_on(tmp_path, tiny_llama, faq_file, monkeypatch):
    monkeypatch.setattr(tune, "make_pruner", lambda name: PruneTrial(1))
    real_train_trial = tune.train_trial

    def failing_third(recipe, trial, metric):
        if trial.number == 2:
            raise ValueError("boom")
        return real_train_trial(recipe, trial, metric)

    monkeypatch.setattr(tune, "train_trial", failing_third)
    space = {"train.lr": {"low": 1e-3, "high": 1e-2}, "train.batch_size": {"low": 2, "high": 4}}
    recipe_file = tune_recipe(tmp_path, tiny_llama, faq_file, {"trials": 3, "space": space, "metric": "rougeL"},
                              train__max_steps=3, train__eval_steps=2)
    summary = tune.run(recipe_file, out=tmp_path / "search")
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["complete", "pruned", "failed"]
    assert summary["direction"] == "maximize" and summary["best"]["number"] == 0
    assert all(isinstance(t["params"]["train.batch_size"], int) for t in trials)  # int bounds: an int range
    assert trials[2]["error"] == "ValueError: boom"

    history = json.loads((tmp_path / "search" / "trial-000" / "train.json").read_text())["log_history"]
    rouge = [h["eval_rougeL"] for h in history if "eval_rougeL" in h]
    # evaluated at step 2 (eval_steps) and at the last step, 3: its value is the last evaluation's
    assert [h["step"] for h in history if "eval_rougeL" in h] == [2, 3]
    assert trials[0]["value"] == pytest.approx(rouge[-1])
    # the pruned trial stopped at its first evaluation, and kept its train.json but not its weights
    pruned = json.loads((tmp_path / "search" / "trial-001" / "train.json").read_text())
    assert trials[1]["steps"] == pruned["steps"] == 2
    assert not (tmp_path / "search" / "trial-001" / "adapter").exists()
    with open(tmp_path / "search" / "trials.csv", encoding="utf-8") as handle:
        assert [r["state"] for r in csv.DictReader(handle)] == ["complete", "pruned", "failed"]


def test_every_trial_failing_raises_after_writing_the_record(tmp_path, tiny_llama, faq_file, monkeypatch):
    def failing(recipe, trial, metric):
        raise ValueError(f"bad trial {trial.number}")

    monkeypatch.setattr(tune, "train_trial", failing)
    recipe_file = tune_recipe(tmp_path, tiny_llama, faq_file, {"trials": 2, "space": {"method.r": {"choices": [2, 4]}}})
    with pytest.raises(RuntimeError, match="no trial completed.*bad trial 0.*bad trial 1"):
        tune.run(recipe_file)
    record = json.loads((tmp_path / "run" / "tune" / "tune.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["failed", "failed"] and record["best"] is None
    assert not (tmp_path / "run" / "tune" / "best.yaml").exists()


@pytest.mark.parametrize("space, message", [
    ({"train.lrr": {"low": 1e-4, "high": 1e-3}},
     r"(?s)tune.space: train.lrr.*unknown key \(did you mean 'train.lr'\?\)"),
    ({"train.lr": {"low": 1e-3, "high": 1e-4}}, r"tune.space: train.lr: the range 0.001..0.0001 is empty"),
    ({"train.lr": {"low": -1.0, "high": 1e-3}}, r"tune.space: train.lr: train.lr=-1.0 is not a valid"),
    ({"method.name": {"choices": ["lora", "lorra"]}}, r"tune.space: method.name: method.name='lorra' is not"),
    ({"train.lr": {"low": 1e-4, "hi": 1e-3}}, r"tune.space: train.lr: a range is \{low, high, log\?\}"),
    ({"data.max_length": {"choices": [64, 128]}}, r"tune.space: data.max_length: data keys cannot be tuned"),
])
def test_a_bad_space_is_a_clear_error_before_anything_runs(tmp_path, tiny_llama, faq_file, space, message):
    recipe_file = tune_recipe(tmp_path, tiny_llama, faq_file, {"space": space})
    with pytest.raises(RecipeError, match=message):
        tune.run(recipe_file)
    assert not (tmp_path / "run").exists()


def test_an_empty_val_split_is_a_clear_error(tmp_path, tiny_llama, faq_file):
    recipe_file = tune_recipe(tmp_path, tiny_llama, faq_file, {"space": {"method.r": {"choices": [2, 4]}}},
                              data__split={"train": 0.8, "val": 0.0, "test": 0.2})
    with pytest.raises(RecipeError, match="data.split.val"):
        tune.run(recipe_file)


@pytest.mark.parametrize("value", [1e-05, 0.001, 3, "yes", "cosine", None, ["q_proj", "v_proj"], True])
def test_an_override_reads_back_as_the_same_value(value):
    assert apply_overrides({}, [tune.override("train.x", value)]) == {"train": {"x": value}}


def test_the_last_evaluation_never_prunes():
    trial = SimpleNamespace(reported=[], report=lambda value, step: trial.reported.append((step, value)),
                            should_prune=lambda: True)
    reporter = tune.ReportToTrial(trial, "eval_loss")
    control = SimpleNamespace(should_training_stop=False)
    reporter.on_evaluate(None, SimpleNamespace(global_step=4, max_steps=4), control, metrics={"eval_loss": 2.0})
    assert not control.should_training_stop and reporter.pruned_at is None
    reporter.on_evaluate(None, SimpleNamespace(global_step=2, max_steps=4), control, metrics={"eval_loss": 3.0})
    assert control.should_training_stop and reporter.pruned_at == 2
    assert trial.reported == [(1, 2.0), (2, 3.0)]  # step = evaluation number


def test_a_trial_cut_off_by_a_kill_is_marked_interrupted_and_not_counted(tmp_path, tiny_llama, faq_file, monkeypatch):
    import optuna

    monkeypatch.setattr(tune, "train_trial", lambda recipe, trial, metric: recipe.train.lr)  # a fake objective
    modules = {"choices": ["all-linear", ["q_proj", "v_proj"]]}  # a list among the choices: sampled by its YAML
    recipe_file = tune_recipe(tmp_path, tiny_llama, faq_file,
                              {"space": {"train.lr": {"low": 1e-3, "high": 1e-2}, "method.target_modules": modules}})
    out = tmp_path / "run" / "tune"
    tune.run(recipe_file, trials=1)
    study = optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    study.ask()  # trial 1 starts; the process is then killed: it stays RUNNING in the study
    summary = tune.run(recipe_file, trials=2)
    assert [(t["number"], t["state"], t["error"]) for t in summary["trials"]] == [
        (0, "complete", None), (1, "failed", "interrupted"), (2, "complete", None)]
    assert summary["best"]["value"] == min(t["value"] for t in summary["trials"] if t["state"] == "complete")
    best = summary["best"]
    assert best["params"]["method.target_modules"] in modules["choices"]
    assert load_recipe(out / "best.yaml").method.target_modules == best["params"]["method.target_modules"]


def test_a_dpo_recipe_tunes_through_the_preference_trainer(tmp_path, tiny_llama):
    """Any objective tunes: DPO trials train with trl's DPOTrainer and are compared on its val loss."""
    from tests.conftest import FAQ_ROWS

    wrong = "You can never return anything."
    rows = [{"prompt": r["question"], "chosen": r["answer"], "rejected": wrong, "category": r["category"]}
            for r in FAQ_ROWS]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows * 2), encoding="utf-8")
    space = {"preference.beta": {"choices": [0.05, 0.5]}}
    recipe_file = tune_recipe(tmp_path, tiny_llama, pairs, {"trials": 2, "space": space, "seed": 0},
                              train__max_steps=2, data__columns=None)
    summary = tune.run(recipe_file, overrides=["objective=dpo"])
    out = tmp_path / "run" / "tune"
    assert [t["state"] for t in summary["trials"]] == ["complete", "complete"]
    assert {t["params"]["preference.beta"] for t in summary["trials"]} <= {0.05, 0.5}
    for trial in summary["trials"]:
        trained = json.loads((out / f"trial-{trial['number']:03d}" / "train.json").read_text())
        assert trained["objective"] == "dpo" and trained["steps"] == 2
        assert trained["preference"]["beta"] == trial["params"]["preference.beta"]
        assert trial["value"] == pytest.approx(trained["eval_loss"])  # DPO's own val loss compares trials
        assert any("rewards/margins" in entry for entry in trained["log_history"])  # trl's DPO logged it
    assert summary["best"]["value"] == pytest.approx(min(t["value"] for t in summary["trials"]))
    assert yaml.safe_load((out / "best.yaml").read_text())["objective"] == "dpo"
