"""Why does HINGE trail (or beat) the ridge probe? One held-out her2st section, one factor at a time.

Usage::

    python benchmarks/her2st_diagnostics.py --out her2st_diagnostics --fold C6
    python benchmarks/her2st_diagnostics.py --out diag --backbone pretrained.pt   # adds a pre-trained backbone row

Same data, panel, features and model settings as ``benchmarks/her2st.py`` (its feature cache
``<out>/features_<context>.h5ad`` is reused when ``--out`` is that script's folder). Rows:

- **depth**: how much of the raw-scale correlation is sequencing depth: per-gene Pearson of measured
  ``log2(count + 1)`` with the spot's log library size (an oracle: it reads the measured depth), and how well ridge
  predicts the log depth from the image;
- **features**: HINGE with ``standardize_features=False`` (raw encoder scale into the conditioning network) vs the
  default standardisation;
- **training length**: ``--epochs`` vs 3 × ``--epochs``;
- **sampler**: samples × reverse steps on the same trained model, including one step from "all hidden" (a pure
  image → expression regression through the backbone);
- **backbone prior** (with ``--backbone``): a saved, e.g. pre-trained, backbone instead of a random one;
- **fine-tuning** (``--parts finetune``): every weight of the random backbone trained (``freeze_backbone=False``).
Writes ``<out>/diagnostics.md`` (also printed) and ``diagnostics.csv``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, add_model_args, cellfm_vocabulary, feature_defaults, markdown, quiet, scores, train_hinge, write_prediction
from her2st import load_features

logger = logging.getLogger("her2st_diagnostics")
#: Columns of the table: scale → metric → header (no spatial metrics).
COLUMNS = {
    "log2p1": {"pcc_50": "PCC-50", "pcc_mean": "mean PCC", "coexpr_pcc": "co-expr. r", "mse": "MSE", "rvd": "RVD",
               "coverage_90": "cov. 90%"},
    "log1p_cp10k": {"pcc_50": "PCC-50 (cp10k)", "pcc_mean": "mean PCC (cp10k)"},
}  # fmt: skip


def diagnostic_scores(test, key: str) -> dict:
    """PCC-50, mean PCC, co-expression, MSE, RVD, 90% coverage on log2p1, and PCC-50 / mean PCC on log1p_cp10k."""
    return scores(test, key, COLUMNS, spatial_key=None)


def depth_rows(train, test, panel) -> dict:
    """Oracle depth correlation and the image's prediction of depth."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import hinge_sc as hs

    def dense(a):
        return a.toarray() if hasattr(a, "toarray") else np.asarray(a)

    log_depth = np.log(dense(test.X).sum(1))
    # the oracle "predicts" every panel gene of a spot by its measured log library size; scored like every method
    oracle = pd.DataFrame(np.repeat(log_depth[:, None], len(panel), 1), index=test.obs_names, columns=list(panel))
    write_prediction(test, "depth_oracle", oracle, params={"method": "depth oracle", "target_scale": "log2p1"})
    oracle_scores = scores(test, "depth_oracle", {"log2p1": {"pcc_50": "PCC-50", "pcc_mean": "mean PCC"}},
                           spatial_key=None)  # fmt: skip
    depth_model = make_pipeline(StandardScaler(), Ridge(alpha=10.0))
    depth_model.fit(train.obsm["X_histology"], np.log(dense(train.X).sum(1)))
    depth_fit = depth_model.predict(test.obsm["X_histology"])
    ridge = hs.benchmark.RidgeProbe(10.0).fit(train, genes=panel)
    ridge.predict(test, key_added="ridge", overwrite=True)
    return {
        "depth oracle (measured log library size), raw scale": oracle_scores,
        "ridge: image → log library size (Pearson r)": {"PCC-50": np.corrcoef(depth_fit, log_depth)[0, 1]},
        "ridge probe (reference)": diagnostic_scores(test, "ridge"),
    }


def train_model(train, panel, vocabulary, args, *, epochs: int, standardize: bool = True, backbone=None,
                freeze: bool = True):  # fmt: skip
    """HINGE on ``train`` with the benchmark's settings (the package's recipe, ``epochs`` and ``--lr`` changed)."""
    import torch

    import hinge_sc as hs

    torch.set_num_threads(args.threads)  # scanpy (in `hs.pp.select_genes`) resets torch's thread count
    if backbone is None:
        backbone = hs.Backbone.random(vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                                      seed=args.seed)  # fmt: skip
    recipe = hs.DEFAULT_RECIPE.replace(max_epochs=epochs, **({} if args.lr is None else {"lr": args.lr}))
    model, _ = train_hinge(
        train, genes=panel, recipe=recipe, seed=args.seed, section_key="section",
        views_key="X_histology_views" if args.views > 1 else None, backbone=backbone, diffusion_steps=args.diffusion_steps,
        freeze_backbone=freeze, standardize_features=standardize,
    )  # fmt: skip
    return model


def main(argv: list[str] | None = None) -> str:
    """Run the diagnostics; returns (and prints, and writes) the markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--fold", default="C6")
    p.add_argument("--sections", nargs="+", default=["C2", "C3", "C4", "C5", "C6"])
    p.add_argument("--views", type=int, default=1, choices=(1, 8))
    p.add_argument("--context", default=feature_defaults()["context"], choices=("none", "knn", "field"),
                   help="Spatial context of the features, as in benchmarks/her2st.py (its cache is shared).")
    p.add_argument("--standardize", default=feature_defaults()["standardize"], choices=("section", "none"),
                   help="`hs.pp.histology_features(standardize=)`, as in benchmarks/her2st.py.")
    p.add_argument("--n-genes", type=int, default=200)
    add_model_args(p)
    p.add_argument("--epochs", type=int, default=60, help="The recipe's max_epochs is 60 (hs.DEFAULT_RECIPE).")
    p.add_argument("--lr", type=float, default=None, help="Default: the recipe's.")
    p.add_argument("--diffusion-steps", type=int, default=50)
    p.add_argument("--samplers", nargs="+", default=["4x10", "16x10", "4x50", "4x1"], help="samples x steps")
    p.add_argument("--backbone", default=None, help="A saved hs.Backbone (e.g. pre-trained) for an extra row.")
    p.add_argument("--parts", nargs="+", default=["depth", "sampler", "features", "length", "backbone"],
                   choices=["depth", "sampler", "features", "length", "backbone", "finetune"],
                   help="Rows to compute; 'finetune' trains every backbone weight (freeze_backbone=False).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    with quiet():
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> str:
    """The rows of the diagnostics table."""
    import torch

    import hinge_sc as hs

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    adata = load_features(args)
    vocabulary = cellfm_vocabulary(args.data)
    train = adata[adata.obs["section"] != args.fold].copy()
    test = adata[adata.obs["section"] == args.fold].copy()
    panel = hs.pp.select_genes(train, n_genes=args.n_genes, vocabulary=vocabulary)
    rows = depth_rows(train, test, panel) if "depth" in args.parts else {}

    def add(name: str, model, samples: int, steps: int) -> None:
        key = name.split(":")[0].replace(" ", "_")
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        hs.tl.generate(model, test, n_samples=samples, n_steps=steps, seed=args.seed,
                       key_added=key, overwrite=True, show_progress_bar=False)  # fmt: skip
        rows[name] = diagnostic_scores(test, key) | {"generate (s)": time.perf_counter() - t0}
        logger.warning("%s: PCC-50 %.3f, mean PCC %.3f (%.0f s so far)", name, rows[name]["PCC-50"],
                       rows[name]["mean PCC"], time.perf_counter() - start)  # fmt: skip

    if "sampler" in args.parts:
        base = train_model(train, panel, vocabulary, args, epochs=args.epochs)
        for spec in args.samplers:
            s, k = map(int, spec.split("x"))
            add(f"HINGE, {args.epochs} ep: {s} samples × {k} steps", base, s, k)
    if "features" in args.parts:
        raw = train_model(train, panel, vocabulary, args, epochs=args.epochs, standardize=False)
        add(f"HINGE standardize_features=False, {args.epochs} ep: 4 samples × 10 steps", raw, 4, 10)
    if "length" in args.parts:
        longer = train_model(train, panel, vocabulary, args, epochs=3 * args.epochs)
        add(f"HINGE, {3 * args.epochs} ep: 4 samples × 10 steps", longer, 4, 10)
    if "finetune" in args.parts:
        tuned = train_model(train, panel, vocabulary, args, epochs=args.epochs, freeze=False)
        add(f"HINGE random backbone fully fine-tuned, {args.epochs} ep: 4 samples × 10 steps", tuned, 4, 10)
    if "backbone" in args.parts and args.backbone:
        bb = hs.Backbone.load(args.backbone)
        prior = train_model(train, panel, bb.genes, args, epochs=args.epochs, backbone=bb)
        add(f"HINGE backbone {Path(args.backbone).name}: 4 samples × 10 steps", prior, 4, 10)

    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")
    table.to_csv(out / "diagnostics.csv")
    text = (f"# HINGE diagnostics on {args.fold} (trained on the other sections; log2p1 unless noted)\n\n"
            f"Command: `python benchmarks/her2st_diagnostics.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f"\n\n{markdown(table.astype(object).where(table.notna(), '—'), '.3f', index=True)}\n\n"
            f"Time: {(time.perf_counter() - start) / 60:.1f} min.\n")  # fmt: skip
    (out / "diagnostics.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    main()
