"""CoLES-style self-supervised pre-training of the sequence encoder (Babaev et al. 2022, "CoLES").

Contrastive Learning for Event Sequences: two random contiguous sub-sequences of the same
customer's history are a positive pair, sub-sequences of other customers in the batch are
negatives; the encoder learns a representation of *who* the customer is from the order and
timing of their events, without labels. Pre-training reads every customer's history before
the cutoff (validation and test customers included: no label, no event at or after the
cutoff is seen), then the supervised stage fine-tunes the whole network as usual.

Configured by the ``pretrain`` group (``configs/pretrain/coles.yaml``, ``python train.py
pretrain=coles``): ``module`` is this LightningModule (``_target_``), ``trainer`` the
Lightning trainer settings of the pre-training run.
"""

from __future__ import annotations

import time

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from sellerlift.models.datamodule import CustomerTensors, EpochShuffle, _already_batched


def random_slices(
    event_type: torch.Tensor,
    numeric: torch.Tensor,
    length: torch.Tensor,
    n_views: int,
    min_frac: float,
    generator: torch.Generator | None = None,
):
    """``n_views`` random contiguous sub-sequences per customer (each at least ``min_frac`` of the history and
    at least one event), right-padded like the input: (event_type, numeric, length), rows view-major."""
    b, width = event_type.shape
    lengths = length.repeat(n_views).clamp(min=1)
    frac = min_frac + (1 - min_frac) * torch.rand(len(lengths), generator=generator)
    sub = torch.clamp((frac * lengths).round().long(), min=1)
    sub = torch.minimum(sub, lengths)
    start = (torch.rand(len(lengths), generator=generator) * (lengths - sub + 1)).floor().long()
    pos = torch.arange(width).unsqueeze(0)
    idx = (start.unsqueeze(1) + pos).clamp(max=width - 1)
    keep = pos < sub.unsqueeze(1)
    et = event_type.repeat(n_views, 1).gather(1, idx) * keep
    num = numeric.repeat(n_views, 1, 1).gather(1, idx.unsqueeze(-1).expand(-1, -1, numeric.shape[-1]))
    num = num * keep.unsqueeze(-1)
    w = max(int(sub.max()), 1)
    return et[:, :w], num[:, :w], sub


class CoLESModule(L.LightningModule):
    """Contrastive pre-training of ``embed`` + ``encoder`` (the modules of a :class:`SequenceNet`, updated in place).

    Loss: NT-Xent (InfoNCE) over the batch's views with ``temperature``; a small projection head
    (discarded after pre-training) maps the encoder output to the contrastive space.
    """

    def __init__(
        self,
        embed: nn.Module,
        encoder: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        temperature: float = 0.1,
        n_views: int = 2,
        min_frac: float = 0.3,
        projection_dim: int = 32,
    ):
        super().__init__()
        if n_views < 2:
            raise ValueError(f"pretrain.module.n_views must be >= 2 (positive pairs), got {n_views}")
        if not 0 < min_frac <= 1:
            raise ValueError(f"pretrain.module.min_frac must be in (0, 1], got {min_frac}")
        self.save_hyperparameters(ignore=["embed", "encoder"])
        self.embed, self.encoder = embed, encoder
        self.projection = nn.Sequential(
            nn.Linear(encoder.out_dim, encoder.out_dim), nn.GELU(), nn.Linear(encoder.out_dim, projection_dim)
        )

    def embeddings(self, event_type, numeric, length) -> torch.Tensor:
        return self.encoder(self.embed(event_type, numeric), numeric, length)

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        et, num, length = random_slices(batch["event_type"], batch["numeric"], batch["length"], hp.n_views, hp.min_frac)
        z = F.normalize(self.projection(self.embeddings(et, num, length)), dim=-1)
        loss = nt_xent(z, len(batch["length"]), hp.n_views, hp.temperature)
        self.log("pretrain/loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(z))
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def nt_xent(z: torch.Tensor, n: int, n_views: int, temperature: float) -> torch.Tensor:
    """InfoNCE over ``n * n_views`` unit vectors (view-major rows): each view's positives are its customer's
    other views, every other row is a negative."""
    sim = z @ z.T / temperature
    owner = torch.arange(n).repeat(n_views)
    self_mask = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positive = (owner.unsqueeze(0) == owner.unsqueeze(1)) & ~self_mask
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -(log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1)).mean()


def pretrain_encoder(net: nn.Module, prep, pcfg, seed: int = 0) -> dict:
    """Pre-train ``net.embed`` / ``net.encoder`` on every customer with at least ``pcfg.min_events`` events before
    the cutoff (``prep.feats``: train, validation and test customers' histories, no labels); returns a summary."""
    from hydra.utils import instantiate

    feats = prep.feats
    rows = np.flatnonzero(feats.length >= int(pcfg.get("min_events", 2)))
    if len(rows) < 2:
        return {"customers": int(len(rows)), "skipped": "fewer than 2 customers with enough events"}
    data = CustomerTensors(feats.take(rows), np.zeros((len(rows), 2), np.float32))
    loader = DataLoader(
        data,
        batch_size=int(pcfg.get("batch_size", 256)),
        sampler=EpochShuffle(len(rows), seed),
        collate_fn=_already_batched,
        drop_last=len(rows) > int(pcfg.get("batch_size", 256)),
    )
    module = instantiate(pcfg.module, embed=net.embed, encoder=net.encoder)
    trainer = instantiate(pcfg.trainer, _partial_=True)(logger=False, enable_checkpointing=False)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    trainer.fit(module, train_dataloaders=loader)
    loss = trainer.callback_metrics.get("pretrain/loss")
    return {
        "customers": int(len(rows)),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "final_loss": float(loss) if loss is not None else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
