"""AutoHAS recovering from a bad default learning rate: 10x too small and 10x too large (the issue's check).

For each bad default ``lr_bad = lr_good x {0.1, 10}`` runs, at the same search steps, final training and latency
target (one torch thread, export off):

* ``autohas`` with ``--weight-lr lr_bad`` (its lr bases are ``lr_bad x multipliers``, 0.1..10, so the good value is
  a basis), reporting the derived per-stage learning rates and the deliverable's test accuracy;
* ``single-path`` trained with momentum SGD at ``lr_bad`` and at ``lr_good`` (the bad default and the good one).

Prints one row per run and the ratio derived lr / lr_good per stage. Full run (Fashion-MNIST, 10 000 training
images):

    python bench/autohas_recovery.py --data fashion-mnist --train-subset 10000 --epochs 3 --final-epochs 3

Each run keeps its folder under ``--out`` (default ``runs/autohas-recovery``; its ``metrics``, ``hyperparameters.json``
and ``hyperparameters.png``); for each AutoHAS run the bench prints how the lr encoding moved, per epoch and stage
(:func:`encoding_report`: probabilities, the hyper-gradient reaching them and its signal-to-noise ratio, the
weight-decay and architecture gradients' scale, Adam's bound on the movement). ``--runs autohas`` skips the
single-path references, ``--encoding-lr`` sets AutoHAS's encoding step size.

``--smoke``: digits, 1 epoch of 2 steps, seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def slug(name: str) -> str:
    """A folder name for a run's label."""
    return "-".join(name.replace("/", " ").split())


def encoding_report(records: list[dict], encoding_lr: float) -> list[str]:
    """Lines on how the lr encoding moved in one AutoHAS run: per epoch and lr stage, the steps, the lr
    probabilities at the end, the hyper-gradient reaching the lr logits (mean over steps per basis and its
    signal-to-noise ratio |mean| / rms, which bounds Adam's mean step at encoding_lr x SNR), the mean |gradient|
    of the weight-decay and architecture logits, and the derived lr; at the end each stage's logit movement
    against Adam's bound (encoding_lr x the steps the stage got)."""
    import statistics

    search = [r for r in records if r.get("phase") == "search" and "grad_lr" in r]
    lines, per_stage = [], {}
    for epoch in sorted({r["epoch"] for r in search}):
        for stage in sorted({r["lr_stage"] for r in search if r["epoch"] == epoch}):
            rows = [r for r in search if r["epoch"] == epoch and r["lr_stage"] == stage]
            grads = list(zip(*(r["grad_lr"] for r in rows)))
            mean = [statistics.fmean(g) for g in grads]
            rms = [statistics.fmean(v * v for v in g) ** 0.5 for g in grads]
            snr = max(abs(m) / s for m, s in zip(mean, rms) if s > 0) if any(rms) else 0.0
            per_stage.setdefault(stage, []).extend(rows)
            lines.append(
                f"  epoch {epoch} stage {stage}: {len(rows)} steps, lr probs "
                f"[{' '.join(f'{p:.3f}' for p in rows[-1]['lr_probs'])}], mean grad_lr "
                f"[{' '.join(f'{m:+.1e}' for m in mean)}], rms {statistics.fmean(rms):.1e}, max SNR {snr:.2f}; "
                f"|grad| wd {statistics.fmean(r['grad_wd_abs'] for r in rows):.1e} alpha "
                f"{statistics.fmean(r['grad_alpha_abs'] for r in rows):.1e}; derived lr {rows[-1]['lr_stages'][stage]:.3g}")
    for stage, rows in sorted(per_stage.items()):
        lines.append(f"  stage {stage}: {len(rows)} steps, Adam moves a logit at most {encoding_lr:g} x "
                     f"{len(rows)} = {encoding_lr * len(rows):.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--good-lr", type=float, default=0.05, help="the good momentum-SGD learning rate")
    parser.add_argument("--factors", default="0.1,10", help="bad default = good lr x each factor (comma-separated)")
    parser.add_argument("--runs", default="autohas,bad,good",
                        help="which runs per factor: autohas, bad (single-path at the bad lr), good (at the good lr)")
    parser.add_argument("--encoding-lr", type=float, default=None,
                        help="AutoHAS's --encoding-lr (default: the method's, the paper's 0.002)")
    parser.add_argument("--hp-encoding-steps", type=int, default=None,
                        help="AutoHAS's --hp-encoding-steps (default: the method's, 9000; 0: the plain --encoding-lr)")
    parser.add_argument("--lr-stages", type=int, default=None,
                        help="AutoHAS's --lr-stages (default: the method's, 4)")
    parser.add_argument("--out", default="runs/autohas-recovery",
                        help="folder for the run folders (one per run, kept; a run folder that already holds a "
                             "run is refused)")
    parser.add_argument("--smoke", action="store_true", help="seconds: digits, 1 epoch of 2 steps")
    args = parser.parse_args()
    if args.smoke:
        args.data, args.train_subset, args.epochs, args.final_epochs = "digits", None, 1, 1
        args.steps_per_epoch, args.batch_size = 2, 16
    try:
        factors = [float(f) for f in args.factors.split(",") if f.strip()]
    except ValueError:
        factors = []
    runs = {r.strip() for r in args.runs.split(",") if r.strip()}
    if not factors or min(factors) <= 0 or not runs or not runs <= {"autohas", "bad", "good"}:
        print(f"--factors {args.factors!r} / --runs {args.runs!r}: use positive numbers (e.g. 0.1,10) and some of "
              "autohas,bad,good", file=sys.stderr)
        sys.exit(2)

    from mobilekit.errors import MobilekitError
    from mobilekit.search import make_config
    from mobilekit.search.methods.autohas import PAPER_SEARCH_STEPS, hp_encoding_lr
    from mobilekit.search.run import run_search
    from mobilekit.search.runfolder import RunFolder

    common = dict(table=args.table, target_ms=args.target_ms, data=args.data, train_subset=args.train_subset,
                  epochs=args.epochs, final_epochs=args.final_epochs, steps_per_epoch=args.steps_per_epoch,
                  batch_size=args.batch_size, export=(), threads=1, seed=0, train_resolution=32)
    autohas_extra = {k: v for k, v in (("encoding_lr", args.encoding_lr), ("lr_stages", args.lr_stages),
                                                     ("hp_encoding_steps", args.hp_encoding_steps))
                     if v is not None}
    print(f"run folders under {args.out}")
    print("run                                   test_acc  lr (per stage) / good lr  weight decay")
    done: dict[Path, dict] = {}
    for factor in factors:
        bad = args.good_lr * factor
        candidates = [("autohas", f"autohas from lr {bad:.3g}", dict(method="autohas", weight_lr=bad, **autohas_extra)),
                      ("bad", f"single-path sgd at bad lr {bad:.3g}", dict(method="single-path", optimizer="sgd", lr=bad)),
                      ("good", f"single-path sgd at good lr {args.good_lr:.3g}",
                       dict(method="single-path", optimizer="sgd", lr=args.good_lr))]
        for kind, name, settings in candidates:
            if kind not in runs:
                continue
            folder = Path(args.out) / slug(name)
            if folder in done:                      # the good lr's run is the same for every factor
                summary = done[folder]
            else:
                try:
                    summary = done[folder] = run_search(make_config(None, out=str(folder), **common, **settings))
                except MobilekitError as exc:
                    print(f"{folder}: {exc}", file=sys.stderr)
                    sys.exit(2)
            hp = summary["final_hyperparameters"] or {}
            lrs = hp.get("lr_stages") or [hp.get("lr", float("nan"))]
            ratios = ", ".join(f"{v / args.good_lr:.2g}" for v in lrs)
            print(f"{name:<37} {summary['test_accuracy']:>8.3f}  {ratios:<24}  {hp.get('weight_decay', 0):.2g}",
                  flush=True)
            if kind == "autohas":
                config = RunFolder(folder).read_json("config.json")
                options = config.get("method_options") or config
                search_steps = sum(1 for r in RunFolder(folder).records() if r.get("phase") == "search")
                encoding_lr = hp_encoding_lr(options.get("encoding_lr", 0.002),
                                             options.get("hp_encoding_steps", PAPER_SEARCH_STEPS), search_steps)
                print("\n".join(encoding_report(RunFolder(folder).records(), encoding_lr)), flush=True)


if __name__ == "__main__":
    main()
