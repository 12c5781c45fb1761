"""Deep isotonic promotion network (DIPN) and its unconstrained S-learner baseline.

``DIPNNet``: features -> MLP -> one base logit (level 0) and K-1 increments made
non-negative by softplus; the logit of level k is base + sum of the first k
increments, so the response curve sigmoid(logit) is non-decreasing in the
discount for every input and every weight (adding a non-negative float never
decreases a sum, and sigmoid is monotone; a running max over the levels keeps
this exact in runtimes whose sigmoid is only approximately monotone). ``SLearnerNet`` is a plain MLP with
the discount as an input, evaluated at every level: nothing keeps it monotone.

``PromotionModule`` trains either on logged offers: binary cross-entropy of the
logit at the offered level, weighted by inverse propensity weights (all 1 when
IPW is off), plus ``smooth_weight`` x mean squared second difference of the
probability curve. All three, and the Trainer with its early-stopping and
:class:`KeepBest` callbacks that :func:`fit` runs, are built from the ``promotion``
config group (``sellerlift.stages.promotion_models``).
"""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import BinaryAUROC, BinaryCalibrationError

from sellerlift.schema import DISCOUNT_LEVELS

N_LEVELS = len(DISCOUNT_LEVELS)


def _mlp(n_in: int, hidden, dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, int(h)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = int(h)
    return nn.Sequential(*layers), n_in


class DIPNNet(nn.Module):
    """Monotone by construction: logit_k = base + sum_{j<=k} softplus(z_j)."""

    def __init__(self, n_inputs: int, hidden=(64, 64), dropout: float = 0.1, n_levels: int = N_LEVELS):
        super().__init__()
        self.trunk, width = _mlp(n_inputs, hidden, dropout)
        self.head = nn.Linear(width, n_levels)
        with torch.no_grad():  # start near a flat, low curve with small positive steps
            self.head.bias.zero_()
            self.head.bias[0] = -2.5
            self.head.bias[1:] = -2.0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.trunk(x))
        base, inc = z[:, :1], F.softplus(z[:, 1:])
        return torch.cat([base, base + torch.cumsum(inc, dim=1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.logits(x))
        # A running max over the levels: an exact no-op in PyTorch (the logits are already
        # non-decreasing), but it keeps the curve monotone in any runtime whose sigmoid is an
        # approximation that can step down by an ulp (onnxruntime's vectorised one does).
        out = [p[:, :1]]
        for k in range(1, p.shape[1]):
            out.append(torch.maximum(out[-1], p[:, k : k + 1]))
        return torch.cat(out, dim=1)


class SLearnerNet(nn.Module):
    """Unconstrained baseline: MLP([features, discount / 30]) -> logit, evaluated at every level."""

    def __init__(self, n_inputs: int, hidden=(64, 64), dropout: float = 0.1, levels=DISCOUNT_LEVELS):
        super().__init__()
        self.trunk, width = _mlp(n_inputs + 1, hidden, dropout)
        self.head = nn.Linear(width, 1)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32) / max(levels))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[0], self.levels.shape[0]
        xx = torch.cat([x.unsqueeze(1).expand(b, k, x.shape[1]), self.levels.view(1, k, 1).expand(b, k, 1)], dim=2)
        return self.head(self.trunk(xx.reshape(b * k, -1))).view(b, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


# ------------------------------------------------------------------ data
class OfferTensors(Dataset):
    """Logged offers: inputs [n, F], level index [n], converted [n], weight [n]; sliced per batch."""

    def __init__(self, x: np.ndarray, level: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
        # np.array copies: pandas columns may be read-only views
        self.x = torch.from_numpy(np.array(x, dtype=np.float32))
        self.level = torch.from_numpy(np.array(level, dtype=np.int64))
        self.y = torch.from_numpy(np.array(y, dtype=np.float32))
        self.w = torch.from_numpy(np.array(np.ones(len(y)) if w is None else w, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.__getitems__([i])

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        return self.x[idx], self.level[idx], self.y[idx], self.w[idx]


def _already_batched(batch):
    return batch


def offer_loader(data: OfferTensors, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=_already_batched)


# ------------------------------------------------------------------ module
class PromotionModule(L.LightningModule):
    def __init__(self, net: nn.Module, lr: float = 3e-3, weight_decay: float = 1e-4, smooth_weight: float = 1.0):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if smooth_weight < 0:
            raise ValueError(f"smooth_weight must be >= 0, got {smooth_weight}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.val_auroc, self.val_ece = BinaryAUROC(), BinaryCalibrationError(n_bins=15, norm="l1")

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch):
        x, level, y, w = batch
        logits = self.net.logits(x)
        chosen = logits.gather(1, level.view(-1, 1)).squeeze(1)
        bce = (F.binary_cross_entropy_with_logits(chosen, y, reduction="none") * w).sum() / w.sum().clamp_min(1e-12)
        smooth = torch.zeros((), device=x.device)
        if self.hparams.smooth_weight > 0:
            p = torch.sigmoid(logits)
            smooth = ((p[:, 2:] - 2 * p[:, 1:-1] + p[:, :-2]) ** 2).mean()
        return bce, smooth, chosen

    def training_step(self, batch, batch_idx):
        bce, smooth, _ = self._loss(batch)
        loss = bce + self.hparams.smooth_weight * smooth
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite DIPN training loss ({loss.item()}) at step {self.global_step}")
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[2]))
        return loss

    def validation_step(self, batch, batch_idx):
        bce, smooth, chosen = self._loss(batch)
        n = len(batch[2])
        self.log(
            "val/loss",
            bce + self.hparams.smooth_weight * smooth,
            on_step=False,
            on_epoch=True,
            batch_size=n,
            prog_bar=True,
        )
        p = torch.sigmoid(chosen)
        self.val_auroc.update(p, batch[2].long())
        self.val_ece.update(p, batch[2].long())

    def on_validation_epoch_end(self):
        self.log("val/auroc", self.val_auroc.compute())
        self.log("val/ece", self.val_ece.compute())
        self.val_auroc.reset()
        self.val_ece.reset()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class KeepBest(L.Callback):
    """Keeps the state dict of the epoch with the lowest ``monitor`` in memory (no checkpoint files)."""

    def __init__(self, monitor: str = "val/loss"):
        self.monitor, self.best, self.state = monitor, float("inf"), None
        self.history: list[float] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        v = trainer.callback_metrics.get(self.monitor)
        if v is None:
            return
        v = float(v)
        self.history.append(v)
        if v < self.best:
            self.best, self.state = v, copy.deepcopy(pl_module.state_dict())


def fit(
    trainer: L.Trainer,
    module: PromotionModule,
    train: OfferTensors,
    val: OfferTensors,
    *,
    batch_size: int = 1024,
    seed: int = 0,
) -> dict:
    """Fit ``module`` with ``trainer`` (built from ``promotion.dipn.trainer`` + ``callbacks``); then load the
    weights its :class:`KeepBest` callback kept, if it has one. Returns a small report."""
    keep = next((c for c in trainer.callbacks if isinstance(c, KeepBest)), None)
    torch.manual_seed(seed)
    trainer.fit(module, offer_loader(train, batch_size, True, seed), offer_loader(val, 4096, False))
    if keep is not None and keep.state is not None:
        module.load_state_dict(keep.state)
    module.eval()
    return {
        "epochs": trainer.current_epoch,
        "best_val_loss": keep.best if keep else float("nan"),
        "val_loss_history": keep.history if keep else [],
    }


@torch.no_grad()
def predict_curves(net: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    net.eval()
    out = [
        net(torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size], dtype=np.float32))).numpy()
        for s in range(0, len(x), batch_size)
    ]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, N_LEVELS))
