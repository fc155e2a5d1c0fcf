"""scGPT checkpoint folders (``best_model.pt``, ``vocab.json``, ``args.json``) → :class:`~hinge_sc.nn.ScGPTBackbone`.

Reads scGPT's three names of the attention weights: ``self_attn.in_proj_weight`` (``nn.TransformerEncoder``),
``self_attn.Wqkv.weight`` (flash-attention layer, the published models) and ``self_attn._impl.Wqkv.weight`` (its
newer wrapper). The state dict is read with ``torch.load(weights_only=True)`` (memory-mapped when the file allows),
and every tensor's shape is checked against ``args.json`` and the vocabulary before the model is allocated.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch

from hinge_sc._files import load_tensors

from ._backbone_io import mismatch_report
from ._provenance import CheckpointRecord

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._scgpt import ScGPTBackbone, ScGPTConfig

logger = logging.getLogger(__name__)

WEIGHTS_FILE, VOCAB_FILE, ARGS_FILE = "best_model.pt", "vocab.json", "args.json"
#: scGPT's special tokens (``<pad>`` is ``args.json``'s ``pad_token``); they never match a gene.
SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")
#: The published scGPT models: Google Drive folders of the scGPT README (bowang-lab/scGPT, MIT licence).
SCGPT_CHECKPOINTS = MappingProxyType(
    {
        "scgpt-human": MappingProxyType(
            {
                "folder": "https://drive.google.com/drive/folders/1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y",
                "description": "whole-human, 33 million normal human cells, 12 layers, d=512",
            }
        ),
    }
)
#: scGPT heads HINGE does not use: cell-embedding (MVC), classification, zero-probability and batch-adversarial.
UNUSED_SCGPT_PREFIXES = ("mvc_decoder.", "cls_decoder.", "decoder.zero_logit.", "grad_reverse_discriminator.")
_LAYER_NAMES = {
    "self_attn.in_proj_weight": "attn.in_proj.weight",
    "self_attn.in_proj_bias": "attn.in_proj.bias",
    "self_attn.Wqkv.weight": "attn.in_proj.weight",
    "self_attn.Wqkv.bias": "attn.in_proj.bias",
    "self_attn._impl.Wqkv.weight": "attn.in_proj.weight",
    "self_attn._impl.Wqkv.bias": "attn.in_proj.bias",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "self_attn._impl.out_proj.weight": "attn.out_proj.weight",
    "self_attn._impl.out_proj.bias": "attn.out_proj.bias",
    "linear1.weight": "ffn.linear1.weight",
    "linear1.bias": "ffn.linear1.bias",
    "linear2.weight": "ffn.linear2.weight",
    "linear2.bias": "ffn.linear2.bias",
    "norm1.weight": "post_norm1.weight",
    "norm1.bias": "post_norm1.bias",
    "norm2.weight": "post_norm2.weight",
    "norm2.bias": "post_norm2.bias",
}
_TOP_NAMES = {
    "encoder.enc_norm.weight": "gene_norm.weight",
    "encoder.enc_norm.bias": "gene_norm.bias",
    "flag_encoder.weight": "flag_emb",
    **{f"value_encoder.{n}": f"value_enc.{n}" for n in (
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "norm.weight", "norm.bias",
        "embedding.weight", "enc_norm.weight", "enc_norm.bias",
    )},
    **{f"decoder.fc.{i}.{p}": f"value_dec.fc.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")},
}  # fmt: skip
_HOW = (
    "Pass the folder of an scGPT model as published (best_model.pt, vocab.json, args.json), e.g. the whole-human "
    f"model: {SCGPT_CHECKPOINTS['scgpt-human']['folder']}."
)


def backbone_name(key: str) -> str | None:
    """Map an scGPT state-dict key to the :class:`ScGPTBackbone` parameter it fills (``None``: not a backbone key).

    ``encoder.embedding.weight`` maps to ``gene_emb`` (its rows are reordered, see :func:`load_scgpt`).
    """
    if key == "encoder.embedding.weight":
        return "gene_emb"
    if key in _TOP_NAMES:
        return _TOP_NAMES[key]
    m = re.fullmatch(r"transformer_encoder\.layers\.(\d+)\.(.+)", key)
    if m and m.group(2) in _LAYER_NAMES:
        return f"encoder.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    return None


def scgpt_names(name: str) -> str:
    """Name the scGPT state-dict key(s) that fill a :class:`ScGPTBackbone` parameter (alternatives joined by " / ")."""
    if name in ("gene_emb", "cls_token"):
        return "encoder.embedding.weight"
    m = re.fullmatch(r"encoder\.(\d+)\.(.+)", name)
    if m:
        keys = [f"transformer_encoder.layers.{m.group(1)}.{k}" for k, v in _LAYER_NAMES.items() if v == m.group(2)]
    else:
        keys = [k for k, v in _TOP_NAMES.items() if v == name]
    return " / ".join(keys) or name


def _read_json_file(path: Path, what: str) -> object:
    """``json.load`` of ``path`` with an error that names the file and its role."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} could not be read as the {what}: it is not valid UTF-8 JSON ({err}). {_HOW}") from None


def read_scgpt_vocabulary(path: str | Path, pad_token: str = "<pad>") -> tuple[list[str], list[int], dict[str, int]]:
    """Read a ``vocab.json``.

    Returns the genes (ordered by scGPT id, special tokens left out), their scGPT ids, and the special tokens' ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No scGPT vocabulary at {path}. {_HOW}")
    vocab = _read_json_file(path, "scGPT vocabulary (vocab.json)")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"{path} is not an scGPT vocabulary (a JSON object token → integer id).")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"{path}: the token ids must be 0 … {len(ids) - 1}, each once.")
    specials = {t: vocab[t] for t in {pad_token, *SPECIAL_TOKENS} if t in vocab}
    for token in (pad_token, "<cls>"):
        if token not in specials:
            raise ValueError(f"{path} has no {token!r} token; scGPT's vocabularies have {SPECIAL_TOKENS}.")
    ordered = [(t, i) for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in specials]
    return [t for t, _ in ordered], [i for _, i in ordered], specials


def read_scgpt_args(path: str | Path) -> dict:
    """Read the settings of an scGPT model (``args.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No scGPT settings at {path}. {_HOW}")
    args = _read_json_file(path, "scGPT settings file (args.json)")
    if not isinstance(args, dict):
        raise ValueError(f"{path} is not an scGPT args.json (a JSON object of settings), found {type(args).__name__}.")
    missing = [k for k in ("embsize", "nlayers", "nheads") if k not in args]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it is not an scGPT args.json. {_HOW}")
    return args


def config_from_args(
    config_class: type[ScGPTConfig], args: Mapping, state_shapes: Mapping[str, tuple[int, ...]], name: str
) -> ScGPTConfig:
    """Build the :class:`ScGPTConfig` an ``args.json`` describes.

    The value-encoder rows and the hidden-gene embedding also need the checkpoint's keys (bins of a ``category``
    encoder, presence of ``flag_encoder``).
    """
    if args.get("pre_norm", False):
        raise ValueError("This scGPT model uses pre-LayerNorm layers (`pre_norm: true`); only post-LN is supported.")
    if args.get("use_batch_labels") or args.get("DSBN") or args.get("domain_spec_batchnorm"):
        raise ValueError("This scGPT model uses batch labels or batch norm; HINGE needs a model without them.")
    style = args.get("input_emb_style", "continuous")
    n_input_bins = None
    if style == "category":
        rows = state_shapes.get("value_encoder.embedding.weight", (0,))[0]
        n_input_bins = rows
        if rows < int(args.get("n_bins", 0)):
            raise ValueError(
                f"value_encoder.embedding.weight has {rows} rows, fewer than args.json's n_bins={args.get('n_bins')}."
            )
    try:
        return _config(config_class, args, style, n_input_bins, state_shapes, name)
    except (TypeError, ValueError) as err:
        raise ValueError(f"args.json describes no usable scGPT model: {err}") from None


def _config(config_class, args, style, n_input_bins, state_shapes, name) -> ScGPTConfig:
    return config_class(
        d_model=int(args["embsize"]),
        n_layers=int(args["nlayers"]),
        n_heads=int(args["nheads"]),
        d_hid=int(args.get("d_hid", args["embsize"])),
        dropout=float(args.get("dropout", 0.2)),
        input_emb_style=style,
        n_input_bins=n_input_bins,
        pad_value=float(args.get("pad_value", -2)),
        mask_value=float(args.get("mask_value", -1)),
        hidden_token="flag" if "flag_encoder.weight" in state_shapes else "mask_value",
        name=name,
    )


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """``best_model.pt`` as a dict of tensors: ``weights_only=True``, memory-mapped when the file is a zip archive."""
    if not path.is_file():
        raise FileNotFoundError(f"No scGPT weights at {path}. {_HOW}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) format, or unreadable: the plain reader loads it or names the problem
        state = load_tensors(path, map_location="cpu", what="scGPT checkpoint")
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not an scGPT state dict (a mapping of parameter names to tensors).")
    return {str(k).removeprefix("module."): v for k, v in state.items()}  # DistributedDataParallel prefix


def _check_fit(
    path: Path,
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    n_vocab: int,
    config: ScGPTConfig,
    ignore: Sequence[str],
) -> tuple[dict[str, str], list[str]]:
    """Match the state dict to the backbone's parameters; one ValueError lists every problem."""
    params: dict[str, str] = {}
    skipped, unexpected, wrong = [], [], []
    for key, tensor in state.items():
        name = backbone_name(key)
        if name is None or name not in expected:
            (skipped if key.startswith((*UNUSED_SCGPT_PREFIXES, *ignore)) else unexpected).append(key)
            continue
        if name in params:
            raise ValueError(f"{path} holds both {params[name]!r} and {key!r}, which are one parameter.")
        params[name] = key
        shape = (n_vocab, config.d_model) if name == "gene_emb" else expected[name]
        if tuple(tensor.shape) != shape or not tensor.is_floating_point():
            wrong.append(f"{key}: expected {shape}, found {tuple(tensor.shape)} {tensor.dtype}")
    stored = {**expected, "gene_emb": (n_vocab, config.d_model)}  # shapes as scGPT stores them
    missing = [f"{scgpt_names(name)} (expected {stored[name]})" for name in expected if name not in params]
    report = mismatch_report(missing, unexpected, wrong)
    if report:
        raise ValueError(
            f"{path} does not fit the scGPT backbone its args.json and vocab.json describe (d={config.d_model}, "
            f"layers={config.n_layers}, d_hid={config.ffn_width}, values={config.input_emb_style}, vocabulary of "
            f"{n_vocab:,} tokens). {report}. Pass `ignore=(prefix, ...)` to skip extra scGPT tensors."
        )
    return params, skipped


def load_scgpt(
    cls: type[ScGPTBackbone], model_dir: str | Path, *, ignore: Sequence[str] = (), name: str | None = None
) -> ScGPTBackbone:
    """Load an scGPT model folder into a new ``cls`` instance (see :meth:`hinge_sc.Backbone.from_scgpt`)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"No scGPT model folder at `model_dir` {model_dir}. {_HOW}")
    args = read_scgpt_args(model_dir / ARGS_FILE)
    genes, gene_ids, specials = read_scgpt_vocabulary(model_dir / VOCAB_FILE, args.get("pad_token", "<pad>"))
    n_vocab = len(genes) + len(specials)
    state = _read_state(model_dir / WEIGHTS_FILE)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = config_from_args(cls.config_class, args, shapes, name or model_dir.name or "scgpt")
    with torch.device("meta"):  # parameter shapes without allocating
        expected = {n: tuple(p.shape) for n, p in cls(genes, config).named_parameters()}
    expected.pop("cls_token")  # a row of the token table
    params, skipped = _check_fit(model_dir / WEIGHTS_FILE, state, expected, n_vocab, config, ignore)
    model = cls(genes, config)
    table = state["encoder.embedding.weight"]
    pad = args.get("pad_token", "<pad>")
    rows = torch.tensor([specials[pad], *gene_ids])  # our row 0 is <pad>, row i + 1 gene i
    with torch.no_grad():
        for pname, parameter in model.named_parameters():
            if pname == "gene_emb":
                parameter.copy_(table[rows])
            elif pname == "cls_token":
                parameter.copy_(table[specials["<cls>"]])
            else:
                parameter.copy_(state[params[pname]])
    model.provenance.checkpoint = CheckpointRecord(format="scgpt", path=str(model_dir), name=config.name)
    logger.info(
        "Loaded scGPT %s from %s: %d genes, d=%d, L=%d, H=%d, %s values, hidden genes by %s; skipped %d head tensors",
        config.name, model_dir, len(genes), config.d_model, config.n_layers, config.n_heads, config.input_emb_style,
        config.hidden_token, len(skipped),
    )  # fmt: skip
    if args.get("input_style") == "binned":
        logger.info(
            "%s was pre-trained on binned values (%s bins per cell); HINGE feeds it values on its target scale.",
            config.name, args.get("n_bins"),
        )  # fmt: skip
    return model


def download_scgpt(name: str, *, cache_dir: str | Path | None = None, timeout: float = 10.0) -> Path:
    """Return the folder of a published scGPT model, downloaded once into ``cache_dir`` (needs ``gdown``).

    The scGPT authors publish their models as Google Drive folders (scGPT README); ``gdown`` fetches such a folder.
    Fails within ``timeout`` seconds without network access.
    """
    if name not in SCGPT_CHECKPOINTS:
        raise ValueError(f"`name` must be one of {sorted(SCGPT_CHECKPOINTS)}, got {name!r}.")
    import pooch

    folder = SCGPT_CHECKPOINTS[name]["folder"]
    target = (Path(cache_dir) if cache_dir is not None else Path(pooch.os_cache("hinge_sc")) / "scgpt") / name
    if all((target / f).is_file() for f in (WEIGHTS_FILE, VOCAB_FILE, ARGS_FILE)):
        return target
    how = (
        f"Download the folder {folder} (best_model.pt, vocab.json, args.json) where there is network access and "
        "pass it: `hs.Backbone.from_scgpt('path/to/folder')`."
    )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ConnectionError(f"Cannot download scGPT model {name!r}: HF_HUB_OFFLINE is set. {how}")
    try:
        import gdown
    except ImportError as err:
        raise ImportError(f"Downloading scGPT's Google Drive folder needs `pip install gdown`. {how}") from err
    try:
        socket.create_connection(("drive.google.com", 443), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"Cannot reach drive.google.com to download scGPT model {name!r} ({err}). {how}") from err
    logger.info("Downloading scGPT model %s from %s into %s", name, folder, target)
    target.mkdir(parents=True, exist_ok=True)
    gdown.download_folder(url=folder, output=str(target), quiet=False)
    found = {p.name: p for p in target.rglob("*") if p.name in (WEIGHTS_FILE, VOCAB_FILE, ARGS_FILE)}
    if len(found) < 3:
        raise ConnectionError(f"The download of {folder} into {target} lacks {WEIGHTS_FILE}, {VOCAB_FILE} or "
                              f"{ARGS_FILE}. {how}")  # fmt: skip
    return found[WEIGHTS_FILE].parent
