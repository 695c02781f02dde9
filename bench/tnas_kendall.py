"""Supernet ranking quality of SPOS and TNAS-OS: Kendall tau between the supernet's validation accuracy (BN
recalibrated, the evolution's score) and the stand-alone validation accuracy (trained from scratch with one fixed
recipe) of the same architectures inside [0.9 T, T]; the stand-alone accuracy is also taken on the test split
(larger, so less noisy; nothing is selected on it), and tau is reported against both.

    OMP_NUM_THREADS=1 python bench/tnas_kendall.py [--table latency_tables/pixel1-spnas.json] [--target-ms 80]
        [--data digits] [--train-subset N] [--archs 10] [--epochs 8] [--standalone-epochs 4] [--seed 0]
        [--weight-sharing entangled|separate] [--methods spos,tnas-os] [--standalone-seed 0] [--out runs/bench-kendall]
    OMP_NUM_THREADS=1 python bench/tnas_kendall.py --smoke      # seconds: checks the script runs (temp folder)

Both supernets are trained by the methods' own ``train_supernet`` with the same settings and seed; the same
architectures (seeded samples in the window) are scored on both and trained stand-alone once. ``kendall.json``
also holds each architecture's scoring and stand-alone times (s) and, for TNAS-OS, the share of sampler-drawn paths
(measured, and the schedule's expectation and sd), the told and in-window counts of each refit and the sampler's
proposals. Not resumable: one seed at 10 000 images, 8 supernet epochs, 16 architectures x 3 stand-alone epochs
took 46 min on one shared core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from scipy.stats import kendalltau

from mobilekit.latency_table import LatencyTable
from mobilekit.models.torch_builder import MobileNet
from mobilekit.search import make_config, run_search
from mobilekit.search.methods import spos, tnas_os
from mobilekit.search.outcome import TrainingHyperparameters
from mobilekit.search.registry import register
from mobilekit.search.training import TrainPhase, evaluate


STANDALONE: dict[str, float] = {}      # arch string -> stand-alone validation accuracy (shared by both methods)
RESULTS: dict[str, dict] = {}


def sampler_report(records: list[dict], plan: tnas_os.Schedule) -> dict:
    """How TNAS-OS drew its paths, from the search's metrics ``records``: the share of sampler-drawn paths
    against the ``plan``'s expectation (and its sampling sd), and per refit how many distinct paths were told and
    how many of them lay in the latency window."""
    search = [r for r in records if r.get("phase") == "search"]
    sources = [r.get("path") for r in search]
    refits = [r for r in search if "told" in r]
    return {"sampler_paths_share": sources.count("sampler") / len(sources) if sources else None,
            "sampler_paths_share_expected": plan.expected_sampler_share(),
            "sampler_paths_share_sd": plan.sampler_share_sd(), "tell_every": plan.every,
            "refits": len(refits), "told": [r["told"] for r in refits],
            "told_inside": [r["told_inside"] for r in refits]}


def bench_method(name: str, module, archs: int, standalone_epochs: int, standalone_seed: int = 0) -> str:
    def search(ctx):
        started = time.perf_counter()
        net, paths, phase, *_ = module.train_supernet(ctx)
        supernet_s = time.perf_counter() - started
        print(f"{name}: supernet trained in {supernet_s:.0f} s", flush=True)
        candidates = []
        for p in spos.initial_population(ctx, paths, 3 * archs):
            if p not in candidates:
                candidates.append(p)
        candidates = candidates[:archs]
        scorer = spos.SupernetScorer(net, ctx, {})
        rows = []
        for i, p in enumerate(candidates):
            arch = paths.architecture(p)
            key = arch.to_string()
            if key not in STANDALONE:
                trained = time.perf_counter()
                torch.manual_seed(ctx.config.seed * 1000 + i + 100_000 * standalone_seed)
                model = MobileNet(arch)
                TrainPhase(model=model, hyperparameters=TrainingHyperparameters.from_config(ctx.config),
                           **{**ctx.phase_kwargs(f"standalone-{i}", epochs=standalone_epochs), "progress": None}
                           ).run_loop(0)
                STANDALONE[key] = (evaluate(model, ctx.splits.val, engine=ctx.engine),
                                   evaluate(model, ctx.splits.test, engine=ctx.engine),
                                   round(time.perf_counter() - trained, 1))
                print(f"{name}: stand-alone {i + 1}/{len(candidates)} trained and evaluated in "
                      f"{STANDALONE[key][2]:.0f} s", flush=True)
            scored = time.perf_counter()
            supernet_accuracy = scorer(p)
            rows.append({"arch": key, "predicted_ms": paths.latency_ms(p), "supernet_accuracy": supernet_accuracy,
                         "supernet_score_s": round(time.perf_counter() - scored, 1),
                         "standalone_accuracy": STANDALONE[key][0], "standalone_test_accuracy": STANDALONE[key][1],
                         "standalone_s": STANDALONE[key][2]})
        supernet = [r["supernet_accuracy"] for r in rows]
        tau, p_value = kendalltau(supernet, [r["standalone_accuracy"] for r in rows])
        tau_test, p_test = kendalltau(supernet, [r["standalone_test_accuracy"] for r in rows])
        RESULTS[name] = {"kendall_tau": float(tau), "p_value": float(p_value), "kendall_tau_test": float(tau_test),
                         "p_value_test": float(p_test), "supernet_s": round(supernet_s, 1), "archs": rows}
        if module is tnas_os:
            cfg = ctx.config
            plan = tnas_os.schedule(phase.total_steps, cfg.tell_every, cfg.eps_inc, cfg.eps_max, cfg.tell_paths)
            RESULTS[name]["sampler"] = {**sampler_report(ctx.run.records(), plan),
                                        "proposals": phase.state.get("proposals", [])}
        ranked = sorted(((r["supernet_accuracy"], p) for r, p in zip(rows, candidates)), key=lambda s: -s[0])
        return spos.outcome(ctx, net, paths, phase, ranked, 0.0)

    method = types.ModuleType(f"_bench_{name}")
    method.Options, method.LATENCY_MODEL, method.SUMMARY, method.search = module.Options, "expected", name, search
    sys.modules[method.__name__] = method
    register(f"bench-{name}", method.__name__)
    return f"bench-{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="latency_tables/pixel1-spnas.json")
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--weight-sharing", choices=("entangled", "separate"), default="entangled")
    parser.add_argument("--archs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--standalone-epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--standalone-seed", type=int, default=0,
                        help="offsets the stand-alone networks' initialisation seeds (the architectures, data order and "
                             "supernets stay those of --seed): rerun with 1, 2, ... to measure the reference's noise")
    parser.add_argument("--methods", default="spos,tnas-os",
                        help="comma-separated subset of spos,tnas-os to train supernets for")
    parser.add_argument("--out", default="runs/bench-kendall")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: 3 architectures, 2 steps of batch 8 per epoch, 1 epoch, a temporary out folder; "
                             "checks the script runs, measures nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quick: dict = {}
    if args.smoke:
        args.archs, args.epochs, args.standalone_epochs, args.batch_size = 3, 1, 1, 8
        args.train_subset = args.train_subset or 100
        args.out = tempfile.mkdtemp(prefix="bench-kendall-smoke-")
        table = LatencyTable.load(args.table)          # the same latencies on narrow (0.35) networks: quick steps
        table.space = {**table.space, "width": 0.35}
        args.table = str(table.save(Path(args.out) / "table-width-0.35.json"))
        quick = {"steps_per_epoch": 2, "bn_steps": 1, "eval_samples": 16, "population": 2, "generations": 0}
    out = Path(args.out)
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not chosen or set(chosen) - {"spos", "tnas-os"}:
        parser.error(f"--methods {args.methods!r}: give a comma-separated subset of spos,tnas-os")
    for name, module in (("spos", spos), ("tnas-os", tnas_os)):
        if name not in chosen:
            continue
        method = bench_method(name, module, args.archs, args.standalone_epochs, args.standalone_seed)
        extra = {**quick, **({"tell_batch": 16, "sampler_fit_steps": 2} if args.smoke and name == "tnas-os" else {})}
        run_search(make_config(None, method=method, table=args.table, target_ms=args.target_ms, data=args.data,
                               epochs=args.epochs, batch_size=args.batch_size, final_epochs=0, export=(),
                               seed=args.seed, train_subset=args.train_subset, weight_sharing=args.weight_sharing,
                               out=str(out / name), train_resolution=32, **extra), progress=False)
        r = RESULTS[name]
        print(f"{name:8s} Kendall tau {r['kendall_tau']:+.3f} (p {r['p_value']:.2f}) against stand-alone val accuracy, "
              f"{r['kendall_tau_test']:+.3f} (p {r['p_value_test']:.2f}) against test accuracy, over "
              f"{len(r['archs'])} architectures; supernet accuracies "
              f"{min(a['supernet_accuracy'] for a in r['archs']):.3f}-{max(a['supernet_accuracy'] for a in r['archs']):.3f}, "
              f"stand-alone test {min(a['standalone_test_accuracy'] for a in r['archs']):.3f}-"
              f"{max(a['standalone_test_accuracy'] for a in r['archs']):.3f}; supernet training {r['supernet_s']:.0f} s")
        if "sampler" in r:
            s = r["sampler"]
            print(f"{name:8s} {100 * s['sampler_paths_share']:.1f} % of the paths from the sampler (schedule "
                  f"{100 * s['sampler_paths_share_expected']:.1f} ± {100 * s['sampler_paths_share_sd']:.1f} %), "
                  f"{s['refits']} refits every {s['tell_every']} steps; told per refit {s['told']}, "
                  f"of them in the window {s['told_inside']}")
    (out / "kendall.json").write_text(json.dumps({"settings": vars(args), **RESULTS}, indent=2) + "\n")
    print(f"written {out / 'kendall.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
