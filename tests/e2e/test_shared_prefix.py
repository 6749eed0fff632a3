"""Issue #22: shared-prefix batches compute a common prefix once and change nothing else."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from seektune.recipe import load_recipe
from seektune.train import packing, prefix
from seektune.train.run import run as train
from tests.conftest import faq_trainer, trainer_loss_and_grads, write_recipe

PREFIX = 11
SUFFIXES = [7, 19, 1, 12]  # rows of different lengths, one with a single token after the prefix


def _rows(vocab: int) -> list[dict]:
    """Rows sharing an 11-token prefix; labels on the second half of each suffix only (answer-only loss)."""
    generator = torch.Generator().manual_seed(0)
    head = torch.randint(3, vocab, (PREFIX,), generator=generator).tolist()
    rows = []
    for n in SUFFIXES:
        ids = head + torch.randint(3, vocab, (n,), generator=generator).tolist()
        first = PREFIX + max(1, n // 2)  # a row of one token after the prefix trains nothing
        labels = [-100] * first + ids[first:]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def _loss_grads_logits(model, batch):
    model.zero_grad()
    out = model(**batch, use_cache=False)
    out.loss.backward()
    return out.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, out.logits


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2", "tiny_deepseek_v3"])
def test_a_shared_prefix_batch_has_the_loss_gradients_and_logits_of_the_plain_one(fixture, request):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture)).train()
    assert packing.use_packed_attention(model) == packing.PACKED_SDPA
    rows = _rows(model.config.vocab_size)
    plain = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    shared = prefix.SharedPrefixCollator(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))(rows)

    total = sum(len(r["input_ids"]) for r in rows)
    assert shared[prefix.PREFIX_KEY] == PREFIX
    assert shared["input_ids"].shape == (1, total - PREFIX * (len(rows) - 1))
    assert shared["cu_seq_lens_q"].tolist() == [0, 18, 37, 38, 50]
    assert (shared["labels"] != -100).sum() == (plain["labels"] != -100).sum()

    want_loss, want_grads, want_logits = _loss_grads_logits(model, plain)
    loss, grads, logits = _loss_grads_logits(model, shared)
    assert abs(loss - want_loss) < 1e-5, (loss, want_loss)
    assert grads.keys() == want_grads.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], atol=1e-5, rtol=0, msg=name)
    keep = torch.ones(total, dtype=torch.bool)
    for start in plain["cu_seq_lens_q"].tolist()[1:-1]:
        keep[start:start + PREFIX] = False
    torch.testing.assert_close(logits[0], want_logits[0][keep], atol=1e-5, rtol=0)

    blind = {k: v for k, v in shared.items() if k != prefix.PREFIX_KEY}  # the check can fail: rows without
    with torch.no_grad():                                                 # the prefix answer differently
        assert (model(**blind, use_cache=False).logits[0] - logits[0].detach()).abs().max() > 1e-3


def test_a_prefix_stops_before_any_trained_token():
    ids = torch.tensor([5, 6, 7, 8, 9, 10, 1, 2] + [5, 6, 7, 8, 9, 10, 3])
    bounds = [0, 8, 15]
    unlabelled = torch.full_like(ids, -100)
    assert prefix.shared_prefix_length(ids, unlabelled, bounds) == 6
    labels = unlabelled.clone()
    labels[8 + 5] = 10  # the second row's 6th token is trained: it must still be predicted from its 5th
    assert prefix.shared_prefix_length(ids, labels, bounds) == 4
    labels[8 + 3] = 8  # now only 3 tokens could be shared: too few to bother
    assert prefix.shared_prefix_length(ids, labels, bounds) == 0
    other = ids.clone()
    other[8 + 4] = 99  # the rows part after 4 tokens
    assert prefix.shared_prefix_length(other, unlabelled, bounds) == 4
    assert prefix.shared_prefix_length(ids, unlabelled, [0, 15]) == 0  # one row: nothing to share
    batch = {"input_ids": ids[None], "labels": labels[None], "position_ids": torch.arange(15)[None],
             "cu_seq_lens_q": torch.tensor(bounds, dtype=torch.int32)}
    assert prefix.share_prefix(batch) is batch  # nothing shared: the batch as it was


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama):
    return faq_trainer(tmp_path_factory.mktemp("shared-prefix"), tiny_llama,
                       data__system_prompt="You are the support assistant of a small shop.")


def test_the_sft_trainer_shares_the_system_prompt_with_the_same_loss_and_gradients(built):
    trainer = built.trainer
    trainer.tokens_seen = 0
    assert built.shared_prefix and isinstance(trainer.data_collator, prefix.SharedPrefixCollator)
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset.select(range(4))]
    num_items = sum(sum(1 for label in row["labels"][1:] if label != -100) for row in rows)
    plain = trainer.data_collator.collator(rows)
    shared = trainer.data_collator(rows)
    assert shared[prefix.PREFIX_KEY] >= 10  # the ChatML header and the system prompt's words
    assert shared["input_ids"].shape[1] == plain["input_ids"].shape[1] - 3 * shared[prefix.PREFIX_KEY]
    loss, grads = trainer_loss_and_grads(trainer, [shared], num_items)  # the label-only head's path
    want_loss, want_grads = trainer_loss_and_grads(trainer, [plain], num_items)
    assert abs(loss - want_loss) < 1e-5, (loss, want_loss)
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], atol=1e-5, rtol=0, msg=name)
    # trl's num_tokens counts the rows' tokens: the shared batch's prefix once per row, as the plain one
    assert trainer.tokens_seen == 2 * sum(len(row["input_ids"]) for row in rows)


def test_a_run_says_whether_it_shared_the_prefix(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=2,
                               train__shared_prefix=False, data__system_prompt="You are the support assistant.")
    recipe = load_recipe(recipe_file)
    run_dir = train(recipe)
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["shared_prefix"] is False and summary["batching"] == "padding_free" and summary["steps"] == 2
