"""Quality–compute curve of HINGE's generation, chosen on validation spots of the training sections only.

Usage::

    python benchmarks/her2st_recipe.py --out her2st_recipe                       # trains on C2–C5 (about 10 min)
    python benchmarks/her2st_recipe.py --out her2st_recipe --model q13/runs/<hash>/C6_hinge_s0_model
    python benchmarks/her2st_recipe.py --out lr3e-3 --epochs 6 --lr 3e-3 --samples 8 --steps 10  # a training recipe

A HINGE model (the benchmark's default configuration, see ``benchmarks/her2st.py``) is trained on the sections other
than ``--held-out`` — or loaded from ``--model`` — and only its **validation spots** (the ``validation_size``
fraction of the training sections held out by ``HINGE.train``) are generated: the held-out section is never looked
at. For samples S ∈ ``--samples`` (nested: the first S of the largest S, one run) at ``--steps-for-samples``
sampling steps, and for sampling steps ∈ ``--steps`` at ``--samples-for-steps`` samples, the table gives PCC-50 and
mean PCC on log2(count + 1) and log1p CP10k, coverage of the central 50 % / 90 % intervals, CRPS, and the generation
time per spot. Writes ``recipe.md`` (printed) and ``recipe.csv`` to ``--out``. Training settings (``--epochs``,
``--lr``, ``--batch-size``, ``--diffusion-steps``, …) are those of ``benchmarks/her2st.py``: one call per training
recipe compares recipes on the same validation spots (the split depends only on the seed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCALES, cellfm_vocabulary, markdown, scores, write_prediction
from her2st import FEATURE_KEYS, load_features, train_variant

logger = logging.getLogger("her2st_recipe")
#: Columns of the table: PCC-50 and mean PCC on both scales, coverage and CRPS on log2(count + 1).
COLUMNS = {
    scale: {"pcc_50": f"PCC-50 {scale}", "pcc_mean": f"mean PCC {scale}"}
    | ({"coverage_50": "cov. 50%", "coverage_90": "cov. 90%", "crps": "CRPS"} if scale == "log2p1" else {})
    for scale in SCALES
}


def score(valid, key: str) -> dict:
    """PCC-50, mean PCC, coverage and CRPS of ``obsm[key]`` on the validation spots (pooled over sections)."""
    return scores(valid, key, COLUMNS, section_key=None)


def main(argv: list[str] | None = None) -> str:
    """Run the curve; returns the markdown report."""
    args = parse_args(argv)
    import torch

    import hinge_sc as hs

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = load_features(args)
    train = adata[adata.obs["section"] != args.held_out].copy()
    if args.model:
        model = hs.HINGE.load(args.model, adata=None)
    else:
        vocabulary = cellfm_vocabulary(args.data)
        panel = hs.pp.select_genes(train, n_genes=args.n_genes, vocabulary=vocabulary)
        model, _ = train_variant("hinge", train, panel, vocabulary, 0, args)
    valid = train[np.asarray(model.validation_indices_)].copy()
    logger.warning("%d validation spots of sections %s", valid.n_obs, sorted(set(valid.obs["section"])))
    fk = FEATURE_KEYS["context"]

    rows = []
    s_max, steps = max(args.samples), args.steps_for_samples
    t0 = time.perf_counter()
    hs.tl.generate(model, valid, features_key=fk, n_samples=s_max, n_steps=steps, seed=0, key_added="h_all",
                   save_samples=True, overwrite=True, show_progress_bar=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    full, genes, params = valid.obsm["h_all_samples"], valid.obsm["h_all"].columns, valid.uns["h_all"]["params"]
    for s in sorted(args.samples):
        # the first S draws of the one run and their mean, written as the package writes a generation
        mean = pd.DataFrame(full[:, :s].mean(axis=1), index=valid.obs_names, columns=genes)
        std = pd.DataFrame(full[:, :s].std(axis=1), index=valid.obs_names, columns=genes)
        sub_params = {**params, "n_samples": s, "mean_estimate": "samples"}
        write_prediction(valid, "h", mean, std, full[:, :s], params=sub_params, seed=params["seed"])
        rows.append({"S": s, "steps": steps, "s/spot": seconds * s / s_max / valid.n_obs, **score(valid, "h")})
    for n_steps in sorted(args.steps):
        t0 = time.perf_counter()
        hs.tl.generate(model, valid, features_key=fk, n_samples=args.samples_for_steps, n_steps=n_steps, seed=0,
                       key_added="h", save_samples=True, overwrite=True, show_progress_bar=False)  # fmt: skip
        rows.append({"S": args.samples_for_steps, "steps": n_steps,
                     "s/spot": (time.perf_counter() - t0) / valid.n_obs, **score(valid, "h")})  # fmt: skip
        logger.warning("steps %d done", n_steps)
    table = pd.DataFrame(rows)
    table.to_csv(out / "recipe.csv", index=False)
    text = (f"# HINGE quality–compute curve on {valid.n_obs} validation spots of {', '.join(sorted(set(valid.obs['section'])))}"
            f" (held-out {args.held_out} not used)\n\nCommand: `python benchmarks/her2st_recipe.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
            "Rows with S varying reuse one run (first S draws; mean of the draws). "
            "Rows with steps varying: separate runs, Rao–Blackwellised mean.\n\n" + markdown(table, ".3f") + "\n")  # fmt: skip
    (out / "recipe.md").write_text(text)
    print(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; model settings as in ``benchmarks/her2st.py``."""
    from her2st import parse_args as benchmark_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="A saved HINGE model trained without --held-out (else trained here).")
    p.add_argument("--held-out", default="C6", help="Section left out of training (never generated here).")
    p.add_argument("--samples", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--steps-for-samples", type=int, default=10)
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50])
    p.add_argument("--samples-for-steps", type=int, default=8)
    own, rest = p.parse_known_args(argv)
    bench = benchmark_args(["--out", own.out, *rest])
    return argparse.Namespace(**(vars(bench) | vars(own)))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
