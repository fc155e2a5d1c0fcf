"""Share :class:`~hinge_sc.HINGE` models on the Hugging Face Hub, in the style of scvi-hub.

:meth:`HubMixin.save_to_hub` uploads the folder of :meth:`~hinge_sc.HINGE.save` plus a model card (``README.md``);
:meth:`HubMixin.load_from_hub` downloads it into the Hub cache and reads it with :meth:`~hinge_sc.HINGE.load`, whose
``manifest.json`` check (size and SHA-256 of every model file) is the one of local loads. The card is not in the
manifest: owners may edit ``README.md`` on the Hub, and loading reads no file the manifest does not list.
"""

from __future__ import annotations

import json
import logging
import numbers
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hinge_sc._constants import FEATURE_PROVENANCE_KEY, REGISTRY_KEYS
from hinge_sc._files import FileIntegrityError
from hinge_sc._scales import SCALE_LABELS
from hinge_sc.nn._cellfm import CELLFM_REPO

from ._persistence import backbone_mode

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch
    from anndata import AnnData

    from hinge_sc.nn import Backbone

    from ._hinge import HINGE

logger = logging.getLogger(__name__)

HUB_EXTRA = 'pip install "hinge_sc[hub]"'
CARD_FILE = "README.md"
LIBRARY_NAME = "hinge_sc"
TAGS = ("spatial-transcriptomics", "histology", "scverse", "hinge_sc")
#: Weights read from a published checkpoint, by ``Backbone.provenance.checkpoint.format``: source and Hub licence id
#: (docs/weights.md). Any other backbone (random, pre-trained by the user) has licence ``"unknown"``.
BACKBONE_WEIGHTS = {
    "mindspore": ("CellFM, Zeng et al. 2025, https://huggingface.co/" + CELLFM_REPO, "cc-by-nc-nd-4.0"),
    "scgpt": ("scGPT, Cui et al. 2024, https://github.com/bowang-lab/scGPT", "mit"),
}
_PUBLISHED = ("cellfm-80m", "cellfm-800m", "scgpt-human")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
_HEAD = """\
---
{front_matter}
---

# HINGE model `{repo_id}`

A [HINGE](https://arxiv.org/abs/2603.19766) model (CVPR 2026) written by hinge_sc {version}: it generates the
expression of {n_genes} panel genes in each spot from H&E image features, with a frozen single-cell foundation model.

{description}

## Use

```python
import hinge_sc as hs  # pip install "hinge_sc[hub]"
model = hs.HINGE.load_from_hub("{repo_id}"{backbone_argument})
hs.tl.generate(model, adata)  # adata.obsm["{features_key}"]: image features made as described below
```

Every model file is checked against `manifest.json` (size and SHA-256) before it is read; nothing is unpickled.
"""
_LICENCE = """The card's `license`, **{license}**, is the licence of the backbone's weights (source: {source}). \
hinge_sc itself is BSD-3-Clause; see the licences of the weights in hinge_sc's docs (`docs/weights.md`)."""


def import_hub() -> Any:
    """``import huggingface_hub``, or an ImportError naming the extra to install."""
    try:
        import huggingface_hub
    except ImportError as err:
        raise ImportError(f"Sharing models on the Hugging Face Hub needs huggingface_hub: {HUB_EXTRA}.") from err
    return huggingface_hub


def check_repo_id(repo_id: Any) -> None:
    """Raise unless ``repo_id`` is ``"owner/name"`` as the Hub spells repositories."""
    if not isinstance(repo_id, str):
        raise TypeError(f"`repo_id` must be a string 'owner/name', found {type(repo_id).__name__}.")
    name = repo_id.partition("/")[2]
    if not re.fullmatch(f"{_NAME}/{_NAME}", repo_id) or "--" in repo_id or ".." in repo_id or len(name) > 96:
        raise ValueError(
            f"`repo_id` must be 'owner/name' (a Hub user or organisation, then the repository: letters, digits, "
            f"'-', '_', '.'), found {repo_id!r}. Pass e.g. 'my-lab/hinge-her2st'."
        )


def backbone_record(model: HINGE) -> dict[str, Any]:
    """Architecture, name, sizes, checksum, source and licence (``"unknown"`` unless recorded) of the backbone."""
    backbone = model.module.backbone
    provenance, checkpoint = backbone.provenance, backbone.provenance.checkpoint
    source, license = "no published checkpoint; random, or trained by its user", "unknown"
    if checkpoint is not None:
        source, license = BACKBONE_WEIGHTS.get(checkpoint.format, (f"a {checkpoint.format} checkpoint", "unknown"))
    elif provenance.pretraining is not None:
        source = f"pre-trained with hinge_sc.pretrain_backbone ({provenance.pretraining.n_spots} spots or cells)"
    return {
        "architecture": backbone.architecture,
        "name": backbone.config.name,
        "size": f"d={backbone.config.d_model}, L={backbone.config.n_layers}, H={backbone.config.n_heads}",
        "pre-training scale": provenance.target_scale or "not recorded",
        "checksum": model.backbone_info_["checksum"],
        "source": source,
        "license": license,
        "fine-tuned": any(p.requires_grad for p in backbone.parameters()),
    }


def _table(rows: Mapping[str, Any]) -> str:
    """Two-column Markdown table."""
    lines = ["| | |", "|---|---|"]
    for key, value in rows.items():
        value = f"{value:.4g}" if isinstance(value, float) else value
        lines.append(f"| {key} | {'' if value is None else value} |")
    return "\n".join(lines)


def _sections(model: HINGE) -> list[str] | None:
    """Sections of the training and validation spots (attached data), else the sections of the feature record."""
    key = model.setup_args.get("section_key")
    indices = [i for i in (model.train_indices_, model.validation_indices_) if i is not None]
    if key is not None and model.adata is not None and indices:
        idx = np.concatenate([np.asarray(i, dtype=int) for i in indices])
        if idx.size and idx.max() < model.adata.n_obs:
            return sorted(set(model.adata.obs[key].iloc[idx].astype(str)))
    mpp = (model.registry_.get(FEATURE_PROVENANCE_KEY) or {}).get("microns_per_pixel")
    return sorted(mpp) if mpp else None


def check_metrics(metrics: Any) -> dict[str, float]:
    """``metrics`` (a mapping or a pandas Series, e.g. a ``tl.evaluate`` per-section ``"mean"`` row) as floats."""
    metrics = {} if metrics is None else metrics
    if not hasattr(metrics, "items"):
        raise TypeError(f"`metrics` must be a mapping of metric names to numbers, found {type(metrics).__name__}.")
    bad = {str(k): v for k, v in metrics.items() if not isinstance(v, numbers.Real)}
    if bad:
        raise TypeError(f"`metrics` must map metric names to numbers; not numbers: {bad}. Pass numbers only, e.g. "
                        '`per_section.loc["mean"]` of `hs.tl.evaluate`.')  # fmt: skip
    return {str(k): float(v) for k, v in metrics.items()}


def card_data(license: str, model_card: Mapping[str, Any] | None) -> dict[str, Any]:
    """Front matter of the card: ``library_name``, ``license``, ``tags``, then the fields of ``model_card``."""
    extra = dict(model_card or {})
    fixed = sorted({"license", "library_name"} & set(extra))
    if fixed:
        raise ValueError(f"`model_card` sets {fixed}: `library_name` is always {LIBRARY_NAME!r} and the licence is "
                         "passed as `license=`. Drop them from `model_card`.")  # fmt: skip
    tags = extra.pop("tags", None) or []
    tags = list(TAGS) + [t for t in ([tags] if isinstance(tags, str) else tags) if t not in TAGS]
    return {"library_name": LIBRARY_NAME, "license": license, "tags": tags, **extra}


def card_text(model: HINGE, repo_id: str, front_matter: str, *, license: str, metrics: dict[str, float],
              description: str | None, backbone_included: bool) -> str:  # fmt: skip
    """Write the text of the model card (``README.md``) of :meth:`HubMixin.save_to_hub`."""
    from hinge_sc import __version__

    genes = list(model.panel_genes_)
    registry, params = model.registry_, model.train_params_ or {}
    setup = {k: v for k, v in registry["setup_args"].items() if k != "kwargs"}
    sections = _sections(model)
    data = {
        "spots registered": registry["field_registries"][REGISTRY_KEYS.X_KEY]["summary_stats"].get("n_cells"),
        "training spots": params.get("n_train_spots", "not trained"),
        "validation spots": f"{params.get('n_validation_spots')} ({params.get('validation')})" if params else None,
        "sections": "not recorded" if sections is None else f"{len(sections)}: {', '.join(sections)}",
        "validation sections": ", ".join(params.get("validation_sections") or []) or None,
        "median library size (counts)": params.get("median_library_size"),
        "setup_anndata": f"`{json.dumps(setup)}`",
    }
    n_features = registry["field_registries"][REGISTRY_KEYS.FEATURES_KEY]["summary_stats"].get("n_features")
    provenance = registry.get(FEATURE_PROVENANCE_KEY) or {}
    features = {"features_key": setup.get("features_key"), "width": n_features, "views_key": setup.get("views_key")}
    features.update({k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in provenance.items()})
    if not provenance:
        features["settings"] = "not recorded (the features were not made by hs.pp.histology_features)"
    scale = model.config.target_scale
    units = (f"Generated values are on the `{scale}` scale, {SCALE_LABELS[scale]}"
             + (" (counts depth-normalised to 10,000 per spot over all measured genes)." if scale != "log2p1" else ".")
             + (f" Image patches are {provenance['patch_size_um']} µm across." if "patch_size_um" in provenance
                else " The patch size in µm is not recorded."))  # fmt: skip
    record = backbone_record(model)
    backbone = {**record, "weights in this repository": "yes (backbone.pt)" if backbone_included else "no"}
    name = record["name"]
    call = f'hs.Backbone.from_pretrained("{name}", vocabulary=...)' if name in _PUBLISHED else "backbone"
    argument = "" if backbone_included else f", backbone={call}"
    recipe = {k: v for k, v in params.items() if not isinstance(v, dict | list) and v is not None}
    training = _table({**recipe, "model": f"`{json.dumps(model.config.to_dict())}`"}) if params else "Not trained."
    head = _HEAD.format(front_matter=front_matter.strip(), repo_id=repo_id, version=__version__, n_genes=len(genes),
                        description=description or "", backbone_argument=argument,
                        features_key=setup.get("features_key"))  # fmt: skip
    body = {
        "Training data": _table(data),
        "Panel genes": f"{len(genes)} genes: " + ", ".join(f"`{g}`" for g in genes),
        "Image features": _table(features),
        "Units": units,
        "Backbone": _table(backbone),
        "Training": training,
        "Metrics": _table(metrics) if metrics else "Not reported by the uploader.",
        "Licence": _LICENCE.format(source=record["source"], license=license),
        "Software": f"hinge_sc {__version__}, scvi-tools {registry.get('scvi_version', 'unknown')}.",
    }
    return head + "".join(f"\n## {title}\n\n{text}\n" for title, text in body.items())


class HubMixin:
    """``save_to_hub`` and ``load_from_hub`` of :class:`~hinge_sc.HINGE` (the Hugging Face Hub; the ``hub`` extra)."""

    def save_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool = True,
        revision: str | None = None,
        commit_message: str = "Upload HINGE model with hinge_sc",
        model_card: Mapping[str, Any] | None = None,
        description: str | None = None,
        license: str | None = None,
        metrics: Mapping[str, float] | None = None,
        create_repo: bool = True,
        save_anndata: bool = False,
        save_backbone: bool | None = None,
    ) -> Any:
        """Upload the model, with a model card, to the Hugging Face Hub repository ``repo_id`` (one commit).

        The model is written with :meth:`save` into a temporary folder with a card ``README.md``: YAML front matter
        (``library_name: hinge_sc``, ``license``, ``tags``) and a body with the training data, the panel genes, the
        image features and their settings, the units, the backbone, the training settings, ``metrics`` and versions.

        Parameters
        ----------
        repo_id
            ``"owner/name"``.
        token
            Hugging Face token with write access; default: the saved login or ``HF_TOKEN``.
        private
            Create the repository as private (an existing repository keeps its visibility).
        revision
            Branch to commit to (created when ``create_repo``); default: the main branch.
        commit_message
            Message of the commit.
        model_card
            More front-matter fields, e.g. ``{"datasets": ["her2st"], "tags": ["breast"]}`` (tags are added to
            hinge_sc's); not ``license`` or ``library_name``.
        description
            Markdown put at the top of the card's body (tissue, cohort, how the features were made).
        license
            Hub licence id (``"mit"``, ``"cc-by-4.0"`` …); default: that of the backbone's weights as hinge_sc
            records it (CellFM ``"cc-by-nc-nd-4.0"``, scGPT ``"mit"``), else ``"unknown"``.
        metrics
            Scores to report, e.g. ``per_section.loc["mean"]`` of :func:`hinge_sc.tl.evaluate`.
        create_repo
            Create the repository unless it exists; ``False``: it must exist.
        save_anndata
            Also upload the registered AnnData (``adata.h5ad``); check that you may share it.
        save_backbone
            As in :meth:`save`, but a backbone :meth:`save` would keep by reference (files on this machine) is not
            uploaded (``True`` uploads it): pass it to :meth:`load_from_hub` with ``backbone=``.

        Returns
        -------
        The ``CommitInfo`` of :meth:`huggingface_hub.HfApi.upload_folder`.

        Raises
        ------
        ImportError
            huggingface_hub is not installed (``pip install "hinge_sc[hub]"``).
        ValueError
            ``repo_id`` is not ``"owner/name"``, ``license`` no licence id, or ``model_card`` sets ``license``.
        TypeError
            A value of ``metrics`` is not a number.

        Warns
        -----
        UserWarning
            Not trained; ``license`` is not the backbone's recorded licence; CC BY-NC-ND weights are uploaded.

        Examples
        --------
        >>> _, per_section = hs.tl.evaluate(adata_test)
        >>> model.save_to_hub("my-lab/hinge-her2st", metrics=per_section.loc["mean"], description="HER2+ breast.")
        """
        check_repo_id(repo_id)
        recorded = backbone_record(self)["license"]
        if license is not None and (not isinstance(license, str) or not _LICENSE.fullmatch(license)):
            raise ValueError(f"`license` must be a Hub licence id such as 'mit' or 'cc-by-4.0', found {license!r}.")
        if license not in (None, recorded) and recorded != "unknown":
            warnings.warn(f"`license={license!r}`, but the backbone's weights are under {recorded!r}.", stacklevel=2)
        license = license or recorded
        scores = check_metrics(metrics)
        hub = import_hub()
        front_matter = hub.ModelCardData(**card_data(license, model_card)).to_yaml()
        if not self.is_trained_:
            warnings.warn("The model is not trained; it is uploaded as it is.", UserWarning, stacklevel=2)
        # never by reference: a reference names files on this machine, which nobody else can read
        included = save_backbone = backbone_mode(self, save_backbone) == "copy"
        if included and "-nd-" in recorded:
            warnings.warn(f"backbone.pt holds weights under {recorded} (non-commercial, no derivatives): check that "
                          "you may share them, or pass `save_backbone=False`.", stacklevel=2)  # fmt: skip
        api = hub.HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="hinge_sc_hub_") as tmp:
            folder = Path(tmp)
            self.save(folder, save_anndata=save_anndata, save_backbone=save_backbone)
            card = card_text(self, repo_id, front_matter, license=license, metrics=scores, description=description,
                             backbone_included=included)  # fmt: skip
            (folder / CARD_FILE).write_text(card, encoding="utf-8")
            if create_repo:
                api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
                if revision is not None:
                    api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                       revision=revision, repo_type="model")  # fmt: skip
            files = ", ".join(sorted(p.name for p in folder.iterdir()))
        logger.info("Uploaded the HINGE model to https://huggingface.co/%s (%s)", repo_id, files)
        return commit

    @classmethod
    def load_from_hub(
        cls,
        repo_id: str,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | None = None,
        adata: AnnData | None = None,
        backbone: Backbone | None = None,
        accelerator: str = "auto",
        device: int | str | torch.device = "auto",
    ) -> HINGE:
        """Download a model from the Hugging Face Hub repository ``repo_id`` and load it with :meth:`load`.

        The repository is downloaded into the Hub cache (once; later calls reuse it), then every model file is
        checked against ``manifest.json`` as for a local folder. Folders of hinge_sc 0.1.0 (a pickle) are refused.

        Parameters
        ----------
        repo_id
            ``"owner/name"``.
        revision
            Branch, tag or commit hash; default: the main branch. A commit hash pins the exact files.
        cache_dir
            Hub cache folder; default: huggingface_hub's (``HF_HUB_CACHE``).
        local_files_only
            Use the cache only (no network), as with ``HF_HUB_OFFLINE=1``.
        token
            Hugging Face token, for a private or gated repository.
        adata, backbone, accelerator, device
            As in :meth:`load`; ``backbone`` is needed when the repository does not hold one (see its card).

        Returns
        -------
        The model, with the repository's files checked.

        Raises
        ------
        ImportError
            huggingface_hub is not installed (``pip install "hinge_sc[hub]"``).
        ValueError
            ``repo_id`` is not ``"owner/name"``.
        hinge_sc.FileIntegrityError, FileNotFoundError, ValueError
            As :meth:`load`: a downloaded file is missing, truncated or changed (it is named); no backbone.

        Examples
        --------
        >>> model = hs.HINGE.load_from_hub("my-lab/hinge-her2st")
        >>> hs.tl.generate(model, adata)
        """
        from hinge_sc import __version__

        check_repo_id(repo_id)
        hub = import_hub()
        folder = hub.snapshot_download(repo_id=repo_id, repo_type="model", revision=revision, cache_dir=cache_dir,
                                       local_files_only=local_files_only, token=token, library_name=LIBRARY_NAME,
                                       library_version=__version__)  # fmt: skip
        logger.info("Loading the HINGE model %s from %s", repo_id, folder)
        try:
            return cls.load(folder, adata, backbone=backbone, accelerator=accelerator, device=device)
        except FileIntegrityError as err:
            raise FileIntegrityError(
                f"{err} The folder is the Hub download of {repo_id!r}: download it again with "
                f"`huggingface_hub.snapshot_download({repo_id!r}, force_download=True)` and load it again."
            ) from err
