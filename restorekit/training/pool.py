"""A pool of training pairs with the teacher's output cached: distillation that pays for the
teacher and the degradation pipeline once per sample instead of once per use.

On 2 CPU cores a distillation step of Real-ESRGAN Compact -> ``edge-s-x4`` (batch 8 x 64 px LR)
spends 33 % of its time degrading patches and 46 % running the teacher; the student's forward,
backward and Adam update are the other 21 %. With a pool refreshing one sample per step, a step
takes 0.35x the time (``benchmarks/distill_step_cost.py``). A :class:`PairPool` keeps ``size``
(LR, teacher target, HR) samples as uint8 tensors on the training device; each step replaces
``refresh`` of them with new samples (oldest first) and draws the batch at random from the pool,
so a sample is reused about ``batch_size / refresh`` times during its life in the pool.

Determinism: the pool is a pure function of ``(seed, step)``, so a resumed run rebuilds exactly
the pool an uninterrupted run had (nothing of it goes into the checkpoint):

- slot ``k`` starts with sample ``draw([seed, POOL_TAG, k])``;
- step ``t`` writes sample ``draw([seed, t, j])`` (``j < refresh``) into slot
  ``(t * refresh + j) % size``, then draws the global batch's slots from
  ``default_rng([seed, t, BATCH_TAG])``.

The teacher labels one sample at a time, so a target does not depend on which samples happened
to be labelled together. Under ``torchrun`` every rank keeps the whole pool (the same bytes) and
takes its slice of the global batch, as without a pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from restorekit.degrade.synthetic import to_uint8

POOL_TAG = 2**32 - 2  # seed-sequence word of the initial pool samples
BATCH_TAG = 2**32 - 3  # seed-sequence word of a step's draw of pool slots

#: draw(seed_words) -> (LR, HR), float32 HxWx3 in [0, 1]
Draw = Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]]


def source_of_slot(slot: int, step: int, size: int, refresh: int) -> tuple[int, int] | None:
    """Which write filled ``slot`` before step ``step`` ran: ``(t, j)``, or None (the initial sample)."""
    writes = step * refresh  # writes done by steps 0 .. step-1
    if writes <= slot:
        return None
    q = slot + size * ((writes - 1 - slot) // size)  # the last write index q < writes with q % size == slot
    return q // refresh, q % refresh


class PairPool:
    """``size`` cached (LR, target, HR) samples; see the module docstring for the contract.

    ``label(lr)`` maps one NCHW float LR tensor (batch 1, on ``device``) to the teacher's output
    in [0, 1]. ``keep_hr`` stores the clean HR too (needed when the target mixes in the HR).
    """

    def __init__(self, draw: Draw, label, seed: int, size: int, refresh: int, device, keep_hr: bool = False):
        if size < 1 or refresh < 1 or refresh > size:
            raise ValueError(f"pool size {size} and refresh {refresh}: need 1 <= refresh <= size")
        self.draw, self.label, self.seed = draw, label, int(seed)
        self.size, self.refresh, self.device, self.keep_hr = int(size), int(refresh), device, keep_hr
        self.lr = self.target = self.hr = None

    def _words(self, source: tuple[int, int] | None, slot: int) -> list[int]:
        """The seed words of the sample ``source`` wrote (the initial one of ``slot`` when None)."""
        return [self.seed, POOL_TAG, slot] if source is None else [self.seed, source[0], source[1]]

    def _put(self, slot: int, words: Sequence[int]) -> None:
        """Draw the sample of ``words``, label it, and store it in ``slot``."""
        import torch

        lr, hr = self.draw(words)
        lr8 = torch.from_numpy(to_uint8(lr)).permute(2, 0, 1).to(self.device)
        with torch.no_grad():
            target = self.label(lr8.unsqueeze(0).float() / 255.0)[0].clamp(0, 1)
        if self.lr is None:  # first sample: allocate the pool
            self.lr = torch.empty((self.size, *lr8.shape), dtype=torch.uint8, device=self.device)
            self.target = torch.empty((self.size, *target.shape), dtype=torch.uint8, device=self.device)
            if self.keep_hr:
                self.hr = torch.empty((self.size, *target.shape), dtype=torch.uint8, device=self.device)
        self.lr[slot] = lr8
        self.target[slot] = (target * 255.0).round().to(torch.uint8)
        if self.keep_hr:
            self.hr[slot] = torch.from_numpy(to_uint8(hr)).permute(2, 0, 1).to(self.device)

    def fill_words(self, step: int) -> list[list[int]]:
        """The seed words of each slot's sample as the pool is at the start of ``step``."""
        return [self._words(source_of_slot(slot, step, self.size, self.refresh), slot) for slot in range(self.size)]

    def step_words(self, step: int) -> list[list[int]]:
        """The seed words of the ``refresh`` samples step ``step`` writes."""
        return [[self.seed, int(step), j] for j in range(self.refresh)]

    def fill(self, step: int, progress: Callable[[int], None] | None = None) -> None:
        """(Re)build the pool as it is at the start of ``step`` (0 for a new run)."""
        for slot, words in enumerate(self.fill_words(step)):
            self._put(slot, words)
            if progress is not None:
                progress(slot + 1)

    def advance(self, step: int) -> None:
        """Step ``step``'s writes: ``refresh`` new samples replace the oldest ones."""
        for j, words in enumerate(self.step_words(step)):
            self._put((step * self.refresh + j) % self.size, words)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """Rank ``rank``'s slice of step ``step``'s global batch: float NCHW (LR, target, HR or None)."""
        slots = np.random.default_rng([self.seed, int(step), BATCH_TAG]).integers(self.size, size=batch_size)
        per = batch_size // world_size
        idx = slots[rank * per : (rank + 1) * per].tolist()
        lr = self.lr[idx].float() / 255.0
        target = self.target[idx].float() / 255.0
        hr = self.hr[idx].float() / 255.0 if self.keep_hr else None
        return lr, target, hr

    @property
    def nbytes(self) -> int:
        """Memory the pool holds."""
        return sum(t.numel() for t in (self.lr, self.target, self.hr) if t is not None)
