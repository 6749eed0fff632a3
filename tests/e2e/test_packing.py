"""Issue #9: padding-free batches and the label-only LM head change the FLOPs, not the maths."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from seektune.recipe import load_recipe
from seektune.train import packing, pipeline
from seektune.train.run import run as train
from tests.conftest import faq_trainer, trainer_loss_and_grads, write_recipe

LENGTHS = [5, 17, 9, 30, 1, 12]  # very different lengths, and a row of a single token


def _random_rows(vocab: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in LENGTHS]


@pytest.mark.parametrize("attention", ["sdpa", "eager", packing.PACKED_SDPA])
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2", "tiny_deepseek_v3"])
def test_each_packed_row_attends_only_to_itself(fixture, attention, request):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture)).eval()
    rows = _random_rows(model.config.vocab_size)
    if attention == packing.PACKED_SDPA:
        assert packing.use_packed_attention(model) == packing.PACKED_SDPA
    else:
        model.set_attn_implementation(attention)
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([{"input_ids": r} for r in rows])
    del batch["labels"]
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([row]), use_cache=False).logits[0] for row in rows]
        # use_cache=False as in training: with a cache transformers does not look for packed rows at all
        packed = model(**batch, use_cache=False).logits[0].split(LENGTHS)
        leaked = model(input_ids=batch["input_ids"], use_cache=False).logits[0].split(LENGTHS)
    for own, in_pack in zip(alone, packed):
        torch.testing.assert_close(in_pack, own, atol=1e-5, rtol=0)
    assert max((own - row).abs().max() for own, row in zip(alone, leaked)) > 1e-3  # the check can fail


def test_label_only_head_matches_full_logits(monkeypatch):
    monkeypatch.setattr(packing, "CHUNK_ELEMENTS", 7 * 300)  # chunks of 7 rows, the last one short
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=True)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 300, (37,))
    upstream = torch.rand(37)  # per-token weights, so the gradient is not a plain mean

    log_probs, entropy, is_top1 = packing.label_log_probs(hidden, head, targets)
    (log_probs * upstream).sum().backward()
    ours = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    for tensor in (hidden, head.weight, head.bias):
        tensor.grad = None
    full = F.log_softmax(head(hidden), dim=-1)
    expected = full.gather(1, targets[:, None]).squeeze(1)
    (expected * upstream).sum().backward()

    torch.testing.assert_close(log_probs, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1).detach(), atol=1e-5, rtol=0)
    assert torch.equal(is_top1, full.argmax(-1) == targets)
    for got, want in zip(ours, [hidden.grad, head.weight.grad, head.bias.grad]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    nothing = torch.zeros(0, 16, requires_grad=True)  # a micro-batch without labels: a zero loss, not an error
    log_probs, _, _ = packing.label_log_probs(nothing, head, targets[:0])
    log_probs.sum().backward()
    assert nothing.grad.shape == (0, 16)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama):
    return faq_trainer(tmp_path_factory.mktemp("packing"), tiny_llama)


def _rows(trainer, n=4):
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset.select(range(n))]


_loss_and_grads = trainer_loss_and_grads


def _plain_loss_and_grads(trainer, rows):
    """The reference: a padded batch through the model's own forward, full logits and transformers' loss."""
    model = trainer.model
    model.train()
    model.zero_grad()
    batch = DataCollatorForLanguageModeling(pad_token_id=trainer.processing_class.pad_token_id)(rows)
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_same(got, want):
    (loss, grads), (want_loss, want_grads) = got, want
    assert abs(loss - want_loss) < 1e-5, (loss, want_loss)
    assert grads.keys() == want_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], atol=1e-5, rtol=0, msg=name)


def test_padding_free_batches_give_the_loss_and_gradients_of_padded_ones(built):
    trainer = built.trainer
    assert built.batching == "padding_free" and trainer.data_collator.padding_free
    rows = _rows(trainer)
    num_items = sum(sum(1 for label in row["labels"][1:] if label != -100) for row in rows)
    reference = _plain_loss_and_grads(trainer, rows)
    padded = DataCollatorForLanguageModeling(pad_token_id=trainer.processing_class.pad_token_id)
    _assert_same(_loss_and_grads(trainer, [padded(rows)], num_items), reference)
    packed = trainer.data_collator.collator(rows)  # trl's, without the shared prefix (test_shared_prefix.py)
    assert packed["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))  # not one pad token
    _assert_same(_loss_and_grads(trainer, [packed], num_items), reference)
    # gradient accumulation: two micro-batches of two rows (sharing their prefix), normalised by the step's label count
    halves = [trainer.data_collator(rows[:2]), trainer.data_collator(rows[2:])]
    _assert_same(_loss_and_grads(trainer, halves, num_items), reference)


def test_the_lm_head_runs_only_at_labelled_positions(built, monkeypatch):
    trainer = built.trainer
    seen = []
    original = packing.label_log_probs
    monkeypatch.setattr(packing, "label_log_probs", lambda hidden, *a: seen.append(len(hidden)) or original(hidden, *a))
    rows = _rows(trainer)
    trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    labelled = sum(sum(1 for label in row["labels"] if label != -100) for row in rows)
    total = sum(len(row["input_ids"]) for row in rows)
    assert seen == [labelled] and labelled < total / 2


def test_padded_batching_and_methods_that_cannot_pack(tmp_path, tiny_llama, faq_file):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run"))
    assert recipe.train.batching == "padding_free" and pipeline.batching(recipe, model) == "padding_free"
    recipe.train.batching = "padded"
    assert pipeline.batching(recipe, model) == "padded"
    recipe.train.batching = "padding_free"
    recipe.method.name = "prefix"  # virtual tokens on every row: one packed row would get them once
    assert pipeline.batching(recipe, model) == "padded"


def test_a_padded_run_trains_and_says_so(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=2,
                               train__batching="padded")
    run_dir = train(load_recipe(recipe_file))
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["batching"] == "padded" and summary["steps"] == 2
