"""mixbench: the quality benchmark of ../shared/quality-protocol.md (paired seeds, oracle headroom, fidelity).

    python -m benchmarks.mixbench stage --corpus DIR --set five      # stage a domain set (xz) from a corpus
    python -m benchmarks.mixbench fidelity --set five [--procs 2]    # oracle sweep + simulator fidelity
    python -m benchmarks.mixbench baselines --set five --seeds 0,1,2 # natural vs uniform end to end
    python -m benchmarks.mixbench quality --set five --procs 2       # every arm (--arms a,b) end to end, paired
    python -m benchmarks.mixbench transfer --set even                # Olmix proxy -> target transfer ladder
    python -m benchmarks.mixbench reuse --set leaves --procs 2       # Olmix mixture reuse over 5 updates
    python -m benchmarks.mixbench continual --set continual            # op_mix vs retrain, replay, ... over 5 stages

``fidelity``, ``baselines``, ``quality``, ``transfer``, ``reuse`` and ``continual`` are resumable: finished units live in a store (``--store``,
default ``benchmarks/mixbench/stores/<kind>-<set>-<shape>.json``, kept in git with the results); a command runs what is pending within ``--budget-s`` seconds
and can be run again until everything is done.  Every command ends by rewriting the results file
(``benchmarks/results/mixbench_<kind>.json`` + PNG, quality's ``opmix_quality_pretrain.json``, reuse's
``olmix_reuse_scale.json``, continual's ``opmix_quality_continual.json``; ``"status":
"partial"`` until all units are in) from
every store of that kind, so each results file comes from one command, repeated.  ``--shape tiny`` is
a CPU check of the whole pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import glob
import inspect
import os
import shutil
import signal
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))

from _common import RESULTS_DIR, provenance, read_json, write_json  # noqa: E402

from . import baselines, continual, fidelity, quality, quality_report, reuse, transfer, updates  # noqa: E402
from .common import DATA_DIR, SETS, SHAPES, Shape, prepare, stage  # noqa: E402
from .runner import (  # noqa: E402
    Board,
    Budget,
    Store,
    WorkerFile,
    assign,
    launch_workers,
    measured_rate,
    pending_units,
    store_name,
    worker_files,
)


KINDS = {
    "fidelity": fidelity,
    "baselines": baselines,
    "quality": quality,
    "transfer": transfer,
    "reuse": reuse,
    "continual": continual,
}
PLANS = {
    "fidelity": fidelity.FidelityPlan,
    "baselines": baselines.BaselinePlan,
    "quality": quality.QualityPlan,
    "transfer": transfer.TransferPlan,
    "reuse": reuse.ReuseScalePlan,
    "continual": continual.ContinualPlan,
}
#: the modules whose report and plot write a kind's results file, where not the kind's own module
REPORTS = {"quality": quality_report}
#: results files not named mixbench_<kind>
RESULTS_NAMES = {
    "quality": "opmix_quality_pretrain",
    "reuse": "olmix_reuse_scale",
    "continual": "opmix_quality_continual",
}
#: --seeds when not given
DEFAULT_SEEDS = {"reuse": "0,1"}
PLAN_FIELDS = {kind: {f.name for f in dataclasses.fields(plan)} for kind, plan in PLANS.items()}


def _plan(opts):
    shape = SHAPES[opts.shape]
    if opts.command == "fidelity":
        return fidelity.FidelityPlan(
            opts.set,
            seed=opts.seed,
            shape=shape,
            planned=opts.planned,
            prefix=opts.prefix,
            points=tuple(float(p) for p in opts.points.split(",")),
        )
    if opts.command == "transfer":
        rungs = transfer.DEFAULT_RUNGS if not opts.rungs else tuple(_rung(r) for r in opts.rungs.split(","))
        return transfer.TransferPlan(opts.set, seed=opts.seed, shape=shape, mixtures=opts.mixtures, rungs=rungs)
    seeds = tuple(int(s) for s in (opts.seeds or DEFAULT_SEEDS.get(opts.command, "0,1,2")).split(","))
    if opts.command == "reuse":
        if opts.rung:
            rung = _rung(opts.rung)
        else:
            inputs = reuse.report_inputs(opts.results, opts.shape)
            rung, why = reuse.choose_rung(inputs["transfer"], opts.set, opts.shape)
            print(f"proxy rung {rung[0]}: {why}", flush=True)
            opts.rung = f"{rung[0]}={rung[1]}:{rung[2]:g}"  # the workers use the same
        singles = tuple(d for d in (opts.single_reopens or "").split(",") if d)
        return reuse.ReuseScalePlan(
            opts.set, seeds=seeds, shape=shape, rung=rung, single_reopens=singles, swarm_size=opts.swarm_size
        )
    if opts.command == "continual":
        return continual.ContinualPlan(
            opts.set,
            seeds=seeds,
            shape=shape,
            stage_steps=continual.STAGE_STEPS[opts.shape],
            arms=tuple(a for a in (opts.arms or "").split(",") if a),
        )
    if opts.command == "quality":
        arms = tuple(a for a in (opts.arms or "").split(",") if a)
        if opts.set in quality.HELD_OUT_SETS:  # a held-out set runs its pre-registered arms and seeds by default
            arms = arms or quality.HELD_OUT_ARMS
            seeds = seeds if opts.seeds else quality.HELD_OUT_SEEDS
        return quality.QualityPlan(opts.set, seeds=seeds, shape=shape, arms=arms)
    return baselines.BaselinePlan(opts.set, seeds=seeds, shape=shape)


def _rung(text: str) -> tuple[str, str, float]:
    """``name=preset:multiple`` (or ``preset:multiple``, named ``preset_<multiple>x``)."""
    name, _, spec = text.rpartition("=")
    preset, _, multiple = spec.partition(":")
    try:
        value = float(multiple)
    except ValueError:
        raise SystemExit(f"--rungs: {text!r} is not name=preset:multiple (e.g. small_1x=small:1).") from None
    return name or f"{preset}_{value:g}x", preset, value


def _variant(opts) -> str:
    """The command's name in store and results file names: ``fidelity_planned`` with ``--planned``,
    ``fidelity_natural`` with ``--prefix natural`` (both: ``fidelity_planned_natural``); the other commands have
    no variants (``report --planned`` rewrites the planned fidelity results and every other kind's own)."""
    if opts.command != "fidelity":
        return opts.command
    return opts.command + fidelity.variant_suffix(getattr(opts, "planned", False), getattr(opts, "prefix", "uniform"))


def _stop_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}: the units finished so far are saved to the store")


def _store_path(opts) -> str:
    return opts.store or os.path.join(HERE, "stores", store_name(_variant(opts), opts.set, opts.shape))


def _stores(
    folder: str, kind: str, shape: str, variant: str | None = None, also: str | None = None
) -> tuple[list, dict]:
    """``[(plan, units, replicates)]`` and the calls of every store of ``kind`` (named ``variant``, default
    ``kind``) and ``shape`` in ``folder``, and of the store ``also`` (a ``--store`` named otherwise)."""
    pairs, calls = [], {}
    paths = sorted(glob.glob(os.path.join(folder, store_name(variant or kind, "*", shape))))
    if also and os.path.isfile(also) and os.path.abspath(also) not in map(os.path.abspath, paths):
        paths.append(also)
    for path in paths:
        data = read_json(path)
        settings = {k: v for k, v in data["settings"].items() if k in PLAN_FIELDS[kind]}
        settings["shape"] = Shape(**settings["shape"])
        plan = PLANS[kind](**settings)
        pairs.append((plan, data["units"], data.get("replicates", {})))
        calls[plan.set_name] = data["calls"]
    return pairs, calls


def _sibling_rate(opts, plan) -> dict | None:
    """:func:`measured_rate` over the other sets' stores of this kind and shape (a set's first call has none),
    else over another shape's stores scaled by the ratio of the shapes' FLOPs per step (a shape's first call:
    the 60M check paced from the 20M runs; the FLOP ratio overstates a larger model's seconds, which use the
    GPU better, so such a call skips a unit sooner rather than overrunning its deadline)."""
    folder = os.path.dirname(_store_path(opts))

    def rate_of(shape: str) -> dict | None:
        units = {}
        for path in sorted(glob.glob(os.path.join(folder, store_name(_variant(opts), "*", shape)))):
            if os.path.abspath(path) != os.path.abspath(_store_path(opts)):
                units.update(read_json(path).get("units", {}))
        return measured_rate(plan, units)

    rate = rate_of(opts.shape)
    if rate:
        return {**rate, "from": "other sets' stores"}
    # tiny: the tests' CPU shape, whose pace says nothing about a GPU run
    for other in [name for name in SHAPES if name not in (opts.shape, "tiny")]:
        rate = rate_of(other)
        if rate:
            scale = SHAPES[opts.shape].flops_per_step / SHAPES[other].flops_per_step
            return {
                **rate,
                "seconds_per_cost": rate["seconds_per_cost"] * scale,
                **({"by_kind": {k: r * scale for k, r in rate["by_kind"].items()}} if "by_kind" in rate else {}),
                "from": f"the {other} shape's stores, x {scale:.2f} (FLOPs per step)",
            }
    return None


def _write_results(opts, module) -> dict:
    """The results file of this kind from every store of this kind and shape (sets side by side), with the
    pilot stores (``stores/pilot/``: earlier units kept when the benchmark changed) in a ``pilot`` section."""
    module = REPORTS.get(opts.command, module)
    folder = os.path.dirname(_store_path(opts))
    pairs, calls = _stores(folder, opts.command, opts.shape, _variant(opts), also=opts.store)
    inputs = module.report_inputs(opts.results, opts.shape) if hasattr(module, "report_inputs") else {}
    body = module.report(pairs, **inputs)
    pilot_pairs, pilot_calls = _stores(os.path.join(folder, "pilot"), opts.command, opts.shape, _variant(opts))
    if pilot_pairs:
        notes = [
            read_json(p).get("note") for p in sorted(glob.glob(os.path.join(folder, "pilot", f"{_variant(opts)}-*")))
        ]
        body["pilot"] = {**module.report(pilot_pairs, **inputs), "why": notes, "unit_calls": pilot_calls}
    name = RESULTS_NAMES.get(opts.command, f"mixbench_{_variant(opts)}") + (
        "" if opts.shape == "gpu" else f"_{opts.shape}"
    )
    header = provenance(f"mixbench {opts.command}", opts.commit)
    # The numbers were measured where the units ran (each call's device and commit are in unit_calls);
    # this command only assembled them.
    every_call = [
        c for group in (calls, body.get("pilot", {}).get("unit_calls", {})) for runs in group.values() for c in runs
    ]
    measured_on = sorted({c["device"] for c in every_call})
    header.update(
        {
            "report_command": header.pop("command"),
            "report_device": header.pop("device"),
            "report_commit": header.pop("commit"),
            "device": measured_on or None,
            "commits": sorted({c["commit"] for c in every_call if c.get("commit")}),
            "command": "python -m benchmarks.mixbench " + opts.command + " --set <set> [--procs N], "
            "repeated until complete (see unit_calls)",
        }
    )
    result = {
        **header,
        "status": "complete" if body["complete"] else "partial",
        "protocol": "../shared/quality-protocol.md",
        "unit_calls": calls,
        **body,
    }
    os.makedirs(opts.results, exist_ok=True)
    path = os.path.join(opts.results, f"{name}.json")
    write_json(path, result)
    if hasattr(module, "plot"):
        module.plot(result, os.path.join(opts.results, f"{name}.png"))
    if opts.export:
        os.makedirs(opts.export, exist_ok=True)
        for produced in glob.glob(os.path.join(opts.results, f"{name}.*")):
            shutil.copy(produced, opts.export)
    print(f"wrote {path} ({result['status']})", flush=True)
    return result


def _worker_argv(opts, store: str, budget_s: float) -> list[str]:
    """The command line of one worker; ``budget_s`` is what is left of this command's budget."""
    argv = [
        sys.executable,
        "-m",
        "benchmarks.mixbench",
        opts.command,
        "--set",
        opts.set,
        "--shape",
        opts.shape,
        "--seed",
        str(opts.seed),
        "--points",
        opts.points,
        "--store",
        store,
        "--results",
        opts.results,
        "--procs",
        str(opts.procs),
        "--budget-s",
        str(budget_s),
        "--work",
        opts.work,
        "--scratch",
        opts.scratch,
        "--data",
        opts.data,
        "--mixtures",
        str(opts.mixtures),
    ]
    argv += ["--seeds", opts.seeds] if opts.seeds else []
    argv += ["--rungs", opts.rungs] if opts.rungs else []
    argv += ["--rung", opts.rung] if opts.rung else []
    argv += ["--single-reopens", opts.single_reopens] if opts.single_reopens else []
    argv += ["--swarm-size", str(opts.swarm_size)] if opts.swarm_size is not None else []
    argv += ["--planned"] if opts.planned else []
    argv += ["--prefix", opts.prefix]
    argv += ["--arms", opts.arms] if opts.arms else []
    return argv + (["--commit", opts.commit] if opts.commit else [])


def main(argv=None) -> int:
    started = time.monotonic()  # the budget counts from here: packing data and starting workers spend it too

    def budget_left() -> float:
        return opts.budget_s - (time.monotonic() - started)

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mixbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", choices=["stage", "fidelity", "baselines", "quality", "transfer", "reuse", "continual", "report"]
    )
    parser.add_argument("--set", required=True, choices=sorted(SETS))
    parser.add_argument("--shape", default="gpu", choices=sorted(SHAPES))
    parser.add_argument("--corpus", help="stage: a corpus written by hf-datamix corpus build")
    parser.add_argument("--data", default=DATA_DIR, help="staged data folder")
    parser.add_argument("--seed", type=int, default=0, help="fidelity: the seed of the prefix run")
    parser.add_argument(
        "--seeds",
        help="baselines, quality, continual: paired seeds (default 0,1,2); reuse: the last update's "
        "(default 0,1; the earlier updates train the first)",
    )
    parser.add_argument(
        "--arms",
        help=f"quality: arms to run, comma-separated (default: all of {list(quality.ARMS)}); "
        f"continual: of {list(continual.ARMS)}",
    )
    parser.add_argument("--points", default="0.2,0.5", help="fidelity: decision points (fractions of the run)")
    parser.add_argument(
        "--planned",
        action="store_true",
        help="fidelity: caps planned over the horizon, as the library trains by default (own store and results file)",
    )
    parser.add_argument(
        "--prefix",
        default="uniform",
        choices=fidelity.PREFIXES,
        help="fidelity: the mixture trained up to the decision points (natural: own store and results file)",
    )
    parser.add_argument("--mixtures", type=int, default=16, help="transfer: swarm mixtures (targets)")
    parser.add_argument("--rungs", help="transfer: name=preset:chinchilla_multiple,... (default: the issue's ladder)")
    parser.add_argument(
        "--rung",
        help="reuse: the proxies' rung, name=preset:chinchilla_multiple (default: the cheapest "
        "rung with Spearman >= 0.8 in mixbench_transfer.json, else 5m at 1x Chinchilla)",
    )
    parser.add_argument(
        "--single-reopens",
        help="reuse: 'all' or domains: at the last update, partial reuse reopening "
        "each one alone, against auto's choice (costly: a swarm and targets each)",
    )
    parser.add_argument(
        "--swarm-size",
        type=int,
        help="reuse: every swarm's size (default: Olmix's; 0: the fewest runs the law accepts; CPU checks only)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the pending units and their estimated cost; run none"
    )
    parser.add_argument(
        "--store", help="finished units (default benchmarks/mixbench/stores/<kind>-<set>-<shape>.json)"
    )
    parser.add_argument(
        "--merge",
        nargs="*",
        default=[],
        help="folders of worker-*.json to add to the store first (saved even with --dry-run)",
    )
    parser.add_argument("--procs", type=int, default=1, help="worker processes (several share one GPU)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="seconds this command may run, counted from its start (data packing included); units that would not end in time are left for the next call",
    )
    parser.add_argument("--work", default="/tmp/mixbench", help="worker files and logs")
    parser.add_argument("--scratch", default="/tmp/mixbench-scratch", help="unpacked data, trainer folders")
    parser.add_argument("--results", default=RESULTS_DIR)
    parser.add_argument("--export", help="also copy the store and results files here (e.g. $OUT)")
    parser.add_argument("--commit", help="the code's commit (default: git rev-parse HEAD)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    # Every Trainer.train() begins with a full gc.collect() (accelerate's free_memory): over the ~0.5 M objects
    # of the modules imported by now that is ~0.25 s a run on a CPU, a third of a tiny unit.  They live as
    # long as the process; frozen, collections skip them (what the units create is still collected).
    gc.freeze()
    if opts.command == "stage":
        if not opts.corpus:
            parser.error("stage needs --corpus DIR (from `hf-datamix corpus build DIR`)")
        stage(opts.corpus, opts.set, SHAPES[opts.shape], opts.data)
        if opts.set in updates.SEQUENCES:  # the derived domains of its update sequence, in the manifest
            updates.describe(opts.set, opts.data)
        return 0
    os.environ.setdefault("HF_DATAMIX_CACHE", os.path.join(opts.scratch, "packed"))
    if opts.command == "report":
        for command in KINDS:
            opts.command = command
            folder = os.path.dirname(_store_path(opts))
            pattern = store_name(_variant(opts), "*", opts.shape)
            if glob.glob(os.path.join(folder, pattern)) or glob.glob(os.path.join(folder, "pilot", pattern)):
                _write_results(opts, KINDS[command])
        return 0
    module = KINDS[opts.command]
    try:  # every setting of every arm is checked here, before any data are packed or any step is trained
        plan = _plan(opts)
        if hasattr(plan, "check"):
            plan.check()
    except ValueError as error:
        parser.error(str(error))
    store = Store(_store_path(opts), plan.settings(), extensible=getattr(plan, "extensible", ()))
    if opts.command == "quality":  # natural_unplanned / uniform_unplanned units the baselines store already holds
        baselines_store = os.path.join(os.path.dirname(store.path), store_name("baselines", opts.set, opts.shape))
        adopted = quality.adopt_baselines(plan, store, baselines_store)
        if adopted and opts.worker is None and not opts.dry_run:
            store.save()  # before the workers read the store to find their share
            print(f"adopted {adopted} unit(s) from the baselines store", flush=True)
    pending = pending_units(plan, store.units)
    shares = assign(pending, max(1, opts.procs))
    dependent = getattr(module, "DEPENDENT_UNITS", False)  # every worker takes ready units from all pending ones
    extra = {"done": store.units} if dependent else {}
    call = {
        "command": " ".join(sys.argv),
        **{k: v for k, v in provenance("call", opts.commit).items() if k != "benchmark"},
    }
    # The store's own pace (one worker alone; several share the GPU, so each is assumed that many times slower):
    # the budget's first estimate, so a call's first unit is checked against the deadline too.
    rate, sibling = measured_rate(plan, store.units), _sibling_rate(opts, plan)
    rate = rate or sibling
    prior = rate and rate["seconds_per_cost"] * max(1, opts.procs)
    # per kind of unit: this store's where it has run that kind, else the other sets' (a set's first LoRA unit)
    by_kind = {**((sibling or {}).get("by_kind", {})), **((rate or {}).get("by_kind", {}))}
    by_kind = {kind: r * max(1, opts.procs) for kind, r in by_kind.items()}
    if opts.worker is not None:  # a worker: its share of the pending units
        folder = os.path.join(opts.scratch, f"worker-{opts.worker}")
        out = WorkerFile(os.path.join(opts.work, f"worker-{opts.worker}.json"), plan.settings(), call)
        keys = [k for k, _ in pending] if dependent else shares[opts.worker]
        module.run_worker(
            plan,
            keys,
            folder,
            out,
            Budget(opts.budget_s, prior, by_kind),
            data_dir=opts.data,
            unpacked=opts.scratch,
            **extra,
        )
        return 0
    if opts.merge:  # saved at once, so `--merge DIR --dry-run` rescues the units of a call cut off before its save
        merged = store.merge_files([p for folder in opts.merge for p in worker_files(folder)])
        store.save()
        print(f"merged {merged} new unit(s) from {', '.join(opts.merge)} into {store.path}", flush=True)
    os.makedirs(opts.work, exist_ok=True)
    for stale in worker_files(opts.work):
        os.remove(stale)
    Board(opts.work).clear()
    pending = pending_units(plan, store.units)
    print(f"{len(store.units)} units done, {len(pending)} pending", flush=True)
    orphans = plan.orphaned_references(store.units) if hasattr(plan, "orphaned_references") else []
    if orphans:
        print(
            f"left out: {', '.join(orphans)} (forked references whose group's arms are done without them: run "
            "alone they would not fork from those arms' θ_D; to measure one, remove its group's records from "
            "the store and run the group again)",
            flush=True,
        )
    if opts.dry_run:
        print(f"pending units: {', '.join(k for k, _ in pending) or 'none'}", flush=True)
        print(f"estimated cost of the pending units: {sum(c for _, c in pending):.0f} target steps", flush=True)
        if rate and pending:
            seconds = {k: c * rate["seconds_per_cost"] for k, c in pending}
            print(
                f"at the store's pace ({rate['seconds_per_cost']:.4f} s per unit of cost, median of "
                f"{rate['units']} finished units{' of ' + rate['from'] if 'from' in rate else ''}, one worker): "
                f"{sum(seconds.values()):.0f} s in all",
                flush=True,
            )
            longer = [f"{k} (~{s:.0f} s)" for k, s in seconds.items() if s > opts.budget_s]
            if longer:
                print(f"longer than one call's --budget-s {opts.budget_s:.0f}: {', '.join(longer)}", flush=True)
        if hasattr(plan, "estimate"):  # of the pending units where the plan can tell, else of all
            takes = "pending" in inspect.signature(plan.estimate).parameters
            print(plan.estimate(pending=[k for k, _ in pending]) if takes else plan.estimate(), flush=True)
        return 0
    if pending:
        counts = prepare(opts.set, plan.shape, opts.scratch, opts.data)  # data checked before any GPU work
        print(f"training tokens per domain: {counts}", flush=True)
        earlier = [c["training_tokens"] for c in store.calls if c.get("training_tokens")]
        differing = next((tokens for tokens in earlier if tokens != counts), None)
        if differing is not None:
            raise SystemExit(
                f"the staged data differ from those of the store's earlier (or adopted) units ({differing} tokens "
                f"per domain, now {counts}): stage the set from the same corpus, or use another --store."
            )
        call["training_tokens"] = counts
        if hasattr(module, "prepare"):
            module.prepare(plan, opts.scratch, opts.data)
    # A call stopped from outside (`timeout` sends SIGTERM) still saves and exports what its workers finished:
    # the worker files are merged into the store in the `finally`, before the process ends.
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if pending and opts.procs <= 1:  # one worker: this process
            out = WorkerFile(os.path.join(opts.work, "worker-0.json"), plan.settings(), call)
            module.run_worker(
                plan,
                [k for k, _ in pending] if dependent else shares[0],
                os.path.join(opts.scratch, "worker-0"),
                out,
                Budget(budget_left(), prior, by_kind),
                data_dir=opts.data,
                unpacked=opts.scratch,
                **extra,
            )
        elif pending:
            store.save()  # the workers read the merged store
            codes = launch_workers(
                _worker_argv(opts, store.path, budget_left()),
                opts.procs,
                opts.work,
                cwd=ROOT,
            )
            if any(codes):
                print(f"workers exited with {codes}; their finished units are kept", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.merge_files(worker_files(opts.work))
        store.save()
        if opts.export:
            os.makedirs(opts.export, exist_ok=True)
            shutil.copy(store.path, os.path.join(opts.export, os.path.basename(store.path)))
    _write_results(opts, module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
