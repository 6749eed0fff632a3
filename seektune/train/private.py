"""The one place seektune reaches into a private part of transformers' Trainer.

transformers has no public way to give ``Trainer`` a sampler of one's own: ``get_train_dataloader``
takes it from the protected ``_get_train_sampler``. seektune needs a length-grouped order that
survives resuming mid-epoch (below), so :class:`EpochSeededSampling` overrides that one method and
nothing else. ``tests/unit/test_private_hooks.py`` checks the assumptions this module makes about
transformers (the method exists with this signature, ``get_train_dataloader`` uses it, and
``LengthGroupedSampler`` keeps its lengths and batch size where we read them), so an upgrade that
changes them fails there, loudly, rather than silently losing exact resume.
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped order drawn from ``seed + epoch`` instead of the global RNG.

    transformers builds its length-grouped sampler without a generator, so the order of
    an epoch depends on the global RNG when the epoch starts; a run resumed mid-epoch
    restores the RNG of the checkpoint, not of the epoch's start, and would see the
    remaining batches in another order. Seeding per epoch makes the order a function of
    the epoch alone, which exact resume needs.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class EpochSeededSampling:
    """Trainer mixin: the length-grouped sampler transformers would build, seeded per epoch."""

    def _get_train_sampler(self, *args, **kwargs):
        sampler = super()._get_train_sampler(*args, **kwargs)
        if type(sampler) is not LengthGroupedSampler:
            return sampler
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthSampler(sampler.batch_size, list(sampler.lengths), seed)
