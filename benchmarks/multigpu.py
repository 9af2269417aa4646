"""Several GPUs (issue 8): op_mix under DDP / FSDP / DeepSpeed, swarms spread over GPUs, resume on
another process count.  Writes ``<out>/multigpu.json`` (merged with what an earlier call wrote, so
the items can run in separate commands).

    python benchmarks/multigpu.py                          # every item, on every visible GPU
    python benchmarks/multigpu.py --items ddp,fsdp         # some items
    python benchmarks/multigpu.py --cpu --items ddp,resume # 1-2 gloo CPU processes, tiny model (the test)

Items:
  ddp        op_mix on 1, 2, 4 GPUs (accelerate_configs/ddp.yaml): equal global batch (the same
             samples, losses comparable) and equal per-device batch (throughput scaling).  Checks:
             every rank applies the same mixture at every step; the blocks all ranks trained on
             are, as a multiset, those of the 1-GPU run, with none shared by two ranks.
  fsdp       the same on 2 GPUs with accelerate_configs/fsdp.yaml (probes trained collectively).
  deepspeed  the same with accelerate_configs/deepspeed_zero2.yaml (needs `pip install deepspeed`).
  swarm      recipes/swarm.py, 16 members, on 1, 2, 4 GPUs: wall time.
  resume     a 2-process run checkpointed half-way, resumed on 1 (and 4) processes at the same
             global batch: same mixtures and blocks as the uninterrupted run.
  recipe     `accelerate launch --config_file accelerate_configs/ddp.yaml recipes/midtrain.py` (op_mix,
             three continual stages) on 2 and 4 GPUs, shortened, and with fsdp.yaml / deepspeed_zero2.yaml
             on 2 (a new trainer per stage prepares the same model again); every rank's log
             (--log_level_replica info) must show the same mixture at every decision.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import free_port, provenance, run_process_group  # noqa: E402

from hf_datamix.callbacks import DECISION_LOG  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = os.path.join(ROOT, "accelerate_configs")
ITEMS = ["ddp", "fsdp", "deepspeed", "swarm", "resume", "recipe"]


def log(message: str) -> None:
    print(f"[multigpu] {message}", flush=True)


def launch(
    config: str, processes: int, script: str, args: list[str], timeout: float, full_output: bool = False
) -> tuple[int, float, str]:
    """``accelerate launch`` one run; returns (exit code, wall seconds, output tail or all of it)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(free_port()),
        script,
        *args,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    try:
        done = run_process_group(command, env=env, timeout=timeout, cwd=ROOT)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        code, output = 124, f"timed out after {timeout}s: {error}"
    return code, time.perf_counter() - started, output if full_output else output[-3000:]


class Runner:
    def __init__(self, opts):
        self.opts, self.cpu = opts, opts.cpu
        self.work = opts.work or tempfile.mkdtemp(prefix="multigpu-")
        self.config_ddp = os.path.join(CONFIGS, "cpu.yaml" if self.cpu else "ddp.yaml")
        self.preset, self.block = ("tiny", 64) if self.cpu else ("20m", 256)
        self.steps, self.probe_steps = (12, 4) if self.cpu else (120, 30)
        self.global_batch = 8 if self.cpu else 64
        self.counts = [n for n in ((1, 2) if self.cpu else (1, 2, 4)) if n <= opts.gpus]

    def train(
        self, name: str, processes: int, per_device: int, config: str | None = None, extra=(), reuse: bool = False
    ) -> dict:
        """Launch one worker run; with ``reuse``, an earlier call's finished run in the same --work is read back."""
        out = os.path.join(self.work, name)
        if reuse and all(os.path.isfile(os.path.join(out, f"rank{r}.json")) for r in range(processes)):
            log(f"{name}: reusing the finished run in {out}")
            ranks = [json.load(open(os.path.join(out, f"rank{r}.json"), encoding="utf-8")) for r in range(processes)]
            return {"exit_code": 0, "launch_wall_s": None, "ranks": ranks, "output_tail": None}
        args = [
            "--out",
            out,
            "--preset",
            self.preset,
            "--per_device_batch",
            str(per_device),
            "--block_size",
            str(self.block),
            "--max_steps",
            str(self.steps),
            "--probe_steps",
            str(self.probe_steps),
            *extra,
        ]
        if self.cpu:
            args.append("--cpu")
        code, wall, tail = launch(
            config or self.config_ddp,
            processes,
            os.path.join(HERE, "multigpu_worker.py"),
            args,
            timeout=self.opts.run_timeout,
        )
        ranks = []
        for rank in range(processes):
            path = os.path.join(out, f"rank{rank}.json")
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    ranks.append(json.load(handle))
        log(f"{name}: exit {code}, {wall:.0f}s, {len(ranks)}/{processes} rank files")
        return {"exit_code": code, "launch_wall_s": wall, "ranks": ranks, "output_tail": tail if code else None}


def global_batches(ranks: list[dict]) -> list[collections.Counter]:
    """Per optimizer step, the blocks all ranks trained on (a multiset of block hashes)."""
    steps = []
    for record in ranks:
        rows = record["per_device_batch"] * record["grad_accum"]
        hashes = record["block_hashes"]
        for step, start in enumerate(range(0, len(hashes), rows)):
            if step == len(steps):
                steps.append(collections.Counter())
            steps[step].update(hashes[start : start + rows])
    return steps


def blocks_on_two_ranks_in_one_step(ranks: list[dict]) -> int:
    """Blocks that two ranks both trained on in the same step (a sharding bug if not 0)."""
    per_rank = []
    for record in ranks:
        rows = record["per_device_batch"] * record["grad_accum"]
        per_rank.append(
            [set(record["block_hashes"][i : i + rows]) for i in range(0, len(record["block_hashes"]), rows)]
        )
    count = 0
    for step in range(min(len(p) for p in per_rank)):
        seen = collections.Counter(h for p in per_rank for h in p[step])
        count += sum(1 for n in seen.values() if n > 1)
    return count


def mixture_difference(a: list[dict], b: list[dict]) -> float:
    """Largest weight difference between two runs' per-step mixtures."""
    if len(a) != len(b):
        return float("inf")
    return max((abs(x.get(k, 0.0) - y.get(k, 0.0)) for x, y in zip(a, b) for k in set(x) | set(y)), default=0.0)


def summarise(run: dict, reference: dict | None, skip_until: int) -> dict:
    """Agreement, block and loss checks of one launched run against the 1-process reference."""
    ranks = run["ranks"]
    if run["exit_code"] != 0 or not ranks or len(ranks) != ranks[0]["world_size"]:
        return {"ok": False, "exit_code": run["exit_code"], "output_tail": run["output_tail"]}
    first = ranks[0]
    steps = {int(k): v for k, v in first["step_seconds"].items() if int(k) > skip_until}
    step_s = statistics.median(steps.values()) if steps else None
    tokens_per_step = first["global_batch"] * first["block_size"]
    batches = global_batches(ranks)
    out = {
        "ok": True,
        "world_size": first["world_size"],
        "distributed_type": first["distributed_type"],
        "per_device_batch": first["per_device_batch"],
        "global_batch": first["global_batch"],
        "every_rank_same_mixture_every_step": all(r["mixture_by_step"] == first["mixture_by_step"] for r in ranks),
        "decisions": first["decisions"],
        "blocks_trained": sum(sum(b.values()) for b in batches),
        "blocks_on_two_ranks_in_one_step": blocks_on_two_ranks_in_one_step(ranks),
        "median_step_s_after_decision": step_s,
        "tokens_per_s": tokens_per_step / step_s if step_s else None,
        "train_wall_s": max(r["train_wall_s"] for r in ranks),
        "eval": first["eval"],
        "device": first["device"],
    }
    if reference and reference.get("ok") and reference["global_batch"] == first["global_batch"]:
        ref_rank = reference["_ranks"][0]
        ref_batches = global_batches(reference["_ranks"])
        out["steps_with_same_blocks_as_1_process"] = sum(a == b for a, b in zip(batches, ref_batches))
        out["steps"] = len(ref_batches)
        out["same_mixtures_as_1_process"] = first["mixture_by_step"] == ref_rank["mixture_by_step"]
        out["max_mixture_difference_vs_1_process"] = mixture_difference(
            first["mixture_by_step"], ref_rank["mixture_by_step"]
        )
        out["eval_loss_minus_1_process"] = {
            k: v - reference["eval"].get(k, float("nan")) for k, v in first["eval"].items()
        }
    out["_ranks"] = ranks
    return out


def item_training(runner: Runner, kind: str, results: dict) -> dict:
    g, counts = runner.global_batch, runner.counts
    skip = int(0.2 * runner.steps) + 2  # the decision step and the one after it are not timed
    out: dict = {
        "preset": runner.preset,
        "block_size": runner.block,
        "steps": runner.steps,
        "global_batch_equal": g,
        "probe_steps": runner.probe_steps,
    }
    reference = results.get("_reference")
    if reference is None:
        reference = summarise(runner.train("n1", 1, g, reuse=True), None, skip)
        results["_reference"] = reference
    if kind == "ddp":
        out["n1"] = reference
        for n in counts[1:]:
            out[f"n{n}_equal_global"] = summarise(runner.train(f"ddp{n}", n, g // n), reference, skip)
            out[f"n{n}_equal_per_device"] = summarise(runner.train(f"ddp{n}w", n, g), None, skip)
            base, weak = reference.get("tokens_per_s"), out[f"n{n}_equal_per_device"].get("tokens_per_s")
            if base and weak:
                out[f"n{n}_throughput_scaling"] = weak / base
        if not runner.cpu and len(counts) > 1:
            # The 20M model at 256-token blocks is bound by per-step overheads; this is the scaling at
            # recipes/configs/midtrain_gpu.yaml's model and block (60M, 1024 tokens, 32 per device).
            shape = ["--preset", "60m", "--block_size", "1024"]
            scale = {
                "preset": "60m",
                "block_size": 1024,
                "per_device_batch": 32,
                "n1": summarise(runner.train("gpucfg1", 1, 32, extra=shape), None, skip),
            }
            for n in counts[1:]:
                scale[f"n{n}"] = summarise(runner.train(f"gpucfg{n}", n, 32, extra=shape), None, skip)
                base, weak = scale["n1"].get("tokens_per_s"), scale[f"n{n}"].get("tokens_per_s")
                if base and weak:
                    scale[f"n{n}_throughput_scaling"] = weak / base
            out["midtrain_gpu_shape"] = scale
    else:
        config = os.path.join(CONFIGS, "fsdp.yaml" if kind == "fsdp" else "deepspeed_zero2.yaml")
        if kind == "deepspeed":
            try:
                import deepspeed  # noqa: F401
            except ImportError as error:
                return {"skipped": f"deepspeed is not installed here ({error})"}
        if runner.cpu:
            return {"skipped": f"{kind} needs GPUs (accelerate runs it on CUDA only)"}
        n = 2 if 2 in counts else None
        if n is None:
            return {"skipped": "needs 2 GPUs"}
        out[f"n{n}_equal_global"] = summarise(runner.train(f"{kind}{n}", n, g // n, config), reference, skip)
    return out


def item_swarm(runner: Runner) -> dict:
    out = {"members": 16, "by_processes": {}}
    preset, steps = ("tiny", 10) if runner.cpu else ("20m", 200)
    for n in runner.counts:
        folder = os.path.join(runner.work, f"swarm{n}")
        code, wall, tail = launch(
            runner.config_ddp,
            n,
            os.path.join(ROOT, "recipes", "swarm.py"),
            [
                "--output_dir",
                folder,
                "--swarm_size",
                "16",
                "--proxy_preset",
                preset,
                "--proxy_steps",
                str(steps),
                "--proxy_batch_size",
                "16",
            ],
            timeout=runner.opts.run_timeout,
        )
        out["by_processes"][str(n)] = {"exit_code": code, "wall_s": wall, "output_tail": tail if code else None}
        log(f"swarm on {n}: exit {code}, {wall:.0f}s")
    base = out["by_processes"].get("1", {}).get("wall_s")
    for record in out["by_processes"].values():
        if base and record["exit_code"] == 0:
            record["speedup_vs_1"] = base / record["wall_s"]
    out["proxy"] = {"preset": preset, "steps": steps, "batch_size": 16}
    return out


def item_resume(runner: Runner) -> dict:
    g, half = runner.global_batch, runner.steps // 2
    if 2 not in runner.counts:
        return {"skipped": "needs 2 processes"}
    skip = int(0.2 * runner.steps) + 2
    full = summarise(runner.train("resume_full2", 2, g // 2, extra=["--save_steps", str(half)]), None, skip)
    out = {"checkpoint_step": half, "uninterrupted_2_processes": full}
    checkpoint = os.path.join(runner.work, "resume_full2", f"checkpoint-{half}")
    for n in [1] + [c for c in runner.counts if c > 2]:
        resumed = summarise(runner.train(f"resume_{n}", n, g // n, extra=["--resume", checkpoint]), None, skip)
        if resumed.get("ok") and full.get("ok"):
            resumed["same_mixtures_as_uninterrupted"] = (
                resumed["_ranks"][0]["mixture_by_step"] == full["_ranks"][0]["mixture_by_step"]
            )
            # Every step after the checkpoint trains on the same global batch as the uninterrupted run.
            resumed["same_second_half_blocks_as_uninterrupted"] = (
                global_batches(resumed["_ranks"]) == global_batches(full["_ranks"])[half:]
            )
            resumed["eval_loss_minus_uninterrupted"] = {
                k: v - full["eval"].get(k, float("nan")) for k, v in resumed["eval"].items()
            }
        out[f"resumed_on_{n}"] = resumed
    return out


def item_recipe(runner: Runner) -> dict:
    """recipes/midtrain.py under accelerate DDP; the ranks' decisions are read back from their logs."""
    if runner.cpu:
        shape = [
            "--model_preset",
            "tiny",
            "--pretrain_steps",
            "6",
            "--max_steps",
            "12",
            "--block_size",
            "64",
            "--per_device_train_batch_size",
            "4",
            "--save_steps",
            "100",
            "--use_cpu",
            "true",
            "--probe_steps",
            "3",
            "--eval_blocks",
            "4",
            "--max_repetitions",
            "0",
        ]
    else:
        shape = [
            "--config",
            os.path.join(ROOT, "recipes", "configs", "midtrain_gpu.yaml"),
            "--model_preset",
            "20m",
            "--pretrain_steps",
            "60",
            "--max_steps",
            "180",
            "--block_size",
            "512",
            "--per_device_train_batch_size",
            "16",
            "--torch_compile",
            "false",
            "--save_steps",
            "1000",
            "--probe_steps",
            "20",
            "--eval_blocks",
            "16",
            "--probe_bf16",
            "true",
            "--max_repetitions",
            "0",
        ]
    out: dict = {"by_processes": {}, "args": shape}
    runs = [("ddp", runner.config_ddp, n) for n in runner.counts if n >= 2]
    if not runner.cpu and 2 in runner.counts:  # a new trainer per stage re-prepares the same model
        runs.append(("fsdp", os.path.join(CONFIGS, "fsdp.yaml"), 2))
        if importlib.util.find_spec("deepspeed") is not None:
            runs.append(("deepspeed", os.path.join(CONFIGS, "deepspeed_zero2.yaml"), 2))
    runs = [run for run in runs if run[0] in runner.opts.recipe_backends.split(",")]
    for kind, config, n in runs:
        key = str(n) if kind == "ddp" else f"{kind}_{n}"
        folder = os.path.join(runner.work, f"recipe_{key}")
        code, wall, output = launch(
            config,
            n,
            os.path.join(ROOT, "recipes", "midtrain.py"),
            [*shape, "--output_dir", folder, "--log_level", "info", "--log_level_replica", "info"],
            timeout=runner.opts.run_timeout,
            full_output=True,
        )
        by_rank: dict = collections.defaultdict(dict)
        for rank, _world, stage, step, mixture in DECISION_LOG.findall(output):
            by_rank[int(rank)][f"stage {stage} step {step}"] = mixture
        history = os.path.join(folder, "mixtures.json")
        decisions = (
            [r for r in json.load(open(history, encoding="utf-8")) if r["kind"] == "decision"]
            if os.path.isfile(history)
            else []
        )
        record = {
            "exit_code": code,
            "wall_s": wall,
            "ranks_logging_decisions": sorted(by_rank),
            "decisions_in_mixtures_json": len(decisions),
            "every_rank_logged_every_decision": len(by_rank) == n
            and all(len(d) == len(decisions) for d in by_rank.values()),
            "every_rank_same_mixture_every_decision": len(by_rank) == n
            and all(d == by_rank[0] for d in by_rank.values()),
            "decisions_rank0_log": by_rank.get(0, {}),
            # Each continual stage's model, saved for from_pretrained (also under FSDP's sharded checkpoints).
            "stage_models_saved": sorted(
                d
                for d in os.listdir(folder)
                if d.startswith("stage-") and os.path.isfile(os.path.join(folder, d, "final", "model.safetensors"))
            )
            if os.path.isdir(folder)
            else [],
            "final_line": next(
                (line for line in output.splitlines()[::-1] if "final average eval loss" in line), None
            ),
            "output_tail": output[-3000:] if code else None,
        }
        out["by_processes"][key] = record
        log(
            f"recipe {kind} on {n}: exit {code}, {wall:.0f}s, ranks agree: {record['every_rank_same_mixture_every_decision']}"
        )
    return out


def strip(value):
    """Drop the per-rank raw records (hashes, per-step times) before writing the JSON."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default=",".join(ITEMS))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--gpus", type=int, default=None, help="processes available (default: visible GPUs)")
    parser.add_argument("--cpu", action="store_true", help="gloo CPU processes, tiny model (the test)")
    parser.add_argument("--commit", default=None)
    parser.add_argument("--recipe-backends", default="ddp,fsdp,deepspeed", help="backends of the recipe item")
    parser.add_argument("--run-timeout", type=float, default=420.0, help="seconds per launched run")
    opts = parser.parse_args(argv)
    import torch

    if opts.gpus is None:
        opts.gpus = 2 if opts.cpu else torch.cuda.device_count()
    items = [i.strip() for i in opts.items.split(",") if i.strip()]
    unknown = sorted(set(items) - set(ITEMS))
    if unknown:
        parser.error(f"unknown items {unknown}; choose from {ITEMS}")
    if not opts.cpu and opts.gpus < 1:
        parser.error("no GPU is visible; use --cpu for the gloo CPU check")
    path = os.path.join(opts.out, "multigpu.json")
    result = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {"items": {}, "runs": []}
    runner, state = Runner(opts), {}
    call = {
        **provenance(
            "multigpu",
            opts.commit,
            commit_env="MULTIGPU_COMMIT",
            argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
        ),
        "processes_available": opts.gpus,
        "backend": "gloo (CPU)" if opts.cpu else "nccl",
        "items": items,
    }
    for item in items:
        log(f"item {item}")
        if item in ("ddp", "fsdp", "deepspeed"):
            record = item_training(runner, item, state)
        elif item == "swarm":
            record = item_swarm(runner)
        elif item == "recipe":
            record = item_recipe(runner)
        else:
            record = item_resume(runner)
        result["items"][item] = {**strip(record), "run": call["command"], "commit": call["commit"]}
        os.makedirs(opts.out, exist_ok=True)
        result["runs"] = [r for r in result["runs"] if r["items"] != items] + [call]
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
