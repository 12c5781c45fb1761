"""LightningModule for the joint intent / churn (and customer value) sequence model.

The customer-value head (``SequenceNet(value=True)``) is trained on the same customers as intent and
churn, with targets ``[spend, purchase days]`` over the churn horizon in columns 2 and 3 of the
targets. Spend is zero-inflated and heavy-tailed: it is fitted with the **Tweedie deviance on a log
link** (power ``tweedie_power``, default 1.5: a compound Poisson-Gamma, a point mass at 0 plus a
right-skewed positive part), whose minimiser is the *mean*, what a customer value is (MSE on
``log1p(spend)`` would fit a shrunken geometric mean instead and under-predict every heavy spender).
Purchase days are counts: Poisson deviance on a log link. Both in units of the net's ``value_scale``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection

from sellerlift.constants import HEADS
from sellerlift.models.metrics import binary_metrics
from sellerlift.models.networks import SequenceNet


class SequenceModule(L.LightningModule):
    def __init__(
        self,
        net: SequenceNet,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        loss_weights: tuple[float, float] = (1.0, 1.0),
        top_fraction: float = 0.2,
        value_weight: float = 0.5,
        tweedie_power: float = 1.5,
    ):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        if not 1.0 < float(tweedie_power) < 2.0:
            raise ValueError(
                f"model.module.tweedie_power must be in (1, 2) (compound Poisson-Gamma), got {tweedie_power}"
            )
        if float(value_weight) < 0:
            raise ValueError(f"model.module.value_weight must be >= 0, got {value_weight}")
        value_weight, tweedie_power = float(value_weight), float(tweedie_power)
        # Plain floats (not OmegaConf lists) so checkpoints load with torch's weights_only=True.
        loss_weights = tuple(float(w) for w in loss_weights)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss = nn.BCEWithLogitsLoss(reduction="none")
        # Validation metrics during training; test numbers come from the exported model (stages.sequence).
        self.metrics = nn.ModuleDict(
            {head: MetricCollection(binary_metrics(top_fraction), prefix=f"val/{head}_") for head in HEADS}
        )

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(batch["event_type"], batch["numeric"], batch["length"], batch["aggregates"])

    def value_loss(self, log_mean: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Tweedie deviance of spend + Poisson deviance of purchase days (log-link means, in value_scale units),
        averaged over the batch; each is 0 at a perfect prediction."""
        y = targets / self.net.value_scale
        s, c = log_mean[:, 0], log_mean[:, 1]
        p = self.hparams.tweedie_power
        ys = y[:, 0].clamp_min(0)
        # 2 * [y^(2-p)/((1-p)(2-p)) - y mu^(1-p)/(1-p) + mu^(2-p)/(2-p)], mu = exp(s)
        sat = torch.where(ys > 0, ys.clamp_min(1e-12) ** (2 - p) / ((1 - p) * (2 - p)), torch.zeros_like(ys))
        tweedie = 2 * (sat - ys * torch.exp((1 - p) * s) / (1 - p) + torch.exp((2 - p) * s) / (2 - p))
        yc = y[:, 1].clamp_min(0)
        poisson = 2 * (
            torch.where(yc > 0, yc * torch.log(yc.clamp_min(1e-12)), torch.zeros_like(yc)) - yc * c + torch.exp(c) - yc
        )
        return tweedie.mean() + poisson.mean()

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits, z = self(batch)
        targets = batch["targets"]
        per_head = self.loss(logits, targets[:, :2]).mean(dim=0)
        w = torch.tensor(self.hparams.loss_weights, dtype=logits.dtype, device=logits.device)
        loss = (per_head * w).sum()
        bs = logits.shape[0]
        if self.net.has_value:
            if targets.shape[1] < 4:
                raise ValueError(
                    "the value head needs targets [intent, churn, spend, purchase days]; got "
                    f"{targets.shape[1]} columns (stages.sequence builds them)"
                )
            log_mean = self.net.value(z)
            vloss = self.value_loss(log_mean, targets[:, 2:4])
            loss = loss + self.hparams.value_weight * vloss
            self.log(f"{stage}/value_loss", vloss, batch_size=bs, on_epoch=True, on_step=False, sync_dist=True)
        # sync_dist: under DDP every rank sees the same val/loss (early stopping, best checkpoint).
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, on_epoch=True, on_step=False, sync_dist=True)
        if stage == "val":
            probs = torch.sigmoid(logits.detach())
            for i, head in enumerate(HEADS):
                self.metrics[head].update(probs[:, i], batch["targets"][:, i].long())
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}; "
                "lower model.lr or check the input features"
            )
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_validation_epoch_end(self):
        for collection in self.metrics.values():
            self.log_dict(collection.compute(), prog_bar=True)
            collection.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The RNG state goes with the weights, so a resumed run draws the same dropout masks as an
        # uninterrupted one (torch tensors only: the checkpoint still loads with weights_only=True).
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("torch_rng_state")
        if state is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(state)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
