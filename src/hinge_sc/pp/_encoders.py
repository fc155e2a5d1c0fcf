"""Patch encoders: the offline handcrafted default, pathology foundation models by name, any torch module."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._handcrafted import FEATURE_NAMES, handcrafted_features

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
H_OPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))


@dataclass(frozen=True)
class EncoderSpec:
    """How to build, feed and read a named pathology foundation model.

    Attributes
    ----------
    name
        Canonical name (lower case).
    library
        ``"timm"``, ``"transformers"`` or ``"conch"`` (the CONCH package).
    architecture
        timm model name, transformers model class, or CONCH model config.
    hub_id
        Hugging Face hub repository of the weights.
    input_size
        Side of the input image in px.
    mean, std
        Per-channel normalisation of [0, 1] RGB input.
    dim
        Width of the output features.
    kwargs
        Architecture arguments (timm ``create_model`` kwargs, or the transformers config).
    output
        ``"pooled"``: the model's pooled output; ``"cls_mean"``: class token ⊕ mean of the patch tokens after
        ``n_prefix_tokens`` (Virchow); ``"cls"``: class token of ``last_hidden_state`` (transformers);
        ``"conch"``: ``encode_image(x, proj_contrast=False, normalize=False)``.
    """

    name: str
    library: Literal["timm", "transformers", "conch"]
    architecture: str
    hub_id: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    output: Literal["pooled", "cls_mean", "cls", "conch"] = "pooled"
    n_prefix_tokens: int = 1


_VIT_L = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True}
_UNI2 = {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
         "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True, "mlp_layer": "SwiGLUPacked",
         "act_layer": "SiLU", "reg_tokens": 8, "dynamic_img_size": True}  # fmt: skip
_VIRCHOW2 = {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4, "mlp_ratio": 5.3375,
             "global_pool": "", "dynamic_img_size": True, "mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}  # fmt: skip
_HOPT = {"num_classes": 0, "img_size": 224, "global_pool": "token", "init_values": 1e-5, "dynamic_img_size": False}

#: Named encoders. The paper uses ``["uni", "conch"]`` (1024 + 512 = 1536 features).
ENCODERS: Mapping[str, EncoderSpec] = MappingProxyType({
    s.name: s
    for s in (
        EncoderSpec("uni", "timm", "vit_large_patch16_224", "MahmoodLab/uni", 224, *IMAGENET, 1024, _VIT_L),
        EncoderSpec("uni2-h", "timm", "vit_giant_patch14_224", "MahmoodLab/UNI2-h", 224, *IMAGENET, 1536, _UNI2),
        EncoderSpec("conch", "conch", "conch_ViT-B-16", "MahmoodLab/conch", 448, *OPENAI_CLIP, 512, output="conch"),
        EncoderSpec("virchow2", "timm", "vit_huge_patch14_224", "paige-ai/Virchow2", 224, *IMAGENET, 2560, _VIRCHOW2,
                    output="cls_mean", n_prefix_tokens=5),
        EncoderSpec("h-optimus-0", "timm", "vit_giant_patch14_reg4_dinov2", "bioptimus/H-optimus-0", 224, *H_OPTIMUS,
                    1536, _HOPT),
        EncoderSpec("phikon", "transformers", "ViTModel", "owkin/phikon", 224, *IMAGENET, 768,
                    {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                     "image_size": 224, "patch_size": 16}, output="cls"),
        EncoderSpec("phikon-v2", "transformers", "Dinov2Model", "owkin/phikon-v2", 224, *IMAGENET, 1024,
                    {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 224,
                     "patch_size": 16}, output="cls"),
        EncoderSpec("resnet50", "timm", "resnet50", "timm/resnet50.tv_in1k", 224, *IMAGENET, 2048, {"num_classes": 0}),
    )
})  # fmt: skip
_ALIASES = {"uni2": "uni2-h", "uni-2-h": "uni2-h", "hoptimus0": "h-optimus-0", "h-optimus0": "h-optimus-0",
            "phikonv2": "phikon-v2", "conch-v1": "conch", "uni-v1": "uni"}  # fmt: skip


def get_spec(name: str) -> EncoderSpec:
    """Return the :class:`EncoderSpec` of a named encoder (case-insensitive; ``_`` and ``-`` are equivalent)."""
    key = name.lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in ENCODERS:
        raise ValueError(
            f"`encoder={name!r}` is not known. Use 'handcrafted', one of {sorted(ENCODERS)}, a list of these "
            "(outputs are concatenated), or a torch module mapping (B, 3, H, W) float tensors in [0, 1] to (B, D)."
        )
    return ENCODERS[key]


def state_dict_sha256(module: Any) -> str:
    """SHA-256 of a torch module's parameters and buffers (names and raw bytes, in state-dict order)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Encoder:
    """A patch encoder: RGB uint8 patches (n, H, W, 3) → features (n, D), float32.

    Patches are resized to ``input_size`` (bicubic, antialiased) when their side differs, scaled to [0, 1],
    normalised with ``mean`` / ``std`` and embedded under :func:`torch.no_grad` in eval mode.

    Parameters
    ----------
    model
        A :class:`torch.nn.Module` or callable on (B, 3, S, S) float tensors.
    name
        Name recorded in ``uns``.
    input_size
        Side (px) the model expects; ``None`` takes the patches as they come.
    mean, std
        Channel normalisation; ``None`` feeds [0, 1] values.
    output
        How to read the model output, see :class:`EncoderSpec`.
    n_prefix_tokens
        Class and register tokens before the patch tokens (``output="cls_mean"``).
    weights
        Where the weights came from (file, hub id, ``"random"`` or ``"user"``).
    """

    def __init__(
        self,
        model: Callable[[Any], Any],
        *,
        name: str,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        output: Literal["pooled", "cls_mean", "cls", "conch"] = "pooled",
        n_prefix_tokens: int = 1,
        weights: str = "user",
    ):
        self.model, self.name, self.input_size = model, name, input_size
        self.mean, self.std, self.output, self.n_prefix_tokens = mean, std, output, n_prefix_tokens
        self.weights = weights
        self._sha: str | None = None
        if hasattr(model, "eval"):
            model.eval()

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the model's state dict (``None`` for a plain callable); computed once."""
        if self._sha is None and hasattr(self.model, "state_dict"):
            self._sha = state_dict_sha256(self.model)
        return self._sha

    @property
    def device(self) -> Any:
        """Device of the model's first parameter (CPU for parameter-free callables)."""
        import torch

        param = next(iter(getattr(self.model, "parameters", lambda: [])()), None)
        return param.device if param is not None else torch.device("cpu")

    def to(self, device: Any) -> Encoder:
        """Move the model to ``device`` (in place) and return self."""
        if device is not None and hasattr(self.model, "to"):
            self.model.to(device)
        return self

    def preprocess(self, patches: np.ndarray) -> Any:
        """(n, H, W, 3) uint8 → normalised (n, 3, S, S) float tensor on the model's device."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)
        x = x.to(self.device)
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp_(0.0, 1.0)
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        import torch

        x = self.preprocess(patches)
        with torch.no_grad():
            if self.output == "conch":
                out = self.model.encode_image(x, proj_contrast=False, normalize=False)
            elif self.output == "cls":
                out = self.model(pixel_values=x).last_hidden_state[:, 0]
            else:
                out = self.model(x)
                if self.output == "cls_mean":
                    out = torch.cat([out[:, 0], out[:, self.n_prefix_tokens :].mean(1)], dim=-1)
        out = out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float32)
        if out.ndim != 2 or out.shape[0] != len(patches):
            raise ValueError(
                f"`encoder` {self.name!r} must map a (B, 3, H, W) tensor to (B, D) features; for B={len(patches)} it "
                f"returned shape {out.shape}."
            )
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        """Describe the encoder as recorded in ``uns[key_added]["params"]["encoder_info"]``."""
        return {
            "name": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256 or "",
            "input_size": int(self.input_size or 0),
            "mean": list(self.mean or []),
            "std": list(self.std or []),
        }


class HandcraftedEncoder(Encoder):
    """The offline default: :func:`~hinge_sc.pp._handcrafted.handcrafted_features` on 64 px patches."""

    def __init__(self, input_size: int = 64):
        super().__init__(handcrafted_features, name="handcrafted", input_size=input_size, weights="none")

    @property
    def weights_sha256(self) -> str | None:
        """``None``: the handcrafted encoder has no weights."""
        return None

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        if self.input_size is not None and patches.shape[1:3] != (self.input_size,) * 2:
            import torch

            x = self.preprocess(patches).clamp_(0.0, 1.0).mul_(255.0).round_()
            patches = x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return handcrafted_features(patches)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "feature_names": list(FEATURE_NAMES)}


class ConcatEncoder(Encoder):
    """Several encoders whose outputs are concatenated (e.g. UNI ⊕ CONCH = 1536 features, as in the paper)."""

    def __init__(self, encoders: Sequence[Encoder]):
        self.encoders = list(encoders)
        sizes = [e.input_size for e in self.encoders if e.input_size]
        super().__init__(lambda x: x, name="+".join(e.name for e in self.encoders),
                         input_size=max(sizes) if sizes else None, weights="")  # fmt: skip

    @property
    def weights_sha256(self) -> str | None:
        shas = [e.weights_sha256 or "" for e in self.encoders]
        return hashlib.sha256("+".join(shas).encode()).hexdigest()

    def to(self, device: Any) -> ConcatEncoder:
        for e in self.encoders:
            e.to(device)
        return self

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        return np.concatenate([e(patches) for e in self.encoders], axis=1)

    def describe(self) -> dict[str, Any]:
        # a dict, not a list of dicts, so that h5ad and zarr can store it
        return {**super().describe(), "parts": {f"{i}_{e.name}": e.describe() for i, e in enumerate(self.encoders)}}
