"""CellFM checkpoints: the MindSpore reader, the mapping onto Backbone, and offline downloads (issue 4)."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc.nn import MindSporeCheckpoint, read_mindspore_checkpoint
from hinge_sc.nn import _mindspore as ms_module

DATA_DIR = Path(os.environ.get("HINGE_SC_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
GENES = [f"G{i}" for i in range(21)]  # 22 rows → table padded to 24
_DTYPE_NAMES = {
    torch.float32: "Float32", torch.float16: "Float16", torch.bfloat16: "BFloat16", torch.int32: "Int32",
    torch.int64: "Int64", torch.float64: "Float64",
}  # fmt: skip


# ----------------------------------------------------------------- a MindSpore writer built from the schema
def _checkpoint_class(packed: bool = False):
    """Build the ``Checkpoint`` class of MindSpore's checkpoint.proto with protobuf (independent of the reader)."""
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="ms_checkpoint_test.proto", syntax="proto2")
    tensor = proto.message_type.add(name="TensorProto")
    dims = tensor.field.add(name="dims", number=1, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
    dims.options.packed = packed
    tensor.field.add(name="tensor_type", number=2, type=f.TYPE_STRING, label=f.LABEL_REQUIRED)
    tensor.field.add(name="tensor_content", number=3, type=f.TYPE_BYTES, label=f.LABEL_REQUIRED)
    ckpt = proto.message_type.add(name="Checkpoint")
    value = ckpt.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, type=f.TYPE_STRING, label=f.LABEL_REQUIRED)
    value.oneof_decl.add(name="value")
    value.field.add(
        name="tensor", number=2, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL, type_name=".TensorProto", oneof_index=0
    )
    ckpt.field.add(name="value", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED, type_name=".Checkpoint.Value")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("Checkpoint"))


def write_ckpt(path, entries, *, chunks=None, scalar_dims=(0,), packed=False):
    """Write ``(tag, tensor | str)`` entries as MindSpore does.

    One serialised Checkpoint per Value; a big tensor is split over ``chunks[tag]`` consecutive Values (same tag,
    dims and type); strings are numpy ``U`` (UTF-32).
    """
    message_class, chunks = _checkpoint_class(packed), chunks or {}
    with open(path, "wb") as f:
        for tag, value in entries:
            if isinstance(value, str):
                dims, kind, parts = [0], "str", [value.encode("utf-32-le")]
            else:
                kind = _DTYPE_NAMES[value.dtype]
                flat = value.detach().contiguous().reshape(-1)
                flat = flat.view(torch.int16) if value.dtype == torch.bfloat16 else flat
                dims = list(value.shape) if value.dim() else list(scalar_dims)
                parts = [p.tobytes() for p in np.array_split(flat.numpy(), chunks.get(tag, 1))]
            for part in parts:
                message = message_class()
                entry = message.value.add()
                entry.tag = tag
                entry.tensor.dims.extend(dims)
                entry.tensor.tensor_type = kind
                entry.tensor.tensor_content = part
                f.write(message.SerializeToString())
    return path


def cellfm_entries(backbone):
    """List the backbone's weights under CellFM's names and shapes (LayerNorm gamma/beta, (1, 1, d) vectors)."""
    out = []
    for name, t in backbone.state_dict().items():
        if ".post_norm" in name:
            name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        if name in ("cls_token", "zero_emb", "value_enc.mask_emb"):
            t = t.reshape(1, 1, -1)
        if name == "value_enc.value_enc.a":
            t = t.reshape(1, 1)
        out.append((name, t.clone()))
    return out


JUNK = [
    ("moment1.gene_emb", torch.randn(24, 16)), ("moment2.encoder.0.attn.q_proj.weight", torch.randn(16, 16)),
    ("adam_m.value_dec.w1.weight", torch.randn(16, 16)), ("global_step", torch.tensor(1234, dtype=torch.int32)),
    ("learning_rate", torch.tensor(1e-4)), ("scale_sense", torch.tensor(1024.0)),
    ("current_iterator_step", torch.tensor(7, dtype=torch.int64)), ("beta1_power", torch.tensor(0.9)),
    ("ST_emb", torch.randn(1, 2, 16)), ("ST_enc.w1.weight", torch.randn(8, 1)), ("cellwise_dec.map.weight",
    torch.randn(16, 16)), ("value_dec.zero_logit.0.weight", torch.randn(16, 16)), ("note", "trained on sc100m"),
]  # fmt: skip


@pytest.fixture
def reference():
    """Build a random backbone whose weights survive the Float16/BFloat16 round trip exactly."""
    bb = hs.Backbone.random(GENES, d_model=16, n_layers=3, n_heads=4, d_ffn=32, n_bins=8, seed=3)
    with torch.no_grad():
        bb.encoder[0].attn.q_proj.weight.copy_(bb.encoder[0].attn.q_proj.weight.half().float())
        bb.encoder[1].ffn.v_proj.weight.copy_(bb.encoder[1].ffn.v_proj.weight.bfloat16().float())
    return bb.eval()


def write_reference(path, bb, *, drop=(), replace=None, extra=()):
    entries = [(k, v) for k, v in cellfm_entries(bb) if k not in drop]
    entries = [(k, (replace or {}).get(k, v)) for k, v in entries]
    entries = [
        (
            k,
            v.half()
            if k == "encoder.0.attn.q_proj.weight"
            else v.bfloat16()
            if k == "encoder.1.ffn.v_proj.weight"
            else v,
        )
        for k, v in entries
    ]
    return write_ckpt(path, [*JUNK[:5], *entries, *JUNK[5:], *extra], chunks={"gene_emb": 3, "moment1.gene_emb": 2})


# ----------------------------------------------------------------- the reader
@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_reader_reproduces_every_tensor(tmp_path, monkeypatch, streaming, packed):
    if streaming:
        monkeypatch.setattr(ms_module, "_IN_MEMORY_MAX_BYTES", 100)  # instead of writing 2 GB
    torch.manual_seed(0)
    tensors = {
        "big": torch.randn(7, 5, 3),
        "half": torch.randn(4, 6).half(),
        "bf16": torch.randn(3, 9).bfloat16(),
        "ints": torch.arange(-5, 7, dtype=torch.int32).reshape(3, 4),
        "longs": torch.tensor([2**40, -3], dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "one": torch.ones(1, 1),
    }
    path = write_ckpt(tmp_path / "t.ckpt", [*tensors.items(), ("comment", "hello")], chunks={"big": 4}, packed=packed)
    with MindSporeCheckpoint(path) as ckpt:
        assert ckpt.streaming is streaming
        assert len(ckpt.entries["big"].chunks) == 4 and not ckpt.entries["comment"].is_tensor
    loaded = read_mindspore_checkpoint(path)
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape, name
        assert torch.equal(loaded[name], t), name


@pytest.mark.parametrize("scalar_dims", [(0,), ()])
def test_reader_scalars(tmp_path, scalar_dims):
    path = write_ckpt(tmp_path / "s.ckpt", [("step", torch.tensor(9, dtype=torch.int32))], scalar_dims=scalar_dims)
    step = read_mindspore_checkpoint(path)["step"]
    assert step.shape == () and step.item() == 9


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_reader_rejects_damaged_files(tmp_path, damage):
    good = write_ckpt(tmp_path / "g.ckpt", [("w", torch.randn(50, 4))]).read_bytes()
    bad = good[:-37] if damage == "truncate" else bytes(range(7, 250))
    (tmp_path / "b.ckpt").write_bytes(bad)
    with pytest.raises(ValueError, match=r"not a valid MindSpore checkpoint|truncated"):
        read_mindspore_checkpoint(tmp_path / "b.ckpt")


# ----------------------------------------------------------------- from_cellfm
@pytest.mark.parametrize("streaming", [False, True])
def test_from_cellfm_equals_weights_set_directly(tmp_path, monkeypatch, reference, streaming):
    if streaming:
        monkeypatch.setattr(ms_module, "_IN_MEMORY_MAX_BYTES", 1000)
    path = write_reference(tmp_path / "cellfm.ckpt", reference)
    assert MindSporeCheckpoint(path).streaming is streaming
    loaded = hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4).eval()
    c = loaded.config
    assert (c.d_model, c.n_layers, c.n_heads, c.d_ffn, c.n_bins) == (16, 3, 4, 32, 8)
    assert (c.name, c.mask_mechanism, c.norm_eps, c.negative_slope) == ("cellfm", "mask_emb", 1e-7, 0.2)
    expected = reference.state_dict()
    for name, t in loaded.state_dict().items():
        assert torch.equal(t, expected[name]), name
    ids, _ = loaded.token_ids(GENES[:12])
    torch.manual_seed(1)
    x, visible = torch.randn(3, 12), (torch.rand(3, 12) > 0.3).float()
    torch.testing.assert_close(loaded(x, ids, visible), reference(x, ids, visible), rtol=0, atol=0)


def test_from_cellfm_needs_n_heads_off_cellfm_width(tmp_path, reference):
    path = write_reference(tmp_path / "c.ckpt", reference)
    with pytest.raises(ValueError, match="`n_heads` is required"):
        hs.Backbone.from_cellfm(path, vocabulary=GENES)


def test_from_cellfm_vocabulary_mismatch(tmp_path, reference):
    path = write_reference(tmp_path / "c.ckpt", reference)
    with pytest.raises(ValueError, match=r"10 genes.* 16 rows.* 24 rows"):
        hs.Backbone.from_cellfm(path, vocabulary=GENES[:10], n_heads=4)
    with pytest.raises(ValueError, match="`vocabulary` is required"):
        hs.Backbone.from_cellfm(path, n_heads=4)


def test_from_cellfm_missing_tensor_is_named(tmp_path, reference):
    path = write_reference(tmp_path / "c.ckpt", reference, drop=("encoder.1.ffn.v_proj.weight",))
    with pytest.raises(ValueError, match=r"missing \(1\): encoder\.1\.ffn\.v_proj\.weight"):
        hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4)


def test_from_cellfm_never_transposes(tmp_path, reference):
    w = reference.encoder[1].ffn.u_proj.weight.detach()  # (32, 16)
    path = write_reference(tmp_path / "c.ckpt", reference, replace={"encoder.1.ffn.u_proj.weight": w.T.contiguous()})
    with pytest.raises(ValueError, match=r"mis-shaped \(1\): encoder\.1\.ffn\.u_proj\.weight: Float32 \(16, 32\)"):
        hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4)


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_from_cellfm_non_finite_tensor_is_named(tmp_path, reference, value):
    from hinge_sc import FileIntegrityError

    w = reference.encoder[1].ffn.u_proj.weight.detach().clone()
    w[3, 5] = value
    path = write_reference(tmp_path / "c.ckpt", reference, replace={"encoder.1.ffn.u_proj.weight": w})
    with pytest.raises(FileIntegrityError, match=r"c.ckpt holds NaN or infinite weights: tensor "
                                                 r"'encoder.1.ffn.u_proj.weight' has 1 of 512 values"):  # fmt: skip
        hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4)


def test_from_cellfm_unexpected_tensor(tmp_path, reference):
    path = write_reference(tmp_path / "c.ckpt", reference, extra=[("decoder.0.weight", torch.randn(4, 4))])
    with pytest.raises(ValueError, match=r"unexpected \(1\): decoder\.0\.weight.*`ignore="):
        hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4)
    loaded = hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4, ignore=("decoder.",))
    assert torch.equal(loaded.gene_emb, reference.gene_emb)


def test_from_cellfm_named_config_is_checked(tmp_path, reference):
    path = write_reference(tmp_path / "c.ckpt", reference)
    with pytest.raises(ValueError, match="`config` 'cellfm-80m' has d_model=1536"):
        hs.Backbone.from_cellfm(path, vocabulary=GENES, config="cellfm-80m")


@pytest.mark.parametrize(("csv", "ok"), [("expand_gene_info.csv", True), ("gene_info.csv", False)])
def test_from_cellfm_with_cellfm_vocabularies(tmp_path, csv, ok):
    vocab = DATA_DIR / "vocab" / "cellfm" / csv
    if not vocab.is_file():
        pytest.skip(f"{vocab} not found")
    bb = hs.Backbone.random([f"g{i}" for i in range(27_855)], d_model=8, n_layers=2, n_heads=2, n_bins=4)
    path = write_ckpt(tmp_path / "80m.ckpt", cellfm_entries(bb))
    if not ok:
        with pytest.raises(ValueError, match=r"24,078 genes.*24,080 rows.*27,856 rows"):
            hs.Backbone.from_cellfm(path, vocabulary=vocab, n_heads=2)
        return
    loaded = hs.Backbone.from_cellfm(path, vocabulary=vocab, n_heads=2)
    assert len(loaded.genes) == 27_855 and loaded.gene_emb.shape[0] == 27_856 == 8 * math.ceil(27_856 / 8)
    assert loaded.token_ids(["SEPT7", "cd3e"])[0].tolist() == [loaded.vocabulary.index["SEPTIN7"], loaded.vocabulary.index["CD3E"]]


# ----------------------------------------------------------------- downloads
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the pooch path, whatever is installed
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("offline_env", [False, True])
def test_from_pretrained_fails_fast_offline(tmp_path, monkeypatch, no_network, offline_env):
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"pass the local file: `hs\.Backbone\.from_cellfm\("):
        hs.Backbone.from_pretrained("cellfm-80m", vocabulary=GENES, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5


def test_from_pretrained_checks_arguments_before_downloading(tmp_path, no_network):
    with pytest.raises(ValueError, match=r"`vocabulary` is required.*expand_gene_info\.csv"):
        hs.Backbone.from_pretrained("cellfm-80m", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="`name` must be one of"):
        hs.Backbone.from_pretrained("cellfm-8b", vocabulary=GENES, cache_dir=tmp_path)


def test_download_uses_the_cache_offline(tmp_path, no_network):
    from hinge_sc.nn._cellfm import CELLFM_REVISION

    cached = tmp_path / CELLFM_REVISION / "base_weight.ckpt"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert hs.nn.download_cellfm("cellfm-800m", cache_dir=tmp_path) == cached


def test_forged_header_fails_before_allocating(tmp_path, reference, monkeypatch):
    """Issue 9: a 1 kB file whose headers declare d_model=65536 must not make the reader allocate gigabytes."""
    message_class = _checkpoint_class()
    path = tmp_path / "forged.ckpt"
    with open(path, "wb") as f:
        for tag, dims in (("gene_emb", [24, 65536]), ("encoder.0.attn.q_proj.weight", [65536, 65536])):
            message = message_class()
            entry = message.value.add()
            entry.tag, entry.tensor.tensor_type, entry.tensor.tensor_content = tag, "Float32", b"\0" * 256
            entry.tensor.dims.extend(dims)
            f.write(message.SerializeToString())
    assert path.stat().st_size < 1024

    def no_allocation(*args, **kwargs):
        raise AssertionError("the backbone was built before the sizes were checked")

    monkeypatch.setattr("hinge_sc.nn._cellfm._build", no_allocation)
    with pytest.raises(ValueError, match=r"'gene_emb' .* holds 256 bytes, but dims \[24, 65536\] .* forged"):
        hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4)


def test_header_consistent_but_missing_layers_fail_before_allocating(tmp_path, reference, monkeypatch):
    path = write_reference(tmp_path / "c.ckpt", reference, drop=("encoder.2.attn.q_proj.weight",))
    monkeypatch.setattr("hinge_sc.nn._cellfm._build", lambda *a, **k: pytest.fail("built before checking"))
    with pytest.raises(ValueError, match=r"missing \(1\): encoder\.2\.attn\.q_proj\.weight"):
        hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4)


def test_from_cellfm_backbone_saved_by_reference(tmp_path, reference):
    """A model on a CellFM checkpoint references the .ckpt (not copied) and reads it again on load (issue 11)."""
    import anndata as ad

    path = write_reference(tmp_path / "cellfm.ckpt", reference)
    backbone = hs.Backbone.from_cellfm(path, vocabulary=GENES, n_heads=4)
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.poisson(3.0, size=(16, 6)).astype(np.float32))
    adata.var_names = GENES[:6]
    adata.obsm["X_histology"] = rng.normal(size=(16, 4)).astype(np.float32)
    hs.HINGE.setup_anndata(adata)
    model = hs.HINGE(adata, backbone, diffusion_steps=2)
    model.save(tmp_path / "model")
    assert not (tmp_path / "model" / "backbone.pt").exists()
    loaded = hs.HINGE.load(tmp_path / "model", device="cpu")
    assert loaded.module.backbone.checksum() == backbone.checksum()
