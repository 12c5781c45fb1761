"""DataModule: in-memory feature arrays -> batches of tensors.

Batches are sliced straight out of pre-built tensors (``__getitems__``) instead of
collating per-customer items, and each batch is trimmed to its longest sequence,
so the loader costs little next to the model step.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from sellerlift.features import SequenceFeatures


class CustomerTensors(Dataset):
    def __init__(self, feats: SequenceFeatures, targets: np.ndarray):
        self.event_type = torch.from_numpy(np.ascontiguousarray(feats.event_type))
        self.numeric = torch.from_numpy(np.ascontiguousarray(feats.numeric))
        self.length = torch.from_numpy(np.ascontiguousarray(feats.length))
        self.aggregates = torch.from_numpy(np.ascontiguousarray(feats.aggregates))
        self.targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.length)

    def __getitem__(self, i):  # only used by tools that index one item
        return self.__getitems__([i])

    def __getitems__(self, indices) -> dict:
        idx = torch.as_tensor(indices)
        length = self.length[idx]
        width = max(int(length.max()), 1)
        return {
            "event_type": self.event_type[idx, :width],
            "numeric": self.numeric[idx, :width],
            "length": length,
            "aggregates": self.aggregates[idx],
            "targets": self.targets[idx],
        }


class EpochShuffle(RandomSampler):
    """A permutation per epoch drawn from (seed, epoch) alone.

    Lightning calls ``set_epoch`` before every epoch, so a run resumed at epoch k
    sees the same order as an uninterrupted run would (a DataLoader generator
    would restart its sequence on resume). A RandomSampler, so that under DDP
    Lightning swaps it for a DistributedSampler (also seeded by epoch).
    """

    def __init__(self, n: int, seed: int = 0):
        super().__init__(range(n))
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        return iter(torch.randperm(self.n, generator=gen).tolist())


def _already_batched(batch):
    return batch


class SequenceDataModule(L.LightningDataModule):
    """Holds features, labels and the customer split; ``split`` codes: 0 train, 1 val, 2 test."""

    def __init__(
        self,
        feats: SequenceFeatures,
        targets: np.ndarray,
        split: np.ndarray,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.feats, self.targets, self.split = feats, targets, split
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.datasets: dict[str, CustomerTensors] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for code, name in enumerate(("train", "val", "test")):
            rows = np.flatnonzero(self.split == code)
            if len(rows) == 0:
                raise ValueError(f"the {name} split is empty; use more customers or other split fractions")
            if name != "test":  # test customers are scored on the exported model (stages.sequence)
                self.datasets[name] = CustomerTensors(self.feats.take(rows), self.targets[rows])

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        sampler = EpochShuffle(len(self.datasets[name]), self.seed) if shuffle else None
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size,
            sampler=sampler,
            generator=gen,
            collate_fn=_already_batched,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)
