"""Plain ``nn.Module`` networks (no Lightning): what gets exported to ONNX.

A customer is a right-padded sequence of events plus a vector of aggregates.
Padding never reaches the representation: the GRU is read at the last real
step (a causal recurrence never sees the padding after it) and the Transformer
masks padded keys and reads a CLS token that is always present, so empty
histories give a well-defined output instead of NaN.
"""

from __future__ import annotations

import torch
from torch import nn

from sellerlift.features import AGGREGATES, EVENT_NUMERIC
from sellerlift.schema import EVENT_TYPES

AGE_FEATURE = EVENT_NUMERIC.index("log_age_days")


class EventEmbedding(nn.Module):
    """Event type embedding + projection of the per-event numeric features."""

    def __init__(self, d_model: int, n_types: int = len(EVENT_TYPES), n_numeric: int = len(EVENT_NUMERIC)):
        super().__init__()
        self.type_embedding = nn.Embedding(n_types + 1, d_model, padding_idx=0)
        self.numeric = nn.Linear(n_numeric, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, event_type: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return self.norm(self.type_embedding(event_type) + self.numeric(numeric))


class Time2Vec(nn.Module):
    """Learned periodic encoding of real event time (Kazemi et al. 2019), not of positions."""

    def __init__(self, d_model: int):
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.periodic = nn.Linear(1, d_model - 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.unsqueeze(-1)
        return torch.cat([self.linear(t), torch.sin(self.periodic(t))], dim=-1)


class GRUEncoder(nn.Module):
    def __init__(self, d_model: int = 64, hidden: int = 64, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.gru = nn.GRU(
            d_model, hidden, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, numeric: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        last = (length - 1).clamp(min=0)
        idx = last.view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        h = out.gather(1, idx).squeeze(1)
        return h * (length > 0).to(h.dtype).unsqueeze(-1)  # empty history -> zeros


class TransformerEncoder(nn.Module):
    def __init__(
        self, d_model: int = 64, n_heads: int = 4, num_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.1
    ):
        super().__init__()
        self.time = Time2Vec(d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out_dim = d_model

    def forward(self, x: torch.Tensor, numeric: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        x = x + self.time(numeric[..., AGE_FEATURE])
        positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        padded = positions >= length.unsqueeze(1)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        padded = torch.cat([torch.zeros_like(padded[:, :1]), padded], dim=1)
        # A float additive mask keeps the fused fast path (and its export quirks) out of the picture.
        bias = torch.zeros(padded.shape, dtype=x.dtype, device=x.device).masked_fill(padded, float("-inf"))
        return self.encoder(x, src_key_padding_mask=bias)[:, 0]


class SequenceNet(nn.Module):
    """Events + aggregates -> logits for (intent, churn) and a customer embedding.

    ``wide=True`` adds a linear path from the aggregates straight to the logits (wide & deep):
    the network then contains logistic regression on the aggregates as a special case.

    ``value=True`` adds the customer-value head: from the same trunk, the log of the expected spend and of
    the expected purchase days over the churn horizon, in units of ``value_scale`` (a buffer the training
    stage sets to the training customers' means, so the head starts near 0 and the losses are O(1)).
    :meth:`value` gives these log-means; the ONNX file exports ``value_scale * exp(log-mean)``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        d_model: int = 64,
        head_hidden: int = 64,
        dropout: float = 0.1,
        n_aggregates: int = len(AGGREGATES),
        wide: bool = False,
        value: bool = False,
    ):
        super().__init__()
        self.embed = EventEmbedding(d_model)
        self.encoder = encoder
        self.aggregates = nn.Sequential(nn.Linear(n_aggregates, head_hidden), nn.GELU())
        self.trunk = nn.Sequential(
            nn.Linear(encoder.out_dim + head_hidden, head_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.heads = nn.Linear(head_hidden, 2)
        self.wide = nn.Linear(n_aggregates, 2) if wide else None
        self.embedding_dim = head_hidden
        self.value_head = nn.Linear(head_hidden, 2) if value else None
        if value:
            nn.init.zeros_(self.value_head.bias)  # exp(0) x scale: the training mean, from the first step
            self.register_buffer("value_scale", torch.ones(2))

    @property
    def has_value(self) -> bool:
        return self.value_head is not None

    def forward(self, event_type, numeric, length, aggregates) -> tuple[torch.Tensor, torch.Tensor]:
        seq = self.encoder(self.embed(event_type, numeric), numeric, length)
        z = self.trunk(torch.cat([seq, self.aggregates(aggregates)], dim=-1))
        logits = self.heads(z)
        if self.wide is not None:
            logits = logits + self.wide(aggregates)
        return logits, z

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """[B, 2] log expected (spend, purchase days) in units of ``value_scale``, from the embedding ``z``."""
        if self.value_head is None:
            raise RuntimeError("this SequenceNet has no value head (value=false)")
        return self.value_head(z).clamp(-30.0, 30.0)

    def set_value_scale(self, means) -> None:
        """The units the value head predicts in: the training customers' mean spend and purchase days (> 0)."""
        t = torch.as_tensor([max(float(m), 1e-6) for m in means], dtype=self.value_scale.dtype)
        self.value_scale.copy_(t)


class ExportWrapper(nn.Module):
    """What the ONNX file computes: probabilities (not logits), the value head's means (if any), the embedding."""

    def __init__(self, net: SequenceNet):
        super().__init__()
        self.net = net

    def forward(self, event_type, numeric, length, aggregates):
        logits, embedding = self.net(event_type, numeric, length, aggregates)
        probs = torch.sigmoid(logits)
        if self.net.value_head is None:
            return probs[:, 0], probs[:, 1], embedding
        means = torch.exp(self.net.value(embedding)) * self.net.value_scale
        return probs[:, 0], probs[:, 1], means[:, 0], means[:, 1], embedding
