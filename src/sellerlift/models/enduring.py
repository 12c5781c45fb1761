"""The direct and enduring response to each discount level (CDEE-style), as one multi-task network.

``EnduringNet``: offer-time inputs -> a shared trunk -> three heads, each one value per level:

* **conversion in the offer's window** (7 days): a base logit plus non-negative (softplus)
  increments, so it is monotone in the discount for every input and weight, like DIPN. A discount
  is only an option for the customer: a larger one never lowers the chance to buy this week.
* **retention** (a purchase after the window, days 8-90) and **90-day revenue** (before discount,
  a log-link mean): *unconstrained*. Their enduring part can fall with the discount: the
  reference-price effect (promotion-sensitive customers who learn to wait for one), or a large
  discount that wins a purchase the customer would have made later anyway. A smoothness penalty
  on second differences over the levels keeps them from zig-zagging.

``EnduringModule`` trains on logged offers with a full 90-day follow-up: each offer supervises the
three heads at the level it was offered (binary cross-entropy, binary cross-entropy, Poisson
deviance on revenue scaled by ``revenue_scale``), weighted by inverse propensity weights.
``EnduringNet(monotone=False)`` is the unconstrained baseline: the same network with a free
conversion head.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from sellerlift.models.dipn import _mlp
from sellerlift.schema import DISCOUNT_LEVELS

K = len(DISCOUNT_LEVELS)
OUTPUTS = ("conversion", "retention", "revenue")


class EnduringNet(nn.Module):
    def __init__(self, n_inputs: int, hidden=(64, 64), dropout: float = 0.1, n_levels: int = K, monotone: bool = True):
        super().__init__()
        self.trunk, width = _mlp(n_inputs, hidden, dropout)
        self.heads = nn.Linear(width, 3 * n_levels)
        self.k, self.monotone = n_levels, bool(monotone)
        with torch.no_grad():
            self.heads.bias.zero_()
            self.heads.bias[0] = -2.5  # conversion: a low base ...
            self.heads.bias[1:n_levels] = -2.0  # ... with small positive steps

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(conversion logits, retention logits, log revenue) [B, K] each."""
        z = self.heads(self.trunk(x))
        conv, ret, rev = z[:, : self.k], z[:, self.k : 2 * self.k], z[:, 2 * self.k :]
        if self.monotone:
            base, inc = conv[:, :1], F.softplus(conv[:, 1:])
            conv = torch.cat([base, base + torch.cumsum(inc, dim=1)], dim=1)
        return conv, ret, rev

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the ONNX file computes: conversion and retention probabilities, expected revenue (scaled)."""
        conv, ret, rev = self.parts(x)
        p = torch.sigmoid(conv)
        if self.monotone:  # a running max: exact no-op here, keeps monotone under approximate sigmoids
            out = [p[:, :1]]
            for j in range(1, p.shape[1]):
                out.append(torch.maximum(out[-1], p[:, j : j + 1]))
            p = torch.cat(out, dim=1)
        return p, torch.sigmoid(ret), torch.exp(rev.clamp(max=20.0))


class EnduringOffers(Dataset):
    """Logged offers with their outcomes: inputs [n, F], level [n], converted, retained, revenue, weight."""

    def __init__(self, x, level, converted, retained, revenue, weight=None):
        def t(a, dtype=np.float32):
            return torch.from_numpy(np.array(a, dtype=dtype))

        self.x, self.level = t(x), t(level, np.int64)
        self.converted, self.retained, self.revenue = t(converted), t(retained), t(revenue)
        self.w = t(np.ones(len(level)) if weight is None else weight)

    def __len__(self) -> int:
        return len(self.level)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        return (self.x[idx], self.level[idx], self.converted[idx], self.retained[idx], self.revenue[idx], self.w[idx])


def _already_batched(batch):
    return batch


def loader(data: EnduringOffers, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=_already_batched,
    )


class EnduringModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        smooth_weight: float = 1.0,
        loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        revenue_scale: float = 100.0,
    ):
        super().__init__()
        if lr <= 0 or smooth_weight < 0 or revenue_scale <= 0:
            raise ValueError(
                f"lr ({lr}) and revenue_scale ({revenue_scale}) must be > 0, smooth_weight ({smooth_weight}) >= 0"
            )
        loss_weights = tuple(float(w) for w in loss_weights)
        self.save_hyperparameters(ignore=["net"])
        self.net = net

    def _loss(self, batch):
        x, level, conv_y, ret_y, rev_y, w = batch
        conv, ret, rev = self.net.parts(x)
        at = level.view(-1, 1)
        pick = [h.gather(1, at).squeeze(1) for h in (conv, ret, rev)]
        bce = F.binary_cross_entropy_with_logits
        losses = [
            bce(pick[0], conv_y, reduction="none"),
            bce(pick[1], ret_y, reduction="none"),
            F.poisson_nll_loss(
                pick[2], rev_y / self.hparams.revenue_scale, log_input=True, full=False, reduction="none"
            ),
        ]
        wsum = w.sum().clamp_min(1e-12)
        per_task = [(loss * w).sum() / wsum for loss in losses]
        total = sum(lw * t for lw, t in zip(self.hparams.loss_weights, per_task))
        if self.hparams.smooth_weight > 0:
            for h in (torch.sigmoid(ret), rev):  # conversion's smoothness is DIPN's business
                total = total + self.hparams.smooth_weight * ((h[:, 2:] - 2 * h[:, 1:-1] + h[:, :-2]) ** 2).mean()
        return total, per_task

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite enduring-model loss ({loss.item()}) at step {self.global_step}")
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[1]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss, per_task = self._loss(batch)
        n = len(batch[1])
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=n, prog_bar=True)
        for name, v in zip(OUTPUTS, per_task):
            self.log(f"val/{name}_loss", v, on_step=False, on_epoch=True, batch_size=n)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def fit(
    trainer: L.Trainer,
    module: EnduringModule,
    train: EnduringOffers,
    val: EnduringOffers,
    *,
    batch_size: int = 2048,
    seed: int = 0,
) -> dict:
    from sellerlift.models.dipn import KeepBest

    keep = next((c for c in trainer.callbacks if isinstance(c, KeepBest)), None)
    torch.manual_seed(seed)
    trainer.fit(module, loader(train, batch_size, True, seed), loader(val, 4096, False))
    if keep is not None and keep.state is not None:
        module.load_state_dict(keep.state)
    module.eval()
    return {"epochs": trainer.current_epoch, "val_loss_history": keep.history if keep else []}


@torch.no_grad()
def predict(net: EnduringNet, x: np.ndarray, revenue_scale: float, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """{conversion, retention, revenue} [n, K] (revenue in currency: the net's output times ``revenue_scale``)."""
    net.eval()
    parts = {k: [] for k in OUTPUTS}
    for s in range(0, len(x), batch_size):
        out = net(torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size], dtype=np.float32)))
        for k, v in zip(OUTPUTS, out):
            parts[k].append(v.numpy().astype(np.float64))
    res = {k: np.concatenate(v) if v else np.zeros((0, K)) for k, v in parts.items()}
    res["revenue"] = res["revenue"] * revenue_scale
    return res
