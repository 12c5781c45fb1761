import json

import pytest
import torch

from sellerlift.export import INPUT_NAMES, ParityError, check_parity, example_inputs, export_sequence_onnx
from sellerlift.features import AGGREGATES, EVENT_NUMERIC, FeatureSpec
from sellerlift.models.networks import ExportWrapper, GRUEncoder, SequenceNet, TransformerEncoder
from sellerlift.runtime import session, verify_bundle, write_bundle

F, A = len(EVENT_NUMERIC), len(AGGREGATES)


@pytest.fixture(scope="module")
def gru_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = SequenceNet(GRUEncoder(16, 16), d_model=16, head_hidden=16).eval()
    path = export_sequence_onnx(net, tmp_path_factory.mktemp("onnx") / "sequence.onnx", F, A)
    return net, path


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_padding_does_not_leak_into_the_representation(encoder):
    torch.manual_seed(0)
    enc = GRUEncoder(16, 16) if encoder == "gru" else TransformerEncoder(16, 2, 1, 32, 0.0)
    net = ExportWrapper(SequenceNet(enc, d_model=16, head_hidden=16)).eval()
    ex = example_inputs(3, 5, F, A)
    args = [torch.from_numpy(ex[k]) for k in INPUT_NAMES]
    with torch.no_grad():
        base = net(*args)
        # garbage in the padded positions and extra padding columns change nothing
        et, num, length, agg = args
        mask = torch.arange(5)[None, :] < length[:, None]
        noisy_num = torch.where(mask[..., None], num, torch.randn_like(num) * 10)
        wider_et = torch.cat([et, torch.zeros(3, 4, dtype=et.dtype)], 1)
        wider_num = torch.cat([noisy_num, torch.randn(3, 4, F)], 1)
        other = net(wider_et, wider_num, length, agg)
    for a, b in zip(base, other):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_empty_history_gives_finite_outputs():
    net = ExportWrapper(SequenceNet(TransformerEncoder(16, 2, 1, 32), d_model=16, head_hidden=16)).eval()
    ex = example_inputs(2, 3, F, A)
    ex["length"][:] = 0
    with torch.no_grad():
        out = net(*(torch.from_numpy(ex[k]) for k in INPUT_NAMES))
    assert all(torch.isfinite(o).all() for o in out)


def test_onnx_matches_torch_on_many_shapes(gru_onnx):
    net, path = gru_onnx
    assert check_parity(net, path, F, A) <= 1e-5
    sess = session(path)
    ex = example_inputs(5, 200, F, A)  # longer than anything seen at export time
    out = sess.run(None, ex)
    assert out[0].shape == (5,) and out[2].shape[0] == 5


def test_parity_failure_is_loud(gru_onnx, tmp_path):
    net, path = gru_onnx
    changed = SequenceNet(GRUEncoder(16, 16), d_model=16, head_hidden=16).eval()  # other weights
    with pytest.raises(ParityError, match="parity failed"):
        check_parity(changed, path, F, A)


def test_bundle_manifest_and_tamper_detection(gru_onnx, tmp_path):
    _, path = gru_onnx
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    onnx_copy = bundle / "sequence.onnx"
    onnx_copy.write_bytes(path.read_bytes())
    write_bundle(bundle, {"sequence": onnx_copy}, FeatureSpec(max_len=8), {"test/intent_auroc": 0.7})
    manifest = verify_bundle(bundle)
    assert manifest["files"]["sequence"]["sha256"] and "feature_spec" not in manifest  # the spec's only copy: its file
    assert json.loads((bundle / "feature_spec.json").read_text())["max_len"] == 8
    data = bytearray(onnx_copy.read_bytes())
    data[-1] ^= 0xFF
    onnx_copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        verify_bundle(bundle)


def test_signed_bundle_refuses_a_rewritten_hash_and_unsigned_bundles(gru_onnx, tmp_path, monkeypatch):
    """D6: with SELLERLIFT_BUNDLE_KEY set, a changed .onnx whose manifest hash was rewritten is refused."""
    import hashlib

    from sellerlift.runtime.bundle import SIGNATURE, BundleError, read_verified

    _, path = gru_onnx
    monkeypatch.setenv("SELLERLIFT_BUNDLE_KEY", "k" * 32)
    signed = tmp_path / "signed"
    signed.mkdir()
    (signed / "sequence.onnx").write_bytes(path.read_bytes())
    write_bundle(signed, {"sequence": signed / "sequence.onnx"}, FeatureSpec(max_len=8), {})
    assert (signed / SIGNATURE).is_file() and read_verified(signed).signed
    # the attacker's move: change the model, then rewrite its sha256 in the manifest
    data = bytearray((signed / "sequence.onnx").read_bytes())
    data[-1] ^= 0xFF
    (signed / "sequence.onnx").write_bytes(bytes(data))
    manifest = json.loads((signed / "manifest.json").read_text())
    manifest["files"]["sequence"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (signed / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(BundleError, match="signature does not match"):
        read_verified(signed)
    with pytest.raises(BundleError, match="signature does not match"):  # another key is no better
        read_verified(signed, key=b"other")
    (signed / SIGNATURE).unlink()
    with pytest.raises(BundleError, match="unsigned bundle"):
        read_verified(signed)
    monkeypatch.delenv("SELLERLIFT_BUNDLE_KEY")
    assert not read_verified(signed).signed  # without a key only the hashes are checked (as documented)


def test_second_gru_export_in_one_process_keeps_dynamic_length(tmp_path):
    # torch 2.13 freezes the GRU's sequence length on a second in-process export; export.py works around it.
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = SequenceNet(GRUEncoder(16, 16), d_model=16, head_hidden=16).eval()
        path = export_sequence_onnx(net, tmp_path / f"gru{seed}.onnx", F, A)
        assert check_parity(net, path, F, A) <= 1e-5
