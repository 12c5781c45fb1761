"""The direct and enduring response to each discount level (CDEE-style), as one multi-task network.

``EnduringNet``: offer-time inputs -> a shared trunk -> per level ``k``:

* **conversion** in the offer's window (7 days), ``p_k``: a base logit plus non-negative (softplus)
  increments, monotone in the discount for every input and weight, like DIPN (a larger discount is
  only a better option for the customer this week);
* **later revenue**, ``L_k``: revenue (before discount) after the window, to day 90;
* **retention**, ``r_k``: a purchase after the window;
* **90-day revenue** ``W_k + L_k``, with the window's revenue ``W_k = p_k * v(x)``.

``structure="redemption"`` (the default): an offer changes the customer's future only through the coupon
being *redeemed*, by an amount that grows with its depth. So each level's enduring effect is the chance
of redeeming it times its depth times one per-customer effect:
``log L_k = l0(x) + gain * dose_k * g(x)``, ``logit r_k = r0(x) + gain * dose_k * h(x)`` with
``dose_k = p_k * d_k / d_max`` (0 at level 0). ``g`` and ``h`` are *unconstrained in sign*: the enduring
effect may fall with the discount (the reference-price effect: promotion-sensitive customers learn to
wait for one) or rise (habit). Two numbers per customer instead of one free value per level: the
90-day outcome is noisy (its sd is ~20 times the effects), and a free per-level head learns mostly
that noise (docs/customer_value.md measures both). ``gain`` only puts ``g`` on a scale the optimiser
reaches quickly (the dose is ~0.1).

``structure="free"`` is the unconstrained baseline: free per-level heads for conversion, later revenue
and retention (a smoothness penalty on their second differences over the levels).

``EnduringModule`` trains on logged offers with a full 90-day follow-up: each offer supervises every
output at the level it was offered (binary cross-entropy for conversion and retention, the Tweedie
deviance of power ``tweedie_power`` for the window's and the later revenue in units of ``revenue_scale``),
weighted by inverse propensity weights. Revenue's variance grows faster than its mean (a random number of
purchases times a random basket): under the Poisson deviance (power 1) the few largest customers' noise
steers the shared trunk, and the small enduring effects of everyone else are lost in it.
With ``n_later`` > 0 the trunk also reads the coupons sent *after* the offer within its follow-up (their
number and summed depth, :func:`sellerlift.offer_outcomes.later_coupons`) in training, and none at
prediction (``forward``, the ONNX graph): a logged offer's 90 days include the seller's later campaigns,
and the allocation needs the effect of this offer alone.
``EnduringEnsemble`` averages several members trained from different seeds: the enduring effect is a small
difference of noisy outcomes, and averaging removes much of each member's noise.
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
OUTPUTS = ("conversion", "retention", "revenue", "later_revenue")
STRUCTURES = ("redemption", "free")


class EnduringNet(nn.Module):
    def __init__(
        self,
        n_inputs: int,
        hidden=(64, 64),
        dropout: float = 0.1,
        structure: str = "redemption",
        gain: float = 10.0,
        levels=DISCOUNT_LEVELS,
        n_later: int = 0,
    ):
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"structure={structure!r}: expected one of {STRUCTURES}")
        if n_later < 0:
            raise ValueError(f"n_later={n_later}: expected the number of later-coupon inputs, >= 0")
        self.k, self.structure, self.gain, self.n_later = len(levels), structure, float(gain), int(n_later)
        self.trunk, width = _mlp(n_inputs + self.n_later, hidden, dropout)
        # redemption: conversion K + (l0, g, r0, h, v); free: conversion K + later K + retention K + v
        self.heads = nn.Linear(width, self.k + (5 if structure == "redemption" else 2 * self.k + 1))
        depth = torch.as_tensor(np.asarray(levels, dtype=np.float32) / float(max(levels)))
        self.register_buffer("depth", depth[None, :], persistent=False)
        with torch.no_grad():
            self.heads.bias.zero_()
            self.heads.bias[0] = -2.5  # conversion: a low base ...
            self.heads.bias[1 : self.k] = -2.0  # ... with small positive steps

    def parts(self, x: torch.Tensor, later_coupons: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Conversion and retention logits, log later revenue, log window revenue [B, K] each (revenue in
        units of the module's ``revenue_scale``). ``later_coupons`` [B, n_later]: the coupons sent after the
        offer within its follow-up (training); none when not given (prediction: the offer's effect alone)."""
        if self.n_later:
            if later_coupons is None:
                later_coupons = x.new_zeros(x.shape[0], self.n_later)
            x = torch.cat([x, later_coupons], dim=1)
        z = self.heads(self.trunk(x))
        k = self.k
        conv = z[:, :k]
        if self.structure == "redemption":
            conv = torch.cat([conv[:, :1], conv[:, :1] + torch.cumsum(F.softplus(conv[:, 1:]), dim=1)], dim=1)
            p = torch.sigmoid(conv).detach()  # the dose: conversion is learned from conversions alone
            dose = self.gain * p * self.depth
            l0, g, r0, h, v = (z[:, k + j : k + j + 1] for j in range(5))
            later, ret = l0 + dose * g, r0 + dose * h
        else:
            later, ret, v = z[:, k : 2 * k], z[:, 2 * k : 3 * k], z[:, 3 * k :]
            p = torch.sigmoid(conv).detach()
        window = torch.log(p.clamp_min(1e-6)) + v  # log(p_k * v(x))
        return {"conversion": conv, "retention": ret, "later": later, "window": window}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the ONNX file computes: conversion and retention probabilities, 90-day and later revenue."""
        z = self.parts(x)
        p = torch.sigmoid(z["conversion"])
        if self.structure == "redemption":  # a running max: exact no-op here, keeps monotone under approximate sigmoids
            out = [p[:, :1]]
            for j in range(1, p.shape[1]):
                out.append(torch.maximum(out[-1], p[:, j : j + 1]))
            p = torch.cat(out, dim=1)
        later = torch.exp(z["later"].clamp(max=20.0))
        return p, torch.sigmoid(z["retention"]), torch.exp(z["window"].clamp(max=20.0)) + later, later


class EnduringEnsemble(nn.Module):
    """The mean of the members' outputs (monotone outputs stay monotone: a mean of monotone curves)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [m(x) for m in self.members]
        return tuple(torch.stack(parts).mean(dim=0) for parts in zip(*outs))


class EnduringOffers(Dataset):
    """Logged offers with their outcomes: inputs [n, F], level [n], converted, retained, window revenue,
    later revenue, weight, and the coupons sent after each offer [n, n_later] (none by default)."""

    def __init__(self, x, level, converted, retained, window_revenue, later_revenue, weight=None, later_coupons=None):
        def t(a, dtype=np.float32):
            return torch.from_numpy(np.array(a, dtype=dtype))

        self.tensors = (
            t(x),
            t(level, np.int64),
            t(converted),
            t(retained),
            t(window_revenue),
            t(later_revenue),
            t(np.ones(len(level)) if weight is None else weight),
            t(np.zeros((len(level), 0)) if later_coupons is None else later_coupons),
        )

    def __len__(self) -> int:
        return len(self.tensors[1])

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        return tuple(a[idx] for a in self.tensors)


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


TASKS = ("conversion", "retention", "window", "later")


def tweedie_nll(log_mu: torch.Tensor, y: torch.Tensor, power: float) -> torch.Tensor:
    """The Tweedie negative log-likelihood of ``y`` (>= 0) at mean ``exp(log_mu)``, up to terms free of the mean
    (power 1: Poisson, as ``F.poisson_nll_loss``).

    Revenue is a random number of purchases times a random basket: its variance grows like ``mean ** p``, ``p``
    between 1 (Poisson) and 2. The gradient on ``log_mu`` is ``(mu - y) / mu ** (p - 1)``: a power above 1 stops the
    largest, noisiest customers from drowning the small enduring effects of the rest."""
    if power == 1.0:
        return F.poisson_nll_loss(log_mu, y, log_input=True, full=False, reduction="none")
    a, b = 1.0 - power, 2.0 - power
    return -y * torch.exp(a * log_mu) / a + torch.exp(b * log_mu) / b


class EnduringModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        smooth_weight: float = 1.0,
        loss_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
        revenue_scale: float = 100.0,
        tweedie_power: float = 1.0,
    ):
        super().__init__()
        loss_weights = tuple(float(w) for w in loss_weights)
        if lr <= 0 or smooth_weight < 0 or revenue_scale <= 0 or len(loss_weights) != len(TASKS):
            raise ValueError(
                f"lr ({lr}) and revenue_scale ({revenue_scale}) must be > 0, smooth_weight ({smooth_weight}) "
                f">= 0, loss_weights ({loss_weights}) one per task {TASKS}"
            )
        if not 1.0 <= tweedie_power < 2.0:
            raise ValueError(
                f"tweedie_power={tweedie_power}: expected 1 (Poisson) <= power < 2 (compound Poisson-gamma)"
            )
        self.save_hyperparameters(ignore=["net"])
        self.net = net

    def _loss(self, batch):
        x, level, conv_y, ret_y, window_y, later_y, w, coupons = batch
        z = self.net.parts(x, coupons if coupons.shape[1] else None)
        at = level.view(-1, 1)
        pick = {name: z[name].gather(1, at).squeeze(1) for name in TASKS}
        bce, scale = F.binary_cross_entropy_with_logits, self.hparams.revenue_scale

        def revenue(name, y):
            return tweedie_nll(pick[name], y / scale, self.hparams.tweedie_power)

        losses = [
            bce(pick["conversion"], conv_y, reduction="none"),
            bce(pick["retention"], ret_y, reduction="none"),
            revenue("window", window_y),
            revenue("later", later_y),
        ]
        wsum = w.sum().clamp_min(1e-12)
        per_task = [(loss * w).sum() / wsum for loss in losses]
        total = sum(lw * t for lw, t in zip(self.hparams.loss_weights, per_task))
        if self.hparams.smooth_weight > 0 and getattr(self.net, "structure", "") == "free":
            for h in (torch.sigmoid(z["retention"]), z["later"]):  # conversion's smoothness is DIPN's business
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
        for name, v in zip(TASKS, per_task):
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
def predict(net: nn.Module, x: np.ndarray, revenue_scale: float, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """{conversion, retention, revenue, later_revenue} [n, K] (revenues in currency: the net's output times
    ``revenue_scale``)."""
    net.eval()
    parts = {k: [] for k in OUTPUTS}
    for s in range(0, len(x), batch_size):
        out = net(torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size], dtype=np.float32)))
        for k, v in zip(OUTPUTS, out):
            parts[k].append(v.numpy().astype(np.float64))
    res = {k: np.concatenate(v) if v else np.zeros((0, K)) for k, v in parts.items()}
    for k in ("revenue", "later_revenue"):
        res[k] = res[k] * revenue_scale
    return res
