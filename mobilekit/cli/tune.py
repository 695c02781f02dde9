"""``mobilekit tune``: tune search options (λ first) for a latency target with Optuna, on one machine or many.

A thin layer over :func:`mobilekit.tune.run_tune`: flags become a :class:`~mobilekit.tune.TuneConfig`.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="tune search options (e.g. λ) for a latency target: Optuna, shared storage, Ray",
        description="Each trial runs one search (fixed λ: steering off while λ is tuned) in its own run folder "
                    "under --out and scores it by Single-Path NAS eq. 19, Acc·(R/R_T)^w. The study lives in "
                    "--out/study.db (SQLite) unless --storage names a shared one; rerunning the same command "
                    "resumes it.")
    add = parser.add_argument
    add("--config", help="search recipe TOML (e.g. search/pixel1-80ms.toml) every trial starts from")
    add("--param", action="append", default=[], metavar="NAME:KIND:...",
        help="a tuned search option: NAME:log:LOW:HIGH, NAME:lin:LOW:HIGH, NAME:int:LOW:HIGH or NAME:cat:A,B; "
             "NAME is a search option (lambda = lambda_init). Repeatable")
    add("--set", action="append", default=[], metavar="KEY=VALUE",
        help="a search option for every trial, e.g. epochs=2, export=none, target_ms=60. Repeatable")
    add("--trials", type=int, default=20, help="finished trials wanted in the study (default 20)")
    add("--sampler", default=None,
        help="gp (default), tpe or random; with several --objectives: nsga2 (default), motpe or random")
    add("--fidelity", help="epochs:MIN:MAX: each trial gets MAX search epochs and reports eq. 19 per epoch; "
                           "the pruner stops poor trials from MIN epochs on")
    add("--pruner", choices=("none", "sh", "hyperband"),
        help="successive halving (sh) or hyperband on the epochs (default: hyperband with --fidelity, else none)")
    add("--grid", action="store_true",
        help="grid search over the first --param x the --fidelity epochs, with a heat-map (grid.png)")
    add("--grid-points", type=int, default=5, help="values per tuned range in --grid (default 5)")
    add("--objectives", default="reward",
        help="reward (eq. 19, default) or several of reward,accuracy,latency for a multi-objective study")
    add("--latency", choices=("final", "measured"), default="final",
        help="R in the objectives, of the network whose accuracy is scored: the final network's table latency "
             "(default) or its measured latency (needs a reachable device)")
    add("--out", required=True, help="output folder: study.db, trial run folders, trials.csv, best.json, plots")
    add("--storage", help="shared Optuna storage: postgresql://..., mysql://..., sqlite:///FILE, or a journal "
                          "file (journal:PATH or PATH.log) that workers on other machines join")
    add("--study", default="tune", help="study name in the storage (default tune)")
    add("--workers", type=int, default=1, help="parallel trials: local processes, or Ray tasks with --ray")
    add("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="run trials as Ray tasks: a local Ray instance, or the cluster at ADDRESS (e.g. ray://head:10001)")
    add("--threads", type=int, help="torch threads in all, split between the workers")
    add("--seed", type=int, default=0, help="sampler seed (worker i uses seed + i)")
    add("--heartbeat", type=int, default=30, dest="heartbeat_s",
        help="seconds between trial heartbeats on database storages; a trial silent for twice that is failed "
             "and retried (default 30)")
    add("--startup-trials", type=int, help="random trials before gp/tpe model the objective (default: a third "
                                           "of --trials, 2 to 10)")
    add("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The :class:`~mobilekit.tune.TuneConfig` the flags describe (raises ConfigError on bad input)."""
    from mobilekit.tune import TuneConfig, parse_fidelity, parse_param, parse_set

    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    sampler = args.sampler or ("nsga2" if len(objectives) > 1 else "gp")
    return TuneConfig(
        out=args.out, params=tuple(parse_param(p) for p in args.param), recipe=args.config,
        sets=dict(parse_set(s) for s in args.set), trials=args.trials, sampler=sampler, pruner=args.pruner,
        fidelity=parse_fidelity(args.fidelity) if args.fidelity else None, grid=args.grid,
        grid_points=args.grid_points, objectives=objectives, latency=args.latency, storage=args.storage,
        study=args.study, workers=args.workers, ray=args.ray, threads=args.threads, seed=args.seed,
        heartbeat_s=args.heartbeat_s, startup_trials=args.startup_trials)


def run(args: argparse.Namespace) -> int:
    from mobilekit.tune import run_tune

    config = config_from_args(args)
    result = run_tune(config, progress=not args.no_progress, log=print)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result["trials"].items()))
    print(f"study {result['study']!r} ({result['storage']}): {counts}")
    best = result.get("best")
    if best:
        settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in best["search_options"].items())
        print(f"best trial {best['number']}: eq. 19 = {best['values'][0]:.4f} with {settings}; "
              f"val accuracy {best.get('val_accuracy', float('nan')):.4f}, R {best.get('latency_ms', float('nan')):.2f} "
              f"ms (target {best.get('target_ms', float('nan')):g} ms)")
        print(f"best run folder: {best['run_folder']}")
    for front in result.get("pareto_front", [])[:20]:
        values = ", ".join(f"{name} {v:.4g}" for name, v in zip(result["objectives"], front["values"]))
        print(f"pareto trial {front['number']}: {values} ({front['run_folder']})")
    print("outputs: " + ", ".join(result["files"].values()) + f", {config.out}/best.json")
    return 0
