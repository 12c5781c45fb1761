"""LightningModule for the joint intent / churn sequence model."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection

from sellerlift.constants import HEADS
from sellerlift.models.metrics import binary_metrics
from sellerlift.models.networks import SequenceNet


class SequenceModule(L.LightningModule):
    def __init__(self, net: SequenceNet, lr: float = 2e-3, weight_decay: float = 1e-4,
                 loss_weights: tuple[float, float] = (1.0, 1.0), top_fraction: float = 0.2):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        # Plain floats (not OmegaConf lists) so checkpoints load with torch's weights_only=True.
        loss_weights = tuple(float(w) for w in loss_weights)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss = nn.BCEWithLogitsLoss(reduction="none")
        # Validation metrics during training; test numbers come from the exported model (stages.sequence).
        self.metrics = nn.ModuleDict({
            head: MetricCollection(binary_metrics(top_fraction), prefix=f"val/{head}_") for head in HEADS
        })

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(batch["event_type"], batch["numeric"], batch["length"], batch["aggregates"])

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits, _ = self(batch)
        per_head = self.loss(logits, batch["targets"]).mean(dim=0)
        w = torch.tensor(self.hparams.loss_weights, dtype=logits.dtype, device=logits.device)
        loss = (per_head * w).sum()
        bs = logits.shape[0]
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
            raise FloatingPointError(f"non-finite training loss ({loss.item()}) at step {self.global_step}; "
                                     "lower model.lr or check the input features")
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
