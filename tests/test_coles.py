"""CoLES pre-training: sub-sequences are real slices, the loss ranks positives first, the encoder learns (item 6)."""

import numpy as np
import torch
from conftest import compose_config
from hydra.utils import instantiate

from sellerlift.models.coles import nt_xent, pretrain_encoder, random_slices


def test_random_slices_are_contiguous_pieces_of_each_history():
    torch.manual_seed(0)
    length = torch.tensor([5, 1, 3, 0])
    et = torch.zeros(4, 6, dtype=torch.long)
    for i, n in enumerate(length.tolist()):
        et[i, :n] = torch.arange(1, n + 1)
    num = et.unsqueeze(-1).float().repeat(1, 1, 3)
    s_et, s_num, s_len = random_slices(et, num, length, n_views=3, min_frac=0.4)
    assert s_et.shape[0] == 12 and (s_len >= 1).all()
    for r in range(12):
        n, full = int(s_len[r]), int(length[r % 4].clamp(min=1))
        piece = s_et[r, :n].tolist()
        assert n <= full and (s_et[r, n:] == 0).all()
        if length[r % 4] > 0:
            assert piece == list(range(piece[0], piece[0] + n)) and piece[-1] <= full  # a contiguous slice
        assert torch.equal(s_num[r, :n, 0].long(), s_et[r, :n])


def test_nt_xent_prefers_matching_views():
    z = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    aligned = nt_xent(torch.cat([z, z]), 8, 2, 0.1)
    shuffled = nt_xent(torch.cat([z, z[torch.randperm(8)]]), 8, 2, 0.1)
    assert aligned < shuffled


def test_pretraining_updates_the_encoder_in_place(tmp_path):
    from test_horizons import CUTOFF, synthetic_events

    from sellerlift.data.sources import Tables
    from sellerlift.pipeline import prepare

    cfg = compose_config(
        [
            "data.max_len=16",
            "data.horizons.churn_days=30",
            "pretrain=coles",
            "pretrain.trainer.max_epochs=2",
            "pretrain.batch_size=64",
            "model.module.net.d_model=8",
            "model.module.net.head_hidden=8",
            "model.module.net.encoder.hidden=8",
        ],
        root=tmp_path,
    )
    prep = prepare(Tables("synthetic", synthetic_events(200), CUTOFF + np.timedelta64(30, "D"), "fp"), cfg)
    net = instantiate(cfg.model.module).net
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    info = pretrain_encoder(net, prep, cfg.pretrain, seed=0)
    assert info["customers"] > 100 and info["epochs"] == 2 and np.isfinite(info["final_loss"])
    assert any(not torch.equal(before[k], v) for k, v in net.encoder.state_dict().items())
