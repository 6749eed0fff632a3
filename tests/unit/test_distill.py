"""Distillation's maths and bookkeeping: the top-k KL, the teacher cache, the choice of mode."""

import math

import pytest
import torch
import torch.nn.functional as F

from seektune.recipe import Recipe
from seektune.train import distill, packing
from seektune.train.distill import DistillError, TeacherTargets, labelled_terms, teacher_topk, topk_kl


def _full_kl(student_logits, teacher_logits, temperature):
    s = torch.log_softmax(student_logits / temperature, -1)
    t = torch.log_softmax(teacher_logits / temperature, -1)
    return (t.exp() * (t - s)).sum(-1)


def test_topk_kl_is_the_hand_computed_kl_with_the_rest_as_one_outcome():
    # teacher at T=2: token 2 has p=0.5, token 0 has p=0.3, the other three tokens share 0.2
    student = torch.tensor([[1.0, -0.5, 2.0, 0.0, 0.7]])
    ids = torch.tensor([[2, 0]], dtype=torch.int32)
    log_probs = torch.log(torch.tensor([[0.5, 0.3]]))
    z = [x / 2 for x in student[0].tolist()]
    total = sum(math.exp(v) for v in z)
    s = [math.exp(v) / total for v in z]
    expected = 0.5 * math.log(0.5 / s[2]) + 0.3 * math.log(0.3 / s[0]) + 0.2 * math.log(0.2 / (s[1] + s[3] + s[4]))
    assert topk_kl(student, ids, log_probs, 2.0).item() == pytest.approx(expected, rel=1e-5)  # float32


def test_topk_kl_is_zero_when_the_student_is_the_teacher_and_exact_with_all_but_one_token():
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 11) * 3, torch.randn(6, 11)
    ids, log_probs = teacher_topk(teacher, k=100, temperature=1.5)
    assert ids.shape == (6, 10)  # k is capped at V - 1: "the rest" is always one real token
    torch.testing.assert_close(log_probs, torch.log_softmax(teacher / 1.5, -1).gather(-1, ids.long()))
    torch.testing.assert_close(topk_kl(student, ids, log_probs, 1.5), _full_kl(student, teacher, 1.5))
    assert topk_kl(teacher, *teacher_topk(teacher, 3, 1.5), 1.5).abs().max() < 1e-6


def test_topk_kl_never_exceeds_the_full_kl_and_equals_it_when_the_tails_have_one_shape():
    torch.manual_seed(1)
    teacher, student = torch.randn(8, 50) * 2, torch.randn(8, 50) * 2
    ids, log_probs = teacher_topk(teacher, 5, 1.0)
    assert (topk_kl(student, ids, log_probs, 1.0) <= _full_kl(student, teacher, 1.0) + 1e-6).all()
    # a student that only moves the teacher's top tokens keeps the tail's shape: coarse KL == full KL
    moved = teacher.clone().scatter_add_(-1, ids.long(), torch.randn(8, 5))
    torch.testing.assert_close(topk_kl(moved, ids, log_probs, 1.0), _full_kl(moved, teacher, 1.0))


def test_labelled_terms_in_chunks_give_the_same_sums_and_gradients(monkeypatch):
    torch.manual_seed(2)
    head = torch.nn.Linear(8, 30, bias=False)
    hidden = torch.randn(7, 8, requires_grad=True)
    targets = torch.randint(0, 30, (7,))
    ids, log_probs = teacher_topk(torch.randn(7, 30), 4, 2.0)

    def run():
        hidden.grad = None
        kl, ce, correct = labelled_terms(hidden, head, targets, ids, log_probs, 2.0)
        (0.3 * kl + ce).backward()
        return kl.detach(), ce.detach(), correct, hidden.grad.clone()

    whole = run()
    monkeypatch.setattr(packing, "CHUNK_ELEMENTS", 60)  # two rows of logits per chunk, under checkpointing
    chunked = run()
    logits = head(hidden).detach()
    torch.testing.assert_close(whole[0], topk_kl(logits, ids, log_probs, 2.0).sum())
    torch.testing.assert_close(whole[1], F.cross_entropy(logits, targets, reduction="sum"))
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)


def test_teacher_targets_follow_the_rows_in_any_order_and_survive_a_round_trip(tmp_path):
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]},
            {"input_ids": [9, 10, 11], "labels": [-100, 10, 11]}]
    assert [distill.labelled_positions(r["labels"]) for r in rows] == [[1, 2], [0, 1]]
    keys = [distill.row_key(r["input_ids"], r["labels"]) for r in rows]
    targets = TeacherTargets({keys[0]: (0, 2), keys[1]: (2, 4)},
                             torch.arange(8, dtype=torch.int32).reshape(4, 2), torch.arange(8.0).reshape(4, 2))
    targets.save(tmp_path / "t.safetensors")
    loaded = TeacherTargets.load(tmp_path / "t.safetensors", {})
    ids, log_probs = loaded.for_rows([rows[1], rows[0], rows[1]])
    assert ids[:, 0].tolist() == [4, 6, 0, 2, 4, 6] and log_probs.dtype == torch.float32
    assert distill.rows_hash(rows) == distill.rows_hash(rows[::-1]) != distill.rows_hash(rows[:1])
    with pytest.raises(DistillError, match="no cached teacher targets"):
        loaded.for_rows([{"input_ids": [1, 2], "labels": [-100, 2]}])


def test_an_endpoint_teacher_means_sequence_mode_and_logits_mode_says_why_not():
    recipe = Recipe.model_validate({"objective": "distill", "distill": {"teacher": "http://127.0.0.1:9/v1"}})
    teacher = distill.Teacher.from_spec(recipe.distill)
    assert teacher.kind == "endpoint"
    mode, reason = distill.choose_mode(recipe, teacher, tokenizer=None)
    assert mode == "sequence" and "endpoint" in reason
    recipe.distill.mode = "logits"
    with pytest.raises(DistillError, match="endpoint teacher sends text.*distill.mode to sequence"):
        distill.choose_mode(recipe, teacher, tokenizer=None)
    recipe.distill.mode = "sequence"
    assert distill.choose_mode(recipe, teacher, tokenizer=None) == ("sequence", None)


def test_a_teacher_path_that_does_not_exist_is_one_line_naming_the_key(tmp_path, monkeypatch):
    from seektune.models.load import ModelNotFound

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for missing in ("runs/customer-service", "./teacher", str(tmp_path / "nowhere" / "model")):
        recipe = Recipe.model_validate({"objective": "distill", "distill": {"teacher": missing}})
        with pytest.raises(ModelNotFound, match=r"^distill.teacher: .* does not exist") as caught:
            distill.Teacher.from_spec(recipe.distill)
        assert "\n" not in str(caught.value)
        if missing.startswith("runs/"):  # a run not trained yet says so
            assert "train the teacher first" in str(caught.value)
    hub = Recipe.model_validate({"objective": "distill", "distill": {"teacher": "deepseek-ai/DeepSeek-R1"}})
    assert distill.Teacher.from_spec(hub.distill).kind == "model"  # a Hub id goes on to the loader
