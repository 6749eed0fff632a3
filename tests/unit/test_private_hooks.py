"""What seektune.train.private assumes about transformers' Trainer internals.

seektune touches one private part of transformers (``Trainer._get_train_sampler``, for a
length-grouped order seeded per epoch; see seektune/train/private.py). These tests fail on an
upgrade that moves it, so exact resume is never lost silently.
"""

from __future__ import annotations

import inspect

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from seektune.train.private import EpochSeededLengthSampler, EpochSeededSampling


def test_trainer_still_takes_its_train_sampler_from_get_train_sampler():
    assert "_get_train_sampler" in vars(Trainer), "transformers renamed Trainer._get_train_sampler"
    parameters = list(inspect.signature(Trainer._get_train_sampler).parameters)
    assert parameters[:2] == ["self", "train_dataset"]
    assert "_get_train_sampler" in inspect.getsource(Trainer.get_train_dataloader), \
        "Trainer.get_train_dataloader no longer asks _get_train_sampler for its sampler"


def test_length_grouped_sampler_keeps_what_we_read():
    sampler = LengthGroupedSampler(4, lengths=[5, 3, 9, 1, 7, 2, 8, 4])
    assert sampler.batch_size == 4 and list(sampler.lengths) == [5, 3, 9, 1, 7, 2, 8, 4]
    assert "generator" in inspect.signature(LengthGroupedSampler.__init__).parameters


def test_the_order_is_a_function_of_seed_and_epoch_alone():
    lengths = [5, 3, 9, 1, 7, 2, 8, 4, 6, 10, 11, 12]
    first = EpochSeededLengthSampler(4, lengths, seed=7)
    torch.manual_seed(0)
    epoch0 = list(first)
    torch.manual_seed(123)  # the global RNG (restored from a checkpoint mid-epoch) must not matter
    assert list(first) == epoch0
    first.set_epoch(1)
    epoch1 = list(first)
    assert sorted(epoch1) == sorted(epoch0) == list(range(len(lengths)))
    again = EpochSeededLengthSampler(4, lengths, seed=7)
    again.set_epoch(1)
    assert list(again) == epoch1
    assert epoch1 != epoch0  # another epoch, another order


def test_the_mixin_replaces_only_the_length_grouped_sampler():
    class Base:
        def __init__(self, sampler, seed=3, data_seed=None):
            self.sampler = sampler
            self.args = type("Args", (), {"seed": seed, "data_seed": data_seed})()

        def _get_train_sampler(self, train_dataset=None):
            return self.sampler

    class Trainerish(EpochSeededSampling, Base):
        pass

    grouped = LengthGroupedSampler(2, lengths=[3, 1, 2, 4])
    replaced = Trainerish(grouped, data_seed=11)._get_train_sampler()
    assert type(replaced) is EpochSeededLengthSampler and replaced.seed == 11
    assert replaced.batch_size == 2 and list(replaced.lengths) == [3, 1, 2, 4]
    plain = torch.utils.data.SequentialSampler(range(4))
    assert Trainerish(plain)._get_train_sampler() is plain
