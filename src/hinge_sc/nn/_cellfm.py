"""CellFM's MindSpore checkpoints → :class:`~hinge_sc.nn.CellFMBackbone` (docs/method.md §8)."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ._backbone_io import check_finite_tensor, mismatch_report, record_source
from ._config import CELLFM_SHAPES, BackboneConfig
from ._mindspore import MindSporeCheckpoint
from ._provenance import CheckpointRecord

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._backbone import Backbone

logger = logging.getLogger(__name__)

#: Where the CellFM authors publish the checkpoints (model card linked from github.com/biomed-AI/CellFM-torch).
CELLFM_REPO = "ShangguanNingyuan/CellFM"
#: Hugging Face commit holding both files (Dec 2024).
CELLFM_REVISION = "69361b50d1814ade0e3749c9d8eb829590c2ce3c"
#: The published checkpoints, their LFS SHA-256 and the vocabulary (``csv/`` of biomed-AI/CellFM) each needs.
CELLFM_CHECKPOINTS = MappingProxyType(
    {
        "cellfm-80m": MappingProxyType(
            {
                "filename": "CellFM_80M_weight.ckpt",
                "size": "1.03 GB",
                "sha256": "2348440a17a348ee6cfb89dc6aae9b725d2c0eb4d226ee266b278312278653ea",
                "vocabulary": "expand_gene_info.csv",
            }
        ),
        "cellfm-800m": MappingProxyType(
            {
                "filename": "base_weight.ckpt",
                "size": "9.66 GB",
                "sha256": "a3ab63e580ebf779edd5d13b4b9c7cfc5795c24495f61c45e2e9f0f1eb7bfc60",
                "vocabulary": "gene_info.csv",
            }
        ),
    }
)
#: Gene-table rows → (vocabulary file, number of genes) of the published models.
_KNOWN_VOCABULARIES = {24_080: ("gene_info.csv", 24_078), 27_856: ("expand_gene_info.csv", 27_855)}
_VOCABULARY_HELP = (
    "Pass the vocabulary the checkpoint was trained with: CellFM's gene_info.csv (24,078 genes, 24,080 rows; "
    "CellFM-800M) or expand_gene_info.csv (27,855 genes, 27,856 rows; CellFM-80M), from the `csv/` folder of "
    "https://github.com/biomed-AI/CellFM."
)
#: Optimiser state and training bookkeeping.
BOOKKEEPING_PREFIXES = (
    "adam_", "moment", "accu_grads", "learning_rate", "global_step", "scale_sense", "current_iterator_step",
    "last_overflow_iterator_step", "beta1_power", "beta2_power", "epoch_num", "step_num", "loss_scale",
)  # fmt: skip
#: CellFM parameters outside the backbone: the 80M model's total-count tokens, the cell-wise decoder and
#: zero-probability heads, and the optional classification head.
UNUSED_CELLFM_PREFIXES = (
    "ST_",
    "cellwise_dec.",
    "value_dec.zero_logit.",
    "cluster_emb",
    "classifier.",
    "proj.",
    "query.",
)
_FLOAT_TYPES = ("Float16", "BFloat16", "Float32", "Float64")


def backbone_name(tag: str) -> str:
    """Map a CellFM parameter name to its Backbone name (LayerNorm ``gamma``/``beta`` → ``weight``/``bias``)."""
    if tag.endswith(".gamma"):
        return tag[: -len("gamma")] + "weight"
    if tag.endswith(".beta"):
        return tag[: -len("beta")] + "bias"
    return tag


def read_vocabulary(vocabulary: str | Path | Sequence[str] | None) -> list[str]:
    """Read the gene symbols of a vocabulary: a CellFM CSV (first column) or a list of symbols."""
    if vocabulary is None:
        raise ValueError(
            f"`vocabulary` is required: the gene table's rows are only meaningful with it. {_VOCABULARY_HELP}"
        )
    if isinstance(vocabulary, str | Path):
        path = Path(vocabulary)
        if not path.is_file():
            raise FileNotFoundError(f"No vocabulary file at `vocabulary` {path}. {_VOCABULARY_HELP}")
        try:
            table = pd.read_csv(path, usecols=[0], dtype=str, na_filter=False, encoding="utf-8")  # "NA" stays a gene
        except UnicodeDecodeError as err:
            raise ValueError(
                f"The `vocabulary` file {path} is not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at "
                f"position {err.start}); expected a UTF-8 CSV of gene symbols, first column. Convert it, e.g. "
                f"`iconv -f latin1 -t utf-8 {path.name} > vocabulary.csv`, or pass the list of symbols. "
                f"{_VOCABULARY_HELP}"
            ) from None
        return table.iloc[:, 0].str.strip().tolist()
    return [str(g) for g in vocabulary]


def _check_rows(n_genes: int, rows: int) -> None:
    needed = 8 * math.ceil((n_genes + 1) / 8)
    known = _KNOWN_VOCABULARIES.get(rows)
    if needed != rows or (known is not None and n_genes != known[1]):
        hint = f" ({known[0]} has {known[1]:,} genes)" if known else ""
        raise ValueError(
            f"`vocabulary` has {n_genes:,} genes, which needs a gene table of {needed:,} rows, but the "
            f"checkpoint's `gene_emb` has {rows:,} rows{hint}. {_VOCABULARY_HELP}"
        )


def _classify(ckpt: MindSporeCheckpoint, ignore: Sequence[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Sort the checkpoint tags: backbone name → tag, and the ignored tags by reason."""
    params: dict[str, str] = {}
    ignored: dict[str, list[str]] = {"non-tensor": [], "optimiser": [], "CellFM heads": [], "`ignore`": []}
    for tag, entry in ckpt.entries.items():
        if not entry.is_tensor:
            ignored["non-tensor"].append(tag)
        elif tag.startswith(BOOKKEEPING_PREFIXES):
            ignored["optimiser"].append(tag)
        elif tag.startswith(UNUSED_CELLFM_PREFIXES):
            ignored["CellFM heads"].append(tag)
        elif ignore and tag.startswith(tuple(ignore)):
            ignored["`ignore`"].append(tag)
        else:
            name = backbone_name(tag)
            if name in params:
                raise ValueError(f"{ckpt.path} holds both {params[name]!r} and {tag!r}, which are one parameter.")
            params[name] = tag
    return params, ignored


def _infer_config(
    shapes: Mapping[str, tuple[int, ...]], path: Path, config: str | BackboneConfig, n_heads: int | None
) -> BackboneConfig:
    def shape(name: str, ndim: int) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(f"{path} is missing the tensor {name!r}; it is not a CellFM checkpoint.")
        if len(shapes[name]) != ndim:
            raise ValueError(f"{path}: {name!r} has shape {shapes[name]}, expected a {ndim}-D tensor.")
        return shapes[name]

    if isinstance(config, BackboneConfig):
        if n_heads is not None and n_heads != config.n_heads:
            raise ValueError(f"`n_heads` ({n_heads}) contradicts `config.n_heads` ({config.n_heads}); pass one.")
        return config
    if config != "auto" and config not in CELLFM_SHAPES:
        raise ValueError(
            f"`config` must be 'auto', one of {sorted(CELLFM_SHAPES)} or a BackboneConfig, got {config!r}."
        )
    d = shape("gene_emb", 2)[1]
    layers = {int(m.group(1)) for name in shapes if (m := re.match(r"encoder\.(\d+)\.", name))}
    if not layers:
        raise ValueError(f"{path} has no `encoder.{{i}}.*` tensors; it is not a CellFM checkpoint.")
    sizes = {"d_model": d, "n_layers": max(layers) + 1}
    if config != "auto":
        expected = CELLFM_SHAPES[config]
        if any(expected[k] != v for k, v in sizes.items()):
            raise ValueError(
                f"`config` {config!r} has d_model={expected['d_model']}, n_layers={expected['n_layers']}, but "
                f"{path} has d_model={d}, n_layers={sizes['n_layers']}; pass `config='auto'`."
            )
        if n_heads is not None and n_heads != expected["n_heads"]:
            raise ValueError(f"`n_heads` ({n_heads}) contradicts {config!r} ({expected['n_heads']} heads).")
        n_heads = expected["n_heads"]
    elif n_heads is None:
        if d != 1536:
            raise ValueError(
                f"`n_heads` is required: the number of heads cannot be read from the shapes of {path} (d_model={d}). "
                "Pass the value the model was trained with (CellFM's d_model=1536 models use 48)."
            )
        n_heads = 48
    d_ffn = shape("encoder.0.ffn.u_proj.weight", 2)[0] if "encoder.0.ffn.u_proj.weight" in shapes else d
    name = {(1536, 40): "cellfm-800m", (1536, 2): "cellfm-80m"}.get((d, sizes["n_layers"]), "cellfm")
    return BackboneConfig(
        **sizes,
        n_heads=n_heads,
        d_ffn=None if d_ffn == d else d_ffn,
        n_bins=shape("value_enc.value_enc.w1.weight", 2)[0],
        negative_slope=0.2,  # MindSpore's LeakyReLU default
        norm_eps=1e-7,  # MindSpore's LayerNorm default
        mask_mechanism="mask_emb",  # CellFM's pre-training replaced masked values by `mask_emb`
        name=config if config != "auto" else name,
    )


def _fits(stored: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Check a shape; vectors and scalars may carry extra unit dimensions (CellFM stores ``cls_token`` as (1, 1, d))."""
    if stored == expected:
        return True
    squeeze = tuple(s for s in stored if s != 1)
    return (
        len(expected) <= 1
        and squeeze == tuple(s for s in expected if s != 1)
        and math.prod(stored) == math.prod(expected)
    )


def _build(cls: type[Backbone], genes: list[str], config: BackboneConfig) -> Backbone:
    """Build a backbone with uninitialised weights (every parameter is then loaded), fast, on the meta device."""
    with torch.device("meta"):
        model = cls(genes, config)
    if next(model.buffers(), None) is not None:  # buffers keep their constructed values: build for real
        return cls(genes, config)
    return model.to_empty(device="cpu")


def _check_fit(ckpt: MindSporeCheckpoint, params: dict[str, str], expected: dict[str, tuple[int, ...]], config) -> None:
    """Compare the checkpoint's tensors with the backbone's parameter shapes, before anything is allocated."""
    shapes = {name: ckpt.entries[tag].shape for name, tag in params.items()}
    missing = [name for name in expected if name not in params]
    unexpected = [params[name] for name in params if name not in expected]
    wrong = [
        f"{params[name]}: {ckpt.entries[params[name]].tensor_type} {shapes[name]} vs backbone {shape}"
        for name, shape in expected.items()
        if name in params
        and (not _fits(shapes[name], shape) or ckpt.entries[params[name]].tensor_type not in _FLOAT_TYPES)
    ]
    report = mismatch_report(missing, unexpected, wrong)
    if report:
        raise ValueError(
            f"`ckpt_path` {ckpt.path} does not fit a CellFM backbone ({config.name}: d_model={config.d_model}, "
            f"n_layers={config.n_layers}, n_bins={config.n_bins}). {report}. Weight matrices must be stored "
            "(out, in) as in MindSpore; pass `ignore=(prefix, ...)` to skip extra tensors."
        )


def load_cellfm(
    cls: type[Backbone],
    ckpt_path: str | Path,
    *,
    vocabulary: str | Path | Sequence[str] | None,
    config: str | BackboneConfig = "auto",
    n_heads: int | None = None,
    ignore: Sequence[str] = (),
) -> Backbone:
    """Load a CellFM checkpoint into a new ``cls`` instance (see :meth:`hinge_sc.Backbone.from_cellfm`).

    Every declared tensor size is checked against the bytes the file holds, and every parameter shape against
    the checkpoint, on the meta device, before any memory is allocated for the weights; every tensor read must be
    finite (else :class:`~hinge_sc.FileIntegrityError` names the first one that is not).
    """
    files = {"ckpt_path": ckpt_path}
    options: dict = {"config": asdict(config) if isinstance(config, BackboneConfig) else config, "n_heads": n_heads}
    options["ignore"] = list(ignore)
    if isinstance(vocabulary, str | Path):
        files["vocabulary"] = vocabulary
    else:
        options["vocabulary"] = None if vocabulary is None else [str(g) for g in vocabulary]
    genes = read_vocabulary(vocabulary)
    with MindSporeCheckpoint(ckpt_path) as ckpt:
        params, ignored = _classify(ckpt, ignore)
        for tag in params.values():
            ckpt.check(tag)  # a forged header cannot make us allocate what the file does not hold
        shapes = {name: ckpt.entries[tag].shape for name, tag in params.items()}
        config = _infer_config(shapes, ckpt.path, config, n_heads)
        if "gene_emb" in shapes:
            _check_rows(len(genes), shapes["gene_emb"][0])
        with torch.device("meta"):
            expected = {name: tuple(p.shape) for name, p in cls(genes, config).named_parameters()}
        _check_fit(ckpt, params, expected, config)
        model = _build(cls, genes, config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                tensor = ckpt.read(params[name])
                check_finite_tensor(tensor, name=params[name], path=ckpt.path)
                parameter.copy_(tensor.reshape(parameter.shape))
    model.provenance.checkpoint = CheckpointRecord(format="mindspore", path=str(ckpt.path), name=config.name)
    record_source(model, "from_cellfm", files, options)
    logger.info(
        "Loaded %s from %s: %d genes, d=%d, L=%d, H=%d; ignored %s",
        config.name, ckpt.path, len(genes), config.d_model, config.n_layers, config.n_heads,
        ", ".join(f"{len(v)} {k}" for k, v in ignored.items() if v) or "nothing",
    )  # fmt: skip
    return model


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_cellfm(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    revision: str = CELLFM_REVISION,
    timeout: float = 10.0,
    show_progress_bar: bool = True,
) -> Path:
    """Return the path of a published CellFM checkpoint, downloaded once into ``cache_dir``.

    Uses ``huggingface_hub`` when installed (the ``encoders`` extra), else pooch with the file's SHA-256.
    Fails within ``timeout`` seconds when huggingface.co cannot be reached or ``HF_HUB_OFFLINE`` is set.
    """
    if name not in CELLFM_CHECKPOINTS:
        raise ValueError(f"`name` must be one of {sorted(CELLFM_CHECKPOINTS)}, got {name!r}.")
    spec = CELLFM_CHECKPOINTS[name]
    filename = spec["filename"]
    url = f"https://huggingface.co/{CELLFM_REPO}/resolve/{revision}/{filename}"
    how = (
        f"Download {filename} ({spec['size']}) from https://huggingface.co/{CELLFM_REPO} where there is network "
        f"access and pass the local file: `hs.Backbone.from_cellfm('path/to/{filename}', "
        f"vocabulary='path/to/{spec['vocabulary']}')` ({spec['vocabulary']} is in the `csv/` folder of "
        "https://github.com/biomed-AI/CellFM)."
    )
    import pooch

    cache = Path(cache_dir) if cache_dir is not None else Path(pooch.os_cache("hinge_sc")) / "cellfm"
    try:
        import huggingface_hub
    except ImportError:
        huggingface_hub = None
    if huggingface_hub is not None:
        try:
            return Path(huggingface_hub.hf_hub_download(
                CELLFM_REPO, filename, revision=revision, cache_dir=cache, local_files_only=True
            ))  # fmt: skip
        except Exception:  # not cached yet: download below
            pass
    elif (cache / revision / filename).is_file():
        return cache / revision / filename
    if _offline():
        raise ConnectionError(f"Cannot download CellFM checkpoint {name!r}: HF_HUB_OFFLINE is set. {how}")
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"Cannot reach huggingface.co to download CellFM checkpoint {name!r} ({err}). {how}"
        ) from err
    logger.info("Downloading %s (%s) from %s", filename, spec["size"], url)
    try:
        if huggingface_hub is not None:
            return Path(huggingface_hub.hf_hub_download(CELLFM_REPO, filename, revision=revision, cache_dir=cache))
        known_hash = f"sha256:{spec['sha256']}" if revision == CELLFM_REVISION else None
        return Path(pooch.retrieve(
            url, known_hash=known_hash, fname=filename, path=cache / revision, progressbar=show_progress_bar
        ))  # fmt: skip
    except Exception as err:
        raise ConnectionError(f"Downloading {url} failed ({err}). {how}") from err


def check_vocabulary_given(vocabulary: object, name: str) -> None:
    """Fail before a download when ``vocabulary`` is missing."""
    if vocabulary is None:
        vocab = CELLFM_CHECKPOINTS[name]["vocabulary"] if name in CELLFM_CHECKPOINTS else "the CellFM CSV"
        raise ValueError(
            f"`vocabulary` is required: pass the path of CellFM's {vocab} for {name!r}. {_VOCABULARY_HELP}"
        )
