"""Benchmark of ``olmix_reuse`` (issue 4): mixture reuse across a sequence of DomainSet updates.

    python benchmarks/olmix.py stage --corpus /tmp/bigcorpus     # here: stage the extra (revision) slice
    python benchmarks/olmix.py all --out DIR [--commit SHA]       # every arm, one process per arm

Data: real text from ``hf-datamix corpus build``, staged as ``benchmarks/data/*.jsonl.xz`` (the
op_mix benchmark's files, plus ``wordnet_rev.train.jsonl.xz``: the next slice of wordnet's train
split after the first 10 MB, used by the revision; see ``benchmarks/data/manifest.json``).

The update sequence (stage 0 plus 4 updates, every stage trains ``--stage-steps`` steps):

    stage 0: python_docs, scripture, wordnet, python_code           (initial set, 4 domains)
    stage 1: ADD computing                                           (5 domains)
    stage 2: PARTITION python_code -> python_code:lib + python_code:tests
             (a document is a test file when its text contains "def test", "import pytest" or
              "import unittest"; train and eval split by the same rule: a real partition)
    stage 3: REVISE wordnet -> a different, disjoint slice of wordnet's train split (same eval file)
    stage 4: REMOVE scripture                                        (5 domains at the end)

Arms, every one from the same random-init weights (seed), one model trained through all stages with
``hf_datamix.continual.run_continual``: ``natural`` (token-proportional, no swarm), and
``olmix_reuse`` with ``reuse`` = ``recompute`` (full swarm over all domains at every update, the
removal included: see ``RECOMPUTE_REMOVAL_NOTE``), ``full`` and ``auto``.

The arms run as concurrent processes on the one GPU (they are small and launch-bound); their wall
times are therefore measured under sharing.  The result file is rewritten after every arm ends
(``"status": "partial"`` until all have), and every arm writes its own file after every stage.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from typing import Any


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import opmix as common  # noqa: E402  (the op_mix benchmark's helpers: header, write, tokenizer, model)


DATA_DIR = common.DATA_DIR
RESULTS_DIR = common.RESULTS_DIR
RESULT_NAME = "olmix_reuse"

INITIAL = ["python_docs", "scripture", "wordnet", "python_code"]
ADDED = "computing"
PARTITIONED = "python_code"
PARTS = ["python_code:lib", "python_code:tests"]
TEST_MARKERS = ("def test", "import pytest", "import unittest")
REVISED = "wordnet"
REMOVED = "scripture"
ARMS = ["recompute", "full", "auto", "natural"]
REVISION_SKIP_BYTES = 10_000_000  # the op_mix staging took the first 10 MB of wordnet's train split
RECOMPUTE_REMOVAL_NOTE = (
    "hf_datamix.reuse.plan_reuse returns no_runs for a removal in every mode, recompute included; the "
    "benchmark's recompute arm must run a full swarm at every update, so its removal stage is given "
    "update=None (the strategy then recomputes over all domains, as for a first stage)"
)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def stage(opts) -> None:
    """Stage the revision slice: wordnet train documents after the first 10 MB, up to --revision-cap bytes."""
    src = os.path.join(opts.corpus, "wordnet", "train.jsonl")
    lines, skipped, total = [], 0, 0
    with open(src, encoding="utf-8") as handle:
        for line in handle:
            size = len(json.loads(line)["text"].encode("utf-8"))
            if skipped < REVISION_SKIP_BYTES:
                skipped += size
                continue
            if lines and total + size > opts.revision_cap:
                break
            lines.append(line if line.endswith("\n") else line + "\n")
            total += size
    target = os.path.join(DATA_DIR, "wordnet_rev.train.jsonl.xz")
    with lzma.open(target, "wt", encoding="utf-8", preset=6) as handle:
        handle.writelines(lines)
    path = os.path.join(DATA_DIR, "manifest.json")
    manifest = common.manifest()
    manifest.setdefault("domains", {})["wordnet_rev"] = {
        "train": {"docs": len(lines), "text_bytes": total, "xz_bytes": os.path.getsize(target)},
        "rule": f"wordnet train documents in file order after skipping the first {skipped} bytes of text (the "
        "documents staged as wordnet.train), whole documents up to the cap; eval: wordnet.eval",
    }
    with open(path, "w") as handle:
        json.dump(manifest, handle, indent=2)
    print("wordnet_rev", manifest["domains"]["wordnet_rev"])


def _unxz(source: str, target: str) -> None:
    if not os.path.isfile(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with lzma.open(source, "rb") as src, open(target + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(target + ".tmp", target)


def unpack(work: str) -> dict[str, dict[str, str]]:
    """Decompress, derive the partition's parts and the revision; returns ``{domain: {train, eval}}``."""
    files: dict[str, dict[str, str]] = {}
    base = INITIAL + [ADDED]
    for name in base:
        files[name] = {}
        for split in ("train", "eval"):
            target = os.path.join(work, "data", name, f"{split}.jsonl")
            _unxz(os.path.join(DATA_DIR, f"{name}.{split}.jsonl.xz"), target)
            files[name][split] = target
    # partition: same documents, split by topic (test code vs library code)
    for part in PARTS:
        files[part] = {s: os.path.join(work, "data", part.replace(":", "__"), f"{s}.jsonl") for s in ("train", "eval")}
    for split in ("train", "eval"):
        if all(os.path.isfile(files[p][split]) for p in PARTS):
            continue
        out = {p: [] for p in PARTS}
        with open(files[PARTITIONED][split], encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line)["text"]
                out[PARTS[1] if any(m in text for m in TEST_MARKERS) else PARTS[0]].append(line)
        for part, lines in out.items():
            os.makedirs(os.path.dirname(files[part][split]), exist_ok=True)
            with open(files[part][split] + ".tmp", "w", encoding="utf-8") as handle:
                handle.writelines(lines)
            os.replace(files[part][split] + ".tmp", files[part][split])
    # revision: a disjoint slice of wordnet's train split, same eval file
    rev = os.path.join(work, "data", "wordnet_rev", "train.jsonl")
    _unxz(os.path.join(DATA_DIR, "wordnet_rev.train.jsonl.xz"), rev)
    files["wordnet_rev"] = {"train": rev, "eval": files[REVISED]["eval"]}
    return files


def _docs(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def build_stages(files, steps: int, recompute_removal: bool = False):
    """Stage 0 and the 4 updates (DomainSet.add / partition / revise / remove)."""
    from hf_datamix import DomainSet, DomainSpec
    from hf_datamix.continual import Stage

    def spec(name, key=None):
        key = key or name
        return DomainSpec(name, train=files[key]["train"], eval=files[key]["eval"])

    current = DomainSet([spec(n) for n in INITIAL])
    stages = [Stage(0, current, None, steps)]
    updates = [
        lambda s: s.add(spec(ADDED)),
        lambda s: s.partition(PARTITIONED, [spec(p) for p in PARTS]),
        lambda s: s.revise(REVISED, spec(REVISED, "wordnet_rev")),
        lambda s: s.remove(REMOVED),
    ]
    for index, make in enumerate(updates, start=1):
        update = make(current)
        current = update.domains
        passed = None if (recompute_removal and update.kind == "remove") else update
        stages.append(Stage(index, current, passed, steps))
    return stages


def prepack(opts, files) -> float:
    """Tokenise and pack every domain version once (the cache is shared by the arm processes)."""
    from hf_datamix.data.blocks import pack_domains

    started = time.perf_counter()
    tokenizer = common.load_tokenizer()
    args = common.make_args(opts, os.path.join(opts.work, "prepack"), "natural", opts.stage_steps)
    seen = set()
    for st in build_stages(files, opts.stage_steps):
        for sp in st.domains:
            key = (sp.name, str(sp.train))
            if key not in seen:
                seen.add(key)
                from hf_datamix import DomainSet

                pack_domains(DomainSet([sp]), tokenizer, args)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# one arm (a process of its own)
# ---------------------------------------------------------------------------------------------
def olmix_args(opts, reuse: str) -> dict:
    return {
        "reuse": reuse,
        "proxy_preset": opts.proxy_preset,
        "proxy_steps": opts.proxy_steps,
        "proxy_batch_size": opts.proxy_batch_size,
        "proxy_learning_rate": opts.proxy_learning_rate,
        "proxy_eval_blocks": opts.proxy_eval_blocks,
        "law_starts": opts.law_starts,
        "decision_seed": opts.seed,
        **({"swarm_size": opts.swarm_size} if opts.swarm_size else {}),
    }


def _instrument() -> dict[str, float]:
    from hf_datamix.simulate.proxy_swarm import ProxyRuns

    times = {"proxy_training_s": 0.0, "proxies": 0}
    original = ProxyRuns._train_member

    def timed(self, *args, **kwargs):
        common._sync()
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            common._sync()
            times["proxy_training_s"] += time.perf_counter() - start
            times["proxies"] += 1

    ProxyRuns._train_member = timed
    return times


def _swarm_worker(job):
    """Helper process: train the swarm members of one rank (ProxyRuns's own rank/world_size split)."""
    from hf_datamix.simulate.proxy_swarm import ProxyRuns

    domains, tokenizer, config, output_dir, base_args, mixtures, rank, world = job
    swarm = ProxyRuns(domains, tokenizer, config, output_dir, base_args=base_args)
    result = swarm.run(mixtures, rank=rank, world_size=world, poll_seconds=0.25)
    return result.trained, swarm.ledger.total_flops, swarm.ledger.tokens_by_kind.get("proxy", 0.0)


def _parallel_swarm(workers: int):
    """Spread every swarm over ``workers`` processes on the same GPU (benchmark-side; library untouched).

    ProxyRuns.run(rank, world_size) already splits members i = rank (mod world_size) and gathers the
    results from the shared folder; the strategy calls it with one process, so this wrapper runs rank 0
    here and ranks 1.. in a pool, then counts the helpers' members in ``trained`` and their FLOPs in
    the arm's ledger (as the library does for the members a process trains itself).
    """
    import multiprocessing as mp

    from hf_datamix.simulate.proxy_swarm import ProxyRuns

    if workers <= 1:
        return None
    original = ProxyRuns.run
    pool = mp.get_context("spawn").Pool(workers - 1)

    def run(self, mixtures, rank=0, world_size=1, poll_seconds=5.0):
        if world_size != 1:
            return original(self, mixtures, rank, world_size, poll_seconds)
        mixtures = list(mixtures)
        jobs = pool.map_async(
            _swarm_worker,
            [
                (self.domains, self.tokenizer, self.config, self.output_dir, self.base_args, mixtures, r, workers)
                for r in range(1, workers)
            ],
        )
        result = original(self, mixtures, 0, workers, 0.25)
        for trained, flops, tokens in jobs.get():
            result.trained += trained
            self.ledger.add("proxy", flops, tokens)
        return result

    ProxyRuns.run = run
    return pool


def run_arm(opts) -> None:
    import torch

    from hf_datamix import create_strategy
    from hf_datamix.continual import run_continual

    arm = opts.arm
    times = _instrument()
    started = time.perf_counter()
    files = unpack(opts.work)
    tokenizer = common.load_tokenizer()
    stages = build_stages(files, opts.stage_steps, recompute_removal=(arm == "recompute"))
    strategy_name = "natural" if arm == "natural" else "olmix_reuse"
    strategy_args = None if arm == "natural" else olmix_args(opts, arm)
    work = os.path.join(opts.work, "arms", arm)
    shutil.rmtree(work, ignore_errors=True)
    model = common.new_model(tokenizer, seed=opts.seed)  # the same init (seed) for every arm
    args = common.make_args(opts, work, strategy_name, opts.stage_steps, strategy_args)
    strategy = create_strategy(strategy_name, args.strategy_args)
    path = os.path.join(opts.arm_dir, f"{arm}.json")
    marks: list[float] = []
    arm_result: dict[str, Any] = {
        "arm": arm,
        "strategy": strategy_name,
        "strategy_args": strategy_args,
        "status": "running",
        "per_stage": [],
    }

    def report(text: str) -> None:
        marks.append(time.perf_counter())
        print(f"[{arm}] stage done after {marks[-1] - started:.1f}s\n{text}", flush=True)
        # per-stage partial result from the files run_continual has just written
        results = (
            json.load(open(os.path.join(work, "results.json")))
            if os.path.isfile(os.path.join(work, "results.json"))
            else []
        )
        arm_result["per_stage_partial"] = [
            {"stage": r["stage"], "eval_ppl": r["eval_ppl"], "mixture": r["mixture"]} for r in results
        ]
        common.write(path, arm_result)

    pool = _parallel_swarm(opts.swarm_workers) if arm != "natural" else None
    out = run_continual(model, tokenizer, args, stages, strategy, report=report)
    if pool is not None:
        pool.close()
    wall = time.perf_counter() - started
    edges = [started] + marks
    history = out["history"]
    per_stage = []
    for i, s in enumerate(out["stages"]):
        records = [r for r in history if r.get("stage") == s["stage"] and r.get("kind") == "decision"]
        runs = sum(int(r.get("proxy_runs", 0) or 0) for r in records)
        reuse = records[-1].get("reuse") if records else None
        ppl = s["eval_ppl"]
        per_stage.append(
            {
                "stage": s["stage"],
                "update": s["update"],
                "update_passed_to_strategy": None if stages[i].update is None else stages[i].update.to_dict(),
                "domains": s["domains"],
                "mixture": s["mixture"],
                "proxy_runs": runs,
                "reuse_plan": reuse,
                "swarm_coordinates": records[-1].get("collapsed_domains") if records else None,
                "law_fit_cv": (records[-1].get("fit") or {}).get("cv") if records else None,
                "decision_seconds": sum(float(r.get("seconds", 0.0)) for r in records),
                "eval_loss": s["eval_loss"],
                "eval_ppl": ppl,
                "avg_ppl": sum(ppl.values()) / len(ppl),
                "total_flops_so_far": s["compute"]["total_flops"],
                "flops_by_kind_so_far": s["compute"]["by_kind"],
                "wall_s": edges[i + 1] - edges[i] if i + 1 < len(edges) else None,
            }
        )
    last = per_stage[-1]
    arm_result.update(
        {
            "status": "complete",
            "proxy_runs": int(getattr(strategy, "proxy_runs", 0)),
            "proxy_runs_by_stage": [s["proxy_runs"] for s in per_stage],
            "final_domains": last["domains"],
            "final_eval_ppl": last["eval_ppl"],
            "final_avg_ppl": last["avg_ppl"],
            "final_avg_loss": out["stages"][-1]["eval_avg_loss"],
            "compute": out["compute"],
            "total_flops": out["compute"]["total_flops"],
            "flops_by_kind": out["compute"]["by_kind"],
            "per_stage": per_stage,
            "wall_s": {"total": wall, **times, "decisions": sum(s["decision_seconds"] for s in per_stage)},
            "history": common.decisions(history),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        }
    )
    arm_result.pop("per_stage_partial", None)
    common.write(path, arm_result)
    print(
        f"[{arm}] done: final avg ppl {last['avg_ppl']:.3f}, proxy runs {arm_result['proxy_runs']} "
        f"{arm_result['proxy_runs_by_stage']}, FLOPs {arm_result['total_flops']:.3e}, wall {wall:.1f}s",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# driver: all arms concurrently, merged result
# ---------------------------------------------------------------------------------------------
def figures(result: dict) -> None:
    arms = {k: v for k, v in result["arms"].items() if v.get("status") == "complete"}
    fig: dict[str, Any] = {}
    for name, a in arms.items():
        fig[name] = {
            "final_avg_ppl": a["final_avg_ppl"],
            "proxy_runs": a["proxy_runs"],
            "proxy_runs_after_stage0": sum(a["proxy_runs_by_stage"][1:]),
            "total_flops": a["total_flops"],
            "proxy_flops": a["flops_by_kind"].get("proxy", 0.0),
            "wall_s": a["wall_s"]["total"],
        }
    targets = []
    if "natural" in arms:
        nat = arms["natural"]["final_avg_ppl"]
        for name in arms:
            fig[name]["gain_over_natural"] = (nat - arms[name]["final_avg_ppl"]) / nat
    if {"natural", "full", "recompute"} <= set(arms):
        g_full, g_rec = fig["full"]["gain_over_natural"], fig["recompute"]["gain_over_natural"]
        frac = g_full / g_rec if g_rec != 0 else float("nan")
        fig["full_gain_fraction_of_recompute"] = frac
        note = "" if g_rec > 0 else " (recompute's gain is not positive: the fraction is not meaningful)"
        targets.append(
            {
                "target": "full reuse keeps >= 95% of recompute's gain over natural",
                "measured": f"{frac:.1%} (full {g_full:+.2%}, recompute {g_rec:+.2%}){note}",
                "fraction": frac,
                "met": bool(g_rec > 0 and frac >= 0.95),
            }
        )
    if {"full", "recompute"} <= set(arms):
        ratio = arms["full"]["proxy_runs"] / max(1, arms["recompute"]["proxy_runs"])
        upd = fig["full"]["proxy_runs_after_stage0"] / max(1, fig["recompute"]["proxy_runs_after_stage0"])
        fig["full_over_recompute_proxy_runs"] = ratio
        fig["full_over_recompute_proxy_runs_updates_only"] = upd
        targets.append(
            {
                "target": "full reuse's proxy runs <= 26% of recompute's",
                "measured": f"{ratio:.1%} ({arms['full']['proxy_runs']} vs {arms['recompute']['proxy_runs']}); "
                f"updates only (stage 0 excluded): {upd:.1%}",
                "ratio": ratio,
                "met": bool(ratio <= 0.26),
            }
        )
        fig["full_over_recompute_proxy_flops"] = fig["full"]["proxy_flops"] / max(1.0, fig["recompute"]["proxy_flops"])
    if {"natural", "auto", "recompute"} <= set(arms) and fig["recompute"]["gain_over_natural"] != 0:
        fig["auto_gain_fraction_of_recompute"] = (
            fig["auto"]["gain_over_natural"] / fig["recompute"]["gain_over_natural"]
        )
        fig["auto_over_recompute_proxy_runs"] = arms["auto"]["proxy_runs"] / max(1, arms["recompute"]["proxy_runs"])
    result["figures"] = fig
    result["targets"] = targets


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = {k: v for k, v in result["arms"].items() if v.get("status") == "complete"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    f = result.get("figures", {})
    for name, a in arms.items():
        gain = f.get(name, {}).get("gain_over_natural")
        if gain is not None:
            left.scatter(a["proxy_runs"], 100 * gain, s=60)
            left.annotate(name, (a["proxy_runs"], 100 * gain), textcoords="offset points", xytext=(5, 5))
        right.plot(
            [s["stage"] for s in a["per_stage"]], [s["avg_ppl"] for s in a["per_stage"]], marker="o", label=name
        )
    left.axhline(0, color="grey", lw=0.8)
    left.set_xlabel("proxy runs (all stages)")
    left.set_ylabel("gain over natural, % (avg per-domain ppl, final set)")
    left.set_title("gain vs proxy runs")
    right.set_xticks(range(5), ["0: init", "1: add", "2: partition", "3: revise", "4: remove"])
    right.set_ylabel("average per-domain eval ppl (stage's set)")
    right.set_title("after each stage")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def settings(opts, files) -> dict:
    man = common.manifest().get("domains", {})
    return {
        "stages": [
            {"stage": 0, "domains": INITIAL},
            {"stage": 1, "update": "add", "domain": ADDED},
            {
                "stage": 2,
                "update": "partition",
                "domain": PARTITIONED,
                "parts": PARTS,
                "rule": f"a document goes to {PARTS[1]} when its text contains any of {list(TEST_MARKERS)}, else to {PARTS[0]}; "
                "train and eval files split by the same rule",
                "docs": {p: {s: _docs(files[p][s]) for s in ("train", "eval")} for p in PARTS},
            },
            {
                "stage": 3,
                "update": "revise",
                "domain": REVISED,
                "rule": "train data replaced by a disjoint slice of the same source (wordnet_rev, see data); same eval file",
            },
            {"stage": 4, "update": "remove", "domain": REMOVED},
        ],
        "data": {n: man.get(n) for n in INITIAL + [ADDED, "wordnet_rev"]},
        "model": f"random-init Llama preset {opts.model_preset!r} (hf_datamix.models), tied embeddings, embedded "
        "4096-token BPE tokenizer; the same init (seed) for every arm, one model trained through all stages",
        "steps_per_stage": opts.stage_steps,
        "tokens_per_step": opts.batch_size * opts.block_size,
        "training_per_stage": common.training_settings(opts, opts.stage_steps),
        "arms": ARMS,
        "olmix_strategy_args": olmix_args(opts, "<arm>"),
        "proxy": f"random-init Llama preset {opts.proxy_preset!r}, {opts.proxy_steps} steps x batch {opts.proxy_batch_size} x "
        f"block {opts.block_size} (the proxies take the run's block size), lr {opts.proxy_learning_rate}, scored on "
        f"{opts.proxy_eval_blocks} eval blocks per domain; swarm size default 3(m+1) over the swarm's coordinates",
        "auto": "reuse='auto': reopens up to 2 unaffected domains holding >= 25% of the previous law's sensitivity "
        "over the affected targets (hf_datamix.reuse defaults)",
        "recompute_removal": RECOMPUTE_REMOVAL_NOTE,
        "execution": "the 4 arms run as 4 concurrent processes on the one GPU (small, launch-bound models): wall "
        "times are measured under that sharing; data tokenised once beforehand (shared cache)",
        "eval": f"final per-domain loss on the first {opts.max_eval_blocks} eval blocks ({opts.block_size} tokens) of each "
        "domain's held-out file; average per-domain perplexity = mean of exp(loss) over the final set's 5 domains",
        "compute_note": "FLOPs from each arm's ledger (6N per trained token, 2N per forward-only token, N = "
        "non-embedding parameters of the model that ran: proxies counted as 'proxy')",
    }


def run_all(opts) -> None:
    started = time.perf_counter()
    os.makedirs(opts.out, exist_ok=True)
    files = unpack(opts.work)
    prepack_s = prepack(opts, files)
    print(f"prepared data in {time.perf_counter() - started:.1f}s (tokenising {prepack_s:.1f}s)", flush=True)
    path = os.path.join(opts.out, f"{RESULT_NAME}.json")
    result = common.header(opts, "olmix_reuse: mixture reuse across DomainSet updates")
    result["settings"] = settings(opts, files)
    result["settings"]["swarm_workers"] = (
        f"each olmix arm trains a swarm's proxies in {opts.swarm_workers} processes (ProxyRuns.run's rank/world_size "
        "split: member i in process i mod P; the benchmark starts the helpers, the library is unchanged)"
    )
    result["arms"] = {}
    result["prepare_s"] = time.perf_counter() - started
    arm_dir = os.path.join(opts.out, "arms")
    log_dir = os.path.join(opts.out, "logs")
    os.makedirs(arm_dir, exist_ok=True)
    os.makedirs(log_dir, exist_ok=True)
    procs = {}
    for arm in opts.arms.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "arm", "--arm", arm, "--arm-dir", arm_dir] + opts.passthrough
        log = open(os.path.join(log_dir, f"{arm}.log"), "w")
        procs[arm] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    common.write(path, result)
    deadline = started + opts.deadline_s
    while procs:
        time.sleep(1.0)
        for arm, (proc, log) in list(procs.items()):
            rc = proc.poll()
            if rc is None and time.perf_counter() < deadline:
                continue
            if rc is None:
                proc.terminate()  # our own child, by its handle
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                rc = f"stopped at the {opts.deadline_s}s deadline"
            log.close()
            del procs[arm]
            arm_file = os.path.join(arm_dir, f"{arm}.json")
            data = json.load(open(arm_file)) if os.path.isfile(arm_file) else {"arm": arm}
            data["returncode"] = rc
            if data.get("status") != "complete":
                data["status"] = "incomplete"
            result["arms"][arm] = data
            print(
                f"arm {arm} ended (rc {rc}) after {time.perf_counter() - started:.1f}s: {data.get('status')}",
                flush=True,
            )
            figures(result)
            result["elapsed_s"] = time.perf_counter() - started
            common.write(path, result)
    result["arms"] = {a: result["arms"][a] for a in ARMS if a in result["arms"]}
    result["status"] = "complete" if all(a.get("status") == "complete" for a in result["arms"].values()) else "partial"
    figures(result)
    result["elapsed_s"] = time.perf_counter() - started
    common.write(path, result)
    plot(result, os.path.join(opts.out, f"{RESULT_NAME}.png"))
    print(json.dumps({"figures": result["figures"], "targets": result["targets"]}, indent=1, default=str), flush=True)


# ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["stage", "all", "arm"])
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--work", default="/tmp/olmix_work")
    parser.add_argument("--corpus", default="/tmp/bigcorpus")
    parser.add_argument("--revision-cap", type=int, default=6_000_000, help="stage: text bytes of the revision slice")
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--arms", default=",".join(ARMS), help="all: the arms to run (default: every arm)")
    parser.add_argument("--arm-dir", default=None)
    parser.add_argument("--stage-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--model-preset", default="20m")
    parser.add_argument("--proxy-preset", default="small")
    parser.add_argument("--proxy-steps", type=int, default=60)
    parser.add_argument("--proxy-batch-size", type=int, default=32)
    parser.add_argument("--proxy-learning-rate", type=float, default=3e-3)
    parser.add_argument("--proxy-eval-blocks", type=int, default=32)
    parser.add_argument(
        "--swarm-size", type=int, default=None, help="proxies per swarm (default 3(m+1); smaller only for a CPU check)"
    )
    parser.add_argument("--swarm-workers", type=int, default=3, help="processes training one swarm's proxies")
    parser.add_argument("--law-starts", type=int, default=300)
    parser.add_argument("--max-eval-blocks", type=int, default=64)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline-s", type=float, default=480.0, help="all: stop arms still running after this")
    parser.add_argument("--commit", default=None)
    parser.add_argument("--tree-note", default=os.environ.get("OPMIX_TREE_NOTE"))
    opts = parser.parse_args()
    common.MODEL_PRESET = opts.model_preset
    if opts.command == "stage":
        stage(opts)
        return
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATAMIX_CACHE", os.path.join(opts.work, "packed"))
    # arguments an arm process inherits
    skip = {"command", "out", "arm", "arms", "arm_dir", "deadline_s", "corpus", "revision_cap", "commit", "tree_note"}
    opts.passthrough = []
    for key, value in vars(opts).items():
        if key not in skip and key != "passthrough" and value is not None:
            opts.passthrough += [f"--{key.replace('_', '-')}", str(value)]
    if opts.command == "arm":
        run_arm(opts)
    else:
        run_all(opts)


if __name__ == "__main__":
    main()
