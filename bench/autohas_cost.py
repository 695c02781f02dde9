"""AutoHAS search cost against plain training (the paper: comparable to training one model; the issue's goal:
<= 2.0x with the Gumbel estimator, <= 1.5x with REINFORCE).

Runs ``mobilekit search --method autohas`` (one torch thread, export off) and, like for like, times every search
step against one plain training step of **the same sampled path on the same batch** (forward, backward, momentum-SGD
step of a copy of the supernet with that path active), both as the thread's CPU time (``time.thread_time``, so
other jobs on a shared machine do not enter the ratio). Both steps take one training batch of the same size, so the
ratio is also the cost per training image (an AutoHAS step reads one validation batch on top). Prints the median
over the steps after the first two (warm-up).

Each estimator runs one search whose steps rotate over the temporary-weight variants (``--variants``; step i
uses variant i mod n, so the variants are interleaved step by step under the same machine load and see the same
search): ``per-basis`` computes one optimiser direction per weight-decay basis (still the path for Adam, whose
L2 term is not affine in the weight decay), ``flat-cat`` the affine direction ``A + wd c W`` on flat tensors built
by ``torch.cat`` every step (the code before the per-tensor form; a copy is kept here for the comparison) and
``foreach`` the same affine maths per tensor with ``torch._foreach_*`` and no copies
(:func:`mobilekit.search.temporary_weights.affine_direction`, the default for sgd and adamw). The variants give the
same temporary weights and encoding gradients up to rounding, so the search itself is that of any of them. The
wall-clock ratio ``search_s / final_train_s`` (training the *derived* network for as many steps) is printed too;
it depends on which network was derived, so it is not like for like. The load average is printed before and
after.

The search step, the plain step and the floor each start after a 64 MiB write (``flush_caches``), from cold
caches. For the Gumbel estimator every step also times its **floor** on the same copy (``--no-floor`` skips it): the two
forward/backward passes a Gumbel step cannot do without (the training batch, then the step's validation batch,
the path's weights as plain leaves) and one momentum-SGD weight step, with nothing of the estimator's machinery
(temporary weights, gates, encodings, latency term, records). ``floor / plain`` is what the Gumbel ratio tends to
as that machinery costs nothing; the ratio can reach 2.0x only while the machinery costs less than one weight step
(ratio = 2 + (machinery - weight step) / plain step).

    python bench/autohas_cost.py [--table latency_tables/pixel1-spnas.json] [--target-ms 80] [--epochs 2]
                                 [--steps-per-epoch 10] [--estimators gumbel,reinforce] [--weight-sharing entangled]
                                 [--variants per-basis,flat-cat,foreach] [--no-floor]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("per-basis", "flat-cat", "foreach")


def flat_cat_functions():
    """(mixed, single) temporary-weight functions of the ``flat-cat`` variant: the affine maths on flat tensors
    concatenated every step, as :mod:`mobilekit.search.temporary_weights` had it before the per-tensor form."""
    import torch

    from mobilekit.search.temporary_weights import affine_direction as per_tensor_affine

    def flat_affine(optimizer, params, grads):
        affine = per_tensor_affine(optimizer, params, grads)
        if affine is None:
            return None
        group, state = optimizer.param_groups[0], optimizer.state
        flat_g = torch.cat([g.detach().reshape(-1) for g in grads])
        if isinstance(optimizer, torch.optim.SGD) and group["momentum"]:
            (k, _), *rest = affine.terms
            if not rest:
                return flat_g.mul_(k), affine.c
            flat_buf = torch.cat([(torch.zeros_like(p) if state.get(p, {}).get("momentum_buffer") is None
                                   else state[p]["momentum_buffer"]).reshape(-1) for p in params])
            return flat_g.mul_(k).add_(flat_buf, alpha=rest[0][0]), affine.c
        if isinstance(optimizer, torch.optim.SGD):
            return flat_g, 1.0
        return torch.cat([d.reshape(-1) for d in affine.terms[0][1]]), 1.0

    class FlatStep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, flat_p, flat_a, c, lr_bases, wd_bases, p_lr, p_wd):
            lr_mix, wd_mix = (p_lr.detach() * lr_bases).sum(), (p_wd.detach() * wd_bases).sum()
            ctx.c = c
            ctx.save_for_backward(flat_p, flat_a, lr_bases, wd_bases, lr_mix, wd_mix)
            return torch.add(flat_p.mul(1 - lr_mix * wd_mix * c), flat_a, alpha=-float(lr_mix))

        @staticmethod
        def backward(ctx, grad_out):
            flat_p, flat_a, lr_bases, wd_bases, lr_mix, wd_mix = ctx.saved_tensors
            along_p, along_a = torch.dot(grad_out, flat_p), torch.dot(grad_out, flat_a)
            grad_lr = along_p - lr_bases * (along_a + wd_mix * ctx.c * along_p)
            grad_wd = along_p - lr_mix * (along_a + wd_bases * ctx.c * along_p)
            return None, None, None, None, None, grad_lr, grad_wd

    def split(flat, params):
        return [t.view(p.shape) for t, p in zip(flat.split([p.numel() for p in params]), params)]

    def mixed(optimizer, params, grads, lr_bases, wd_bases, p_lr, p_wd):
        affine = flat_affine(optimizer, params, grads)
        flat_p = torch.cat([p.detach().reshape(-1) for p in params])
        kw = dict(dtype=p_lr.dtype, device=p_lr.device)
        return split(FlatStep.apply(flat_p, affine[0], float(affine[1]), torch.tensor(list(lr_bases), **kw),
                                    torch.tensor(list(wd_bases), **kw), p_lr, p_wd), params)

    @torch.no_grad()
    def single(optimizer, params, grads, lr, weight_decay):
        flat_a, c = flat_affine(optimizer, params, grads)
        flat = torch.cat([p.detach().reshape(-1) for p in params]).mul_(1 - lr * weight_decay * c).sub_(flat_a,
                                                                                                       alpha=lr)
        return split(flat, params)

    return mixed, single


def flush_caches(mib: int = 64) -> None:
    """Write and read ``mib`` MiB (more than the CPU caches), so that each timed step starts from cold caches.
    Without it the floor, timed right after the plain step on the same weights and batch, read them warm (it came
    out ~10 ms below the search step's own two passes and weight step)."""
    import torch

    buffer = torch.ones(mib << 18)
    float(buffer.sum())


def variant_functions(variant: str):
    """(mixed_temporary_weights, temporary_weight) of one variant, with the signatures of
    :mod:`mobilekit.search.methods.autohas`'s."""
    from mobilekit.search.methods import autohas
    from mobilekit.search.temporary_weights import mixed_lr_step, optimizer_direction, optimizer_step

    if variant == "foreach":
        return autohas.mixed_temporary_weights, autohas.temporary_weight
    if variant == "flat-cat":
        return flat_cat_functions()

    def mixed(optimizer, params, grads, lr_bases, wd_bases, p_lr, p_wd):
        return mixed_lr_step(lambda wd: optimizer_direction(optimizer, params, grads, wd), params, lr_bases,
                             wd_bases, p_lr, p_wd)
    return mixed, optimizer_step


def timed_run(args, estimator: str, variants: list[str], floor: bool = False) -> dict:
    """One search whose step i uses ``variants[i % n]``; returns per variant the CPU times (s) of its search
    steps and of the plain steps of the same paths and batches, with ``floor`` the CPU times of the floor steps
    (two forward/backward passes of the same path, on the training and the validation batch, and one weight step),
    and the summary."""
    import torch
    import torch.nn.functional as F

    from mobilekit.search import make_config
    from mobilekit.search.methods import autohas
    from mobilekit.search.run import run_search
    from mobilekit.search.training import make_optimizer

    search_cpu: dict[str, list[float]] = {v: [] for v in variants}
    plain_cpu: dict[str, list[float]] = {v: [] for v in variants}
    floor_cpu: list[float] = []
    functions = {v: variant_functions(v) for v in variants}
    twin: dict = {"wall_s": 0.0, "count": 0}
    original = autohas.AutoHASPhase.step, autohas.mixed_temporary_weights, autohas.temporary_weight

    def step(self, epoch, step_index, x, y):
        variant = variants[twin["count"] % len(variants)]
        twin["count"] += 1
        autohas.mixed_temporary_weights, autohas.temporary_weight = functions[variant]
        wall = time.perf_counter()
        flush_caches()
        twin["wall_s"] += time.perf_counter() - wall
        started = time.thread_time()
        record = original[0](self, epoch, step_index, x, y)
        search_cpu[variant].append(time.thread_time() - started)
        wall = time.perf_counter()
        if "net" not in twin:                # a copy of the supernet: the plain steps leave the search alone
            twin["net"] = copy.deepcopy(self.net)
            twin["opt"] = make_optimizer("sgd", twin["net"].weight_parameters(), 0.05, 1e-4)
            twin["params"] = twin["net"].weight_parameters()
        net, opt = twin["net"], twin["opt"]
        net.fix(self.net.active())           # the path this search step sampled
        net.train()
        flush_caches()
        started = time.thread_time()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        plain_cpu[variant].append(time.thread_time() - started)
        if floor:
            # the floor of a Gumbel step: the two forward/backward passes it needs (training batch, then the
            # validation batch) and one weight step, nothing else (no temporary weights, gates, encodings)
            vx, vy = self._arch_batch(step_index)
            flush_caches()
            started = time.thread_time()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            training_grads = [p.grad for p in twin["params"]]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(vx), vy).backward()
            for p, g in zip(twin["params"], training_grads):
                p.grad = g
            opt.step()
            floor_cpu.append(time.thread_time() - started)
        twin["wall_s"] += time.perf_counter() - wall    # inside the phase's timer: taken off search_s below
        return record

    autohas.AutoHASPhase.step = step
    try:
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as out:
            config = make_config(None, method="autohas", table=args.table, target_ms=args.target_ms, out=out,
                                 data=args.data, epochs=args.epochs, final_epochs=args.epochs,
                                 steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, export=(),
                                 threads=1, estimator=estimator, weight_sharing=args.weight_sharing,
                                 train_resolution=32)
            summary = run_search(config)
    finally:
        autohas.AutoHASPhase.step, autohas.mixed_temporary_weights, autohas.temporary_weight = original
    return {"search": search_cpu, "plain": plain_cpu, "floor": floor_cpu, "summary": summary,
            "search_s": summary["search_s"] - twin["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--estimators", default="gumbel,reinforce", help="comma-separated: gumbel, reinforce")
    parser.add_argument("--weight-sharing", default="entangled", choices=("entangled", "separate"))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"temporary-weight variants interleaved step by step, comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the Gumbel floor (two forward/backward passes + one weight step of the same path, "
                             "timed after every step's plain step)")
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 epoch of 3 steps, batch 16, gumbel only")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.batch_size, args.estimators = 1, 3, 16, "gumbel"
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if not estimators or any(e not in ("gumbel", "reinforce") for e in estimators):
        print(f"--estimators {args.estimators!r}: use gumbel and/or reinforce, e.g. gumbel,reinforce", file=sys.stderr)
        sys.exit(2)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        print(f"--variants {args.variants!r}: use some of {','.join(VARIANTS)}", file=sys.stderr)
        sys.exit(2)

    steps = args.epochs * args.steps_per_epoch
    skip = 2 * len(variants) if steps > 4 * len(variants) else 0      # warm-up steps, over all variants
    print(f"autohas ({args.weight_sharing} weights) on {args.data}, target {args.target_ms:g} ms, "
          f"{args.epochs} x {args.steps_per_epoch} steps of batch {args.batch_size}, one torch thread; variants "
          f"interleaved step by step ({', '.join(variants)}); CPU time per step, median over the steps after the "
          f"first {skip}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'estimator':<10} {'variant':<10} {'steps':>5} {'plain step':>11} {'search step':>12} {'ratio':>6}")
    ratios: dict[tuple[str, str], float] = {}
    floors: dict[str, float] = {}
    for estimator in estimators:
        result = timed_run(args, estimator, variants, floor=estimator == "gumbel" and not args.no_floor)
        for variant in variants:
            keep = skip // len(variants)
            search = statistics.median(result["search"][variant][keep:])
            plain = statistics.median(result["plain"][variant][keep:])
            ratios[estimator, variant] = search / plain
            print(f"{estimator:<10} {variant:<10} {len(result['search'][variant][keep:]):>5} {1000 * plain:>8.1f} ms "
                  f"{1000 * search:>9.1f} ms {search / plain:>5.2f}x", flush=True)
        if result["floor"]:
            floor = statistics.median(result["floor"][skip:])
            plain = statistics.median([t for v in variants for t in result["plain"][v][skip // len(variants):]])
            floors[estimator] = floor / plain
            print(f"{estimator:<10} {'floor':<10} {len(result['floor'][skip:]):>5} {1000 * plain:>8.1f} ms "
                  f"{1000 * floor:>9.1f} ms {floor / plain:>5.2f}x  (two forward/backward passes + one weight "
                  f"step, nothing else)", flush=True)
        s = result["summary"]
        print(f"{estimator:<10} wall search / derived-network training {result['search_s']:.1f} s / "
              f"{s['final_train_s']:.1f} s = {result['search_s'] / s['final_train_s']:.2f}x (derived "
              f"{s['derived_ms']:.1f} ms, {len(s['repairs'])} repair(s))", flush=True)
    for estimator in estimators:
        print(f"{estimator}: search step / plain step of the same path: "
              + ", ".join(f"{ratios[estimator, v]:.2f}x ({v})" for v in variants)
              + (f"; floor {floors[estimator]:.2f}x" if estimator in floors else ""))
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
