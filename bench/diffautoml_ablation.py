"""DiffAutoML's ablation at an equal budget (``mobilekit.compare.budget``: the same training images seen): the full
method, without the augmentation search, without the hyper-gradient, and with both off (DSNAS-style NAS with the
latency penalty only). Every variant's deliverable is its own network (no retraining); the table gives its test
accuracy, predicted latency and what it learned. The variants without the hyper-gradient keep the weight decay
where the hyper-gradient starts (1e-4, ``wd_init`` for every variant). ``--smoke``: a few steps on digits in a
temporary folder (seconds), to check the script runs.

    python bench/diffautoml_ablation.py [--data digits] [--budget 16] [--seeds 1] [--target-ms 80]
        [--table latency_tables/pixel1-spnas.json] [--out runs/diffautoml-ablation]

Runs are resumable (rerun the same line); finished ones are read back from their ``summary.json``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from mobilekit.compare.budget import method_settings
from mobilekit.search import make_config, run_search


WD_INIT = 1e-4          # where the hyper-gradient starts; the variants without it keep this weight decay
VARIANTS = {
    "full": {"wd_init": WD_INIT},
    "no augmentation search": {"augment_search": False, "wd_init": WD_INIT},
    "no hyper-gradient": {"hypergradient": False, "wd_init": WD_INIT},
    "both off (NAS only)": {"augment_search": False, "hypergradient": False, "wd_init": WD_INIT},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--budget", type=int, default=16, help="passes over the train split per run")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--table", default="latency_tables/pixel1-spnas.json")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--out", default="runs/diffautoml-ablation")
    parser.add_argument("--smoke", action="store_true", help="a few steps on digits in a temporary folder")
    args = parser.parse_args()
    smoke: dict = {}
    if args.smoke:
        import tempfile

        args.data, args.budget, args.seeds, args.train_subset = "digits", 2, 1, 64
        args.out = tempfile.mkdtemp(prefix="diffautoml-ablation-smoke-")
        smoke = {"steps_per_epoch": 2, "batch_size": 16}
    rows = []
    for name, keys in VARIANTS.items():
        budget_keys, facts = method_settings("diffautoml", args.budget, 0.5, keys)
        for seed in range(args.seeds):
            out = Path(args.out) / f"{name.split(' (')[0].replace(' ', '-')}-s{seed}"
            config = make_config(None, method="diffautoml", table=args.table, target_ms=args.target_ms,
                                 data=args.data, train_subset=args.train_subset, seed=seed, out=str(out),
                                 export="none", threads=1, resume=True, train_resolution=32,
                                 **{**budget_keys, **smoke}, **keys)
            summary = run_search(config, progress=False)      # a finished run is read back, a killed one resumed
            rows.append((name, budget_keys["epochs"], facts["images_epochs"], summary))
    print(f"data {args.data}, target {args.target_ms:g} ms ({args.table}), budget {args.budget} passes, "
          f"{args.seeds} seed(s)\n")
    print("| variant | epochs | images (passes) | test accuracy | predicted ms | in window | weight decay | "
          "most likely transformation | search s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in VARIANTS:
        mine = [r for r in rows if r[0] == name]
        acc = [r[3]["test_accuracy"] for r in mine]
        spread = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        s = mine[0][3]
        top = (s.get("augment_policy_top") or ["-"])[0]
        print(f"| {name} | {mine[0][1]} | {mine[0][2]:g} | {statistics.mean(acc):.3f}{spread} | "
              f"{statistics.mean(r[3]['predicted_ms'] for r in mine):.1f} | "
              f"{sum(r[3]['within_window'] for r in mine)}/{len(mine)} | {s['searched_weight_decay']:.2g} | {top} | "
              f"{statistics.mean(r[3]['search_s'] for r in mine):.0f} |")


if __name__ == "__main__":
    main()
