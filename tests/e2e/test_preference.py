"""dpo / orpo / kto on tiny models: each moves the chosen (desirable) answer up against the rejected one.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_preference.py

The margin is the mean over the training pairs of log p(chosen) - log p(rejected) (summed over the
answer tokens, as render.py masks them) under the tuned model, against the same under the base
(the adapter disabled).
"""

from __future__ import annotations

import json

import pytest
import torch

from seektune.data.formats import rejected_message
from seektune.data.io import read_jsonl
from seektune.data.render import render
from seektune.evaluate import stage as eval_stage
from seektune.recipe import load_recipe
from seektune.runs import load_tuned
from seektune.serve.feedback import FeedbackStore, export_feedback
from seektune.train.run import run as train
from tests.conftest import FAQ_ROWS, write_recipe

WRONG = {"returns": "You can never return anything.", "shipping": "Shipping is always free of charge.",
         "warranty": "There is no warranty plan."}


def _wrong(row):
    return "不能退货。" if row["question"][0] in "退多" else WRONG[row["category"]]


@pytest.fixture
def pairs_file(tmp_path):
    rows = [{"prompt": r["question"], "chosen": r["answer"], "rejected": _wrong(r), "facts": r["facts"],
             "category": r["category"]} for r in FAQ_ROWS]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows * 2), encoding="utf-8")
    return path


def _recipe(tmp_path, model_dir, data_file, objective, *overrides, **extra):
    tmp_path.mkdir(exist_ok=True)
    recipe_file = write_recipe(tmp_path / "r.yaml", model_dir, data_file, tmp_path / "run", data__columns=None,
                               train__max_steps=12, train__lr=2e-2, train__report_to=[], **extra)
    return load_recipe(recipe_file, [f"objective={objective}", *overrides])


def answer_logp(model, tokenizer, messages) -> float:
    """log p(final assistant answer | the turns before it), summed over its trained tokens."""
    rendered = render(tokenizer, messages)
    labels = torch.tensor(rendered["labels"][1:])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([rendered["input_ids"]])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[:, None])[:, 0]
    return float(logp[labels != -100].sum())


def _mean(values):
    return sum(values) / len(values)


def chosen_and_rejected(model, tokenizer, records) -> tuple[float, float]:
    """Mean log-probability of the chosen (or desirable) and the rejected (or undesirable) answers."""
    good = [r["messages"] for r in records if r.get("label", True)]
    bad = [r["messages"][:-1] + [rejected_message(r)] for r in records if "rejected" in r]
    bad += [r["messages"] for r in records if r.get("label") is False]
    return (_mean([answer_logp(model, tokenizer, m) for m in good]),
            _mean([answer_logp(model, tokenizer, m) for m in bad]))


def tuned_and_base(run_dir):
    recipe, loaded, model = load_tuned(run_dir)
    model.eval()
    records = read_jsonl(run_dir / "data" / "train.jsonl")
    tuned = chosen_and_rejected(model, loaded.tokenizer, records)
    with model.disable_adapter():
        base = chosen_and_rejected(model, loaded.tokenizer, records)
    return tuned, base


def test_dpo_raises_the_chosen_over_rejected_margin_and_eval_scores_the_chosen_answer(tmp_path, tiny_llama,
                                                                                       pairs_file):
    run_dir = train(_recipe(tmp_path, tiny_llama, pairs_file, "dpo"))
    (tuned_good, tuned_bad), (base_good, base_bad) = tuned_and_base(run_dir)
    rise = (tuned_good - tuned_bad) - (base_good - base_bad)
    assert rise > 1.0, f"margin rose by {rise:.3f} nats only"
    assert tuned_good > base_good and tuned_bad < base_bad

    summary = json.loads((run_dir / "train.json").read_text())
    pref = summary["preference"]
    assert summary["objective"] == "dpo" and summary["steps"] == 12
    assert pref["reference"] == "the base model (the adapter disabled)" and pref["loss_type"] == "sigmoid"
    assert pref["first_reward_margin"] == 0.0 and pref["last_reward_margin"] > 0.05  # beta * the log-ratio margin
    assert pref["last_reward_accuracy"] == 1.0

    metrics = eval_stage.run(run_dir)  # val/test records end with the chosen answer: that is the reference
    samples = read_jsonl(run_dir / "eval" / "samples.jsonl")
    test_rows = read_jsonl(run_dir / "data" / "test.jsonl")
    assert metrics["tuned"]["n"] == len(test_rows) == len(samples) > 0
    assert [s["reference"] for s in samples] == [r["messages"][-1]["content"] for r in test_rows]
    assert all("rejected" in r for r in test_rows)


def test_orpo_moves_chosen_up_against_rejected(tmp_path, tiny_qwen2, pairs_file):
    run_dir = train(_recipe(tmp_path, tiny_qwen2, pairs_file, "orpo", "preference.beta=1.0"))
    (tuned_good, tuned_bad), (base_good, base_bad) = tuned_and_base(run_dir)
    assert tuned_good > base_good  # orpo's nll term on the chosen answer
    assert (tuned_good - tuned_bad) - (base_good - base_bad) > 1.0
    assert json.loads((run_dir / "train.json").read_text())["preference"]["reference"].startswith("none")


def test_kto_raises_desirable_and_lowers_undesirable(tmp_path, tiny_llama):
    rows = []
    for row in FAQ_ROWS:
        rows.append({"prompt": row["question"], "completion": row["answer"], "label": True})
        rows.append({"prompt": row["question"], "completion": _wrong(row), "label": False})
    data = tmp_path / "kto.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run_dir = train(_recipe(tmp_path, tiny_llama, data, "kto", "data.split.train=1", "data.split.val=0",
                              "data.split.test=0"))
    (tuned_good, tuned_bad), (base_good, base_bad) = tuned_and_base(run_dir)
    assert tuned_good - base_good > 0.2, "desirable completions did not become more likely"
    assert tuned_bad - base_bad < -0.3, "undesirable completions did not become less likely"
    pref = json.loads((run_dir / "train.json").read_text())["preference"]
    assert pref["loss_type"] == "kto" and pref["training_rows"] == 16


def test_feedback_dpo_export_trains_and_an_adapter_trains_on_against_itself(tmp_path, tiny_llama):
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    q1 = [{"role": "user", "content": "How long do I have to return something?"}]
    q2 = [{"role": "system", "content": "You are Lark's support assistant."},
          {"role": "user", "content": "What does shipping cost?"}]
    store.record_completion("c1", "base", q1, "Within a week.", None)
    store.add_feedback("c1", "down", correction="Returns are accepted within 45 days of delivery.")
    store.record_completion("c2", "base", q1, "45 days.", "The policy says 45 days.")
    store.add_feedback("c2", "up")
    store.record_completion("c3", "base", q1, "Never.", None)
    store.add_feedback("c3", "down")
    store.record_completion("c4", "base", q2, "Standard shipping costs $4.95.", None)
    store.add_feedback("c4", "up")
    store.record_completion("c5", "base", q2, "It is free.", None)
    store.add_feedback("c5", "down")
    exported = export_feedback(store.path, "dpo", tmp_path / "dpo.jsonl")
    assert exported["rows"] == 5  # q1: 2 preferred (a correction, an up-rating) x 2 down-rated; q2: 1 x 1

    split = ["data.split.train=1", "data.split.val=0", "data.split.test=0", "data.dedup.exact=true"]
    recipe = _recipe(tmp_path, tiny_llama, tmp_path / "dpo.jsonl", "dpo", *split, "train.max_steps=2")
    run_dir = train(recipe)
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["train_rows"] == summary["preference"]["training_rows"] == 5 and summary["steps"] == 2
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()

    # a second round on from that adapter: trl keeps the starting adapter frozen as the reference ...
    again = _recipe(tmp_path / "again", tiny_llama, tmp_path / "dpo.jsonl", "dpo", *split, "train.max_steps=2",
                    f"model.adapter={run_dir / 'adapter'}")
    second = train(again)
    pref = json.loads((second / "train.json").read_text())["preference"]
    assert pref["reference"] == "the starting adapter (model.adapter), kept frozen"
    assert not (second / "adapter" / "ref").exists()  # ... and drops it before saving the result


def test_pairs_are_required_for_dpo(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run")
    with pytest.raises(ValueError, match=r"objective dpo needs rows with a rejected answer: 8 of 8 train rows "
                                         r"have none \(first: faq.jsonl:\d+\)"):
        train(load_recipe(recipe_file, ["objective=dpo"]))
    with pytest.raises(ValueError, match=r"objective kto needs rows with a true/false label"):
        train(load_recipe(recipe_file, ["objective=kto"]))


def test_full_dpo_checkpoints_atomically_against_a_frozen_copy_and_stops_on_nan(tmp_path, tiny_llama, pairs_file,
                                                                                 monkeypatch):
    from seektune.train.checkpoint import NonFiniteLoss, is_complete

    full = ["method.name=full", "train.max_steps=2", "train.save_steps=1", "train.lr=1e-3"]
    run_dir = train(_recipe(tmp_path, tiny_llama, pairs_file, "dpo", *full))
    assert [is_complete(run_dir / "checkpoints" / f"checkpoint-{step}") for step in (1, 2)] == [True, True]
    assert (run_dir / "model" / "model.safetensors").is_file()
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["preference"]["reference"] == "a frozen copy of the starting weights"
    assert summary["preference"]["last_reward_margin"] != 0.0  # the policy moved away from its reference

    monkeypatch.setenv("SEEKTUNE_FAULT", "nan@2")
    with pytest.raises(NonFiniteLoss, match="step 2"):
        train(_recipe(tmp_path / "nan", tiny_llama, pairs_file, "dpo", "train.max_steps=3"))
    assert (tmp_path / "nan" / "run" / "last-good" / "STEP").read_text() == "1\n"


def test_long_prompts_lose_their_oldest_exchanges_first(tiny_llama):
    from seektune.models.load import family_of, load_tokenizer
    from seektune.train.preference import fit_prompt

    tokenizer = load_tokenizer(tiny_llama, family_of(str(tiny_llama), tiny_llama), None, False)
    system = {"role": "system", "content": "You are Lark's support assistant."}
    exchange = [{"role": "user", "content": "Hello there, how are you?"},
                {"role": "assistant", "content": "Fine, thank you for asking."}]
    last = {"role": "user", "content": "What does shipping cost?"}
    prompt = [system, *exchange, *exchange, last]

    def tokens(turns):
        from seektune.data.render import prompt_text

        return len(tokenizer(prompt_text(tokenizer, turns), add_special_tokens=False)["input_ids"])

    assert fit_prompt(tokenizer, prompt, None) == prompt
    assert fit_prompt(tokenizer, prompt, tokens(prompt)) == prompt
    assert fit_prompt(tokenizer, prompt, tokens(prompt) - 1) == [system, *exchange, last]
    assert fit_prompt(tokenizer, prompt, tokens([system, last])) == [system, last]
    assert fit_prompt(tokenizer, prompt, tokens([system, last]) - 1) is None
