"""Loading named encoders: local weights files, the Hugging Face hub, or random weights (offline)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import FileIntegrityError, load_tensors
from ._encoders import ConcatEncoder, Encoder, EncoderSpec, HandcraftedEncoder, get_spec

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

logger = logging.getLogger(__name__)

_INSTALL = {
    "timm": "pip install 'hinge_sc[encoders]' (timm, torchvision, huggingface-hub)",
    "transformers": "pip install 'hinge_sc[encoders]' (transformers)",
    "conch": "pip install git+https://github.com/Mahmoodlab/CONCH.git",
}


@contextlib.contextmanager
def _hf_token(token: str | None) -> Iterator[None]:
    """Make ``token`` visible to huggingface_hub (through ``HF_TOKEN``) for the duration of a download."""
    old = os.environ.get("HF_TOKEN")
    if token is not None:
        os.environ["HF_TOKEN"] = token
    try:
        yield
    finally:
        if token is not None:
            if old is None:
                os.environ.pop("HF_TOKEN", None)
            else:
                os.environ["HF_TOKEN"] = old


def _import(library: str, name: str) -> Any:
    import importlib

    try:
        return importlib.import_module({"conch": "conch.open_clip_custom"}.get(library, library))
    except ImportError as err:
        raise ImportError(
            f"`encoder={name!r}` needs the `{library}` package, which is not installed: {_INSTALL[library]}. "
            f"Or pass `model=` (an already built torch module) to `hs.pp.load_encoder`."
        ) from err


def _timm_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    import timm
    import torch

    named = {"SwiGLUPacked": lambda: timm.layers.SwiGLUPacked, "SiLU": lambda: torch.nn.SiLU}
    return {k: named[v]() if isinstance(v, str) and v in named else v for k, v in kwargs.items()}


def build_architecture(spec: EncoderSpec) -> Any:
    """Build the encoder's architecture with random weights (offline)."""
    lib = _import(spec.library, spec.name)
    if spec.library == "timm":
        return lib.create_model(spec.architecture, pretrained=False, **_timm_kwargs(spec.kwargs))
    if spec.library == "transformers":
        config = getattr(lib, spec.architecture.replace("Model", "Config"))(**spec.kwargs)
        extra = {"add_pooling_layer": False} if spec.architecture == "ViTModel" else {}
        return getattr(lib, spec.architecture)(config, **extra)
    from conch.open_clip_custom.factory import create_model

    return create_model(spec.architecture)


def _read_state_dict(path: Path) -> dict[str, Any]:
    """Encoder weights from a ``.safetensors`` file or a tensors-only torch file (never unpickled)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise FileIntegrityError(f"{path} could not be read as safetensors ({err}).") from None
    state = load_tensors(path, what="encoder weights file")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _from_file(spec: EncoderSpec, path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(
            f"`weights={str(path)!r}` does not exist; pass the path of the {spec.name} weights file."
        )
    if spec.library == "transformers" and path.is_dir():
        model_cls = getattr(_import("transformers", spec.name), spec.architecture)
        return model_cls.from_pretrained(path, local_files_only=True)
    if spec.library == "conch":
        from conch.open_clip_custom import create_model_from_pretrained

        return create_model_from_pretrained(spec.architecture, checkpoint_path=str(path))[0]
    model = build_architecture(spec)
    missing, unexpected = model.load_state_dict(_read_state_dict(path), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"`weights={str(path)!r}` does not fit the {spec.name} architecture ({spec.library} {spec.architecture}): "
            f"{len(missing)} missing keys (e.g. {list(missing)[:3]}), {len(unexpected)} unexpected keys (e.g. "
            f"{list(unexpected)[:3]}). Pass the {spec.name} weights from https://huggingface.co/{spec.hub_id}."
        )
    return model


def _from_hub(spec: EncoderSpec, token: str | None) -> Any:
    lib = _import(spec.library, spec.name)
    with _hf_token(token):
        if spec.library == "timm":
            return lib.create_model(f"hf-hub:{spec.hub_id}", pretrained=True, **_timm_kwargs(spec.kwargs))
        if spec.library == "transformers":
            extra = {"add_pooling_layer": False} if spec.architecture == "ViTModel" else {}
            return getattr(lib, spec.architecture).from_pretrained(spec.hub_id, token=token, **extra)
        return lib.create_model_from_pretrained(spec.architecture, checkpoint_path=f"hf_hub:{spec.hub_id}",
                                                hf_auth_token=token)[0]  # fmt: skip


def load_encoder(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    model: Any | None = None,
    pretrained: bool = True,
    token: str | None = None,
    device: str | Any | None = None,
) -> Encoder:
    """Load a pathology foundation model by name, with its input size, normalisation and output rule.

    Known names (:data:`ENCODERS`): ``"uni"`` (ViT-L/16, 1024 features), ``"uni2-h"`` (1536), ``"conch"``
    (CONCH image tower, 448 px input, 512), ``"virchow2"`` (class token ⊕ mean patch token, 2560),
    ``"h-optimus-0"`` (1536), ``"phikon"`` (768), ``"phikon-v2"`` (1024) and ``"resnet50"`` (ImageNet, 2048).

    Parameters
    ----------
    name
        Encoder name (case-insensitive).
    weights
        Local weights file (``.bin``/``.pt``/``.safetensors`` state dict; a model folder for transformers models).
        When ``None``, the weights are downloaded from the Hugging Face hub (gated models need an accepted licence
        and a token).
    model
        An already built module to use instead of building one (its input size and normalisation come from the
        registry).
    pretrained
        With ``False`` (and no ``weights``), build the architecture with random weights (tests, benchmarks).
    token
        Hugging Face token for gated models; default: the ``HF_TOKEN`` environment variable or the login cache.
    device
        Torch device for inference, e.g. ``"cuda"``.

    Returns
    -------
    An :class:`Encoder`; its ``describe()`` (name, weights source and SHA-256, input size, normalisation) is
    recorded by :func:`hinge_sc.pp.histology_features`.

    Raises
    ------
    ValueError
        If ``name`` is unknown or the weights file does not fit the architecture.
    ImportError
        If the library of the encoder (timm, transformers, CONCH) is not installed.
    OSError
        If no weights file is given and the hub download fails (no access, no token, no network).

    Examples
    --------
    >>> uni = hs.pp.load_encoder("uni", weights="~/models/uni/pytorch_model.bin", device="cuda")
    >>> hs.pp.histology_features(adata, encoder=[uni, hs.pp.load_encoder("conch")])
    """
    spec = get_spec(name)
    if model is not None:
        source = "user"
    elif weights is not None:
        path = Path(weights).expanduser()
        model, source = _from_file(spec, path), str(path)
    elif not pretrained:
        model, source = build_architecture(spec), "random"
    else:
        try:
            model = _from_hub(spec, token)
        except ImportError:
            raise
        except Exception as err:  # hub errors come from several libraries; all mean "no weights"
            raise OSError(
                f"Could not load the {spec.name} weights: no local file was given (`weights=`) and the download from "
                f"https://huggingface.co/{spec.hub_id} failed ({type(err).__name__}: {err}). Request access on that "
                "page, then log in (`huggingface-cli login`), set HF_TOKEN or pass `token=`; or download the weights "
                "file and pass `weights='path/to/pytorch_model.bin'`."
            ) from err
        source = f"hf-hub:{spec.hub_id}"
    encoder = Encoder(model, name=spec.name, input_size=spec.input_size, mean=spec.mean, std=spec.std,
                      output=spec.output, n_prefix_tokens=spec.n_prefix_tokens, weights=source)  # fmt: skip
    return encoder.to(device)


def as_encoder(encoder: Any, *, out_size: int | None = None) -> Encoder:
    """Turn the ``encoder`` argument of :func:`histology_features` into an :class:`Encoder`."""
    if isinstance(encoder, Encoder):
        return encoder
    if isinstance(encoder, str):
        if encoder == "handcrafted":
            return HandcraftedEncoder()
        return load_encoder(encoder)
    if isinstance(encoder, (list, tuple)):
        if not encoder:
            raise ValueError("`encoder` is an empty list; give at least one encoder.")
        return ConcatEncoder([as_encoder(e) for e in encoder])
    if callable(encoder):
        name = getattr(encoder, "__name__", type(encoder).__name__)
        return Encoder(encoder, name=name, input_size=out_size or 224)
    raise TypeError(
        f"`encoder` must be 'handcrafted', an encoder name, an Encoder, a torch module / callable or a list of "
        f"these, found {type(encoder).__name__}."
    )
