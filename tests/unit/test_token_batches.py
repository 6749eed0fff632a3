"""Generation and perplexity batches are bounded by tokens, not rows alone (issue 16: long prompts)."""

from __future__ import annotations

import random

import torch

from seektune.evaluate.generate import generate_answers, token_batches
from tests.unit.test_control_tokens import _tokenizer


def test_batches_hold_every_row_once_within_the_row_and_token_limits():
    rng = random.Random(3)
    lengths = [rng.randint(1, 300) for _ in range(200)] + [5000]  # one row longer than the whole budget
    batches = token_batches(lengths, max_rows=16, max_tokens=2048, extra=32)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) == 1 or len(batch) * (max(lengths[i] for i in batch) + 32) <= 2048
    assert batches[-1] == [200]  # the long row alone, last (shortest first)
    flat = [i for batch in batches for i in batch]
    assert [lengths[i] for i in flat] == sorted(lengths)
    # short rows fill batches to the row limit, long ones go in smaller batches
    assert len(batches[0]) == 16 and len(batches[-2]) < 16


def test_batches_keep_a_given_order():
    assert token_batches([1, 50, 2, 60], max_rows=4, max_tokens=130, order=[3, 2, 1, 0]) == [[3, 2], [1, 0]]


class ShapeModel(torch.nn.Module):
    """Records each generation batch's shape and answers "ok"."""

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.answer = tokenizer("ok", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        self.shapes: list[tuple[int, int]] = []

    def generate(self, input_ids, attention_mask, **_):
        self.shapes.append(tuple(input_ids.shape))
        return torch.tensor([ids + self.answer for ids in input_ids.tolist()])


def test_generation_puts_long_prompts_in_smaller_batches(tiny_tokenizer_dir):
    tok = _tokenizer(tiny_tokenizer_dir, "chatml")
    model = ShapeModel(tok)
    conversations = [[{"role": "user", "content": "word " * n}] for n in [2] * 8 + [150] * 8]
    answers = generate_answers(model, tok, conversations, batch_size=8, batch_tokens=1200, max_new_tokens=10)
    assert [a["answer"] for a in answers] == ["ok"] * 16
    assert sum(rows for rows, _ in model.shapes) == 16
    assert model.shapes[0][0] == 8  # the short prompts: the row limit
    assert all(rows * (width + 10) <= 1200 for rows, width in model.shapes[1:])
    assert len(model.shapes) > 2  # the long ones were split
