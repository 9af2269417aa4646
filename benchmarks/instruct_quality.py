"""Continual instruction tuning, measured (issue 20): op_mix vs on_policy_distill, sequential, replay, retrain.

    python benchmarks/instruct_quality.py --out DIR [--seeds 0,1,2] [--config recipes/configs/instruct_quality_gpu.yaml]
        [recipe flags ...]

Runs ``recipes/instruct.py`` once per seed (every arm over the same stages from the same base within a
seed: the recipe pretrains one base and copies it to each arm), then writes
``benchmarks/results/instruct_quality.json`` (rewritten after every seed) and ``instruct_quality.png``:
per arm and seed the final mean task error over all tasks, the mean answer NLL, the error on the
earlier tasks, forgetting per task and the FLOPs by kind (``generate`` and ``teacher`` included); the
paired differences (t and bootstrap intervals over seeds, quality-protocol.md rule 1) and the issue's
targets:

* on_policy_distill better than sequential on retention (earlier tasks' error; interval excluding 0);
* op_mix within 1 point of on_policy_distill's final mean task error at <= 0.1 x its FLOPs;
* op_mix and on_policy_distill better than sequential on the earlier tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from _common import RESULTS_DIR, provenance, read_json, write_json  # noqa: E402
from mixbench.stats import paired_difference  # noqa: E402


ROOT = os.path.dirname(HERE)
RECIPE = os.path.join(ROOT, "recipes", "instruct.py")
DEFAULT_CONFIG = os.path.join(ROOT, "recipes", "configs", "instruct_quality_gpu.yaml")


def collect(arms: dict, summary: dict) -> None:
    """Append one seed's recipe summary to ``arms`` (lists per seed)."""
    for run in summary["runs"]:
        arm = arms.setdefault(
            run["strategy"],
            {
                "mean_task_error": [],
                "total_flops": [],
                "mean_answer_nll": [],
                "earlier_tasks_error": [],
                "forgetting": {},
                "final_error": [],
                "flops_by_kind": [],
            },
        )
        arm["mean_task_error"].append(run["final_avg_error"])
        arm["total_flops"].append(run["total_flops"])
        arm["mean_answer_nll"].append(run.get("final_avg_answer_nll"))
        arm["earlier_tasks_error"].append(run["earlier_tasks_avg_error"])
        arm["final_error"].append(run["final_error"])
        arm["flops_by_kind"].append(run["flops_by_kind"])
        for task, value in (run.get("forgetting") or {}).items():
            arm["forgetting"].setdefault(task, []).append(value)


def comparisons(arms: dict) -> dict:
    """Paired differences (a − b per seed) the targets read; empty below 2 seeds."""
    pairs = {
        "on_policy_distill - sequential": ("on_policy_distill", "sequential"),
        "op_mix - sequential": ("op_mix", "sequential"),
        "op_mix - on_policy_distill": ("op_mix", "on_policy_distill"),
    }
    out = {}
    for label, (a, b) in pairs.items():
        if a not in arms or b not in arms or len(arms[a]["mean_task_error"]) < 2:
            continue
        entry = {"mean_task_error": paired_difference(arms[a]["mean_task_error"], arms[b]["mean_task_error"])}
        earlier_a, earlier_b = arms[a]["earlier_tasks_error"], arms[b]["earlier_tasks_error"]
        if None not in earlier_a and None not in earlier_b:
            entry["earlier_tasks_error"] = paired_difference(earlier_a, earlier_b)
        out[label] = entry
    return out


def targets(arms: dict, diffs: dict) -> dict:
    out = {}
    retention = diffs.get("on_policy_distill - sequential", {}).get("earlier_tasks_error")
    if retention:
        out["on_policy_distill_retention_vs_sequential"] = {
            "difference": retention["mean"],
            "t_ci": retention["t_ci"],
            "target": "< 0, interval excluding 0",
            "met": retention["t_ci"][1] < 0,
        }
    if "op_mix" in arms and "on_policy_distill" in arms:
        gap = 100 * (
            np.mean(arms["op_mix"]["mean_task_error"]) - np.mean(arms["on_policy_distill"]["mean_task_error"])
        )
        ratio = np.mean(arms["op_mix"]["total_flops"]) / np.mean(arms["on_policy_distill"]["total_flops"])
        out["op_mix_error_gap_points_vs_on_policy_distill"] = {"value": float(gap), "target": "<= 1", "met": gap <= 1}
        out["op_mix_flops_ratio_vs_on_policy_distill"] = {
            "value": float(ratio),
            "target": "<= 0.1",
            "met": ratio <= 0.1,
        }
    for arm in ("op_mix", "on_policy_distill"):
        d = diffs.get(f"{arm} - sequential", {}).get("earlier_tasks_error")
        if d:
            out[f"{arm}_earlier_tasks_vs_sequential"] = {
                "difference": d["mean"],
                "t_ci": d["t_ci"],
                "target": "< 0",
                "met": d["mean"] < 0,
            }
    return out


def plot(arms: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, arm in arms.items():
        x, y = np.asarray(arm["total_flops"], float), 100 * np.asarray(arm["mean_task_error"], float)
        ax.scatter(x, y, s=18, alpha=0.5)
        ax.errorbar(x.mean(), y.mean(), yerr=y.std(ddof=1) if len(y) > 1 else None, fmt="o", capsize=3)
        ax.annotate(name, (x.mean(), y.mean()), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(
        xscale="log",
        xlabel="overall FLOPs (ledger: train, probes, eval, generate, teacher)",
        ylabel="final mean task error over all tasks (%)",
        title="Continual instruction tuning (each point a seed; mean ± sd)",
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="one recipe run per seed, all arms within it")
    parser.add_argument("--out", required=True, help="working folder; one recipe run per seed under seed<k>/")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--results", default=RESULTS_DIR)
    parser.add_argument("--no_plot", action="store_true")
    opts, recipe_flags = parser.parse_known_args()
    seeds = [int(s) for s in opts.seeds.split(",")]
    path = os.path.join(opts.results, "instruct_quality.json")
    payload = provenance("instruct_quality", commit_env="OPMIX_COMMIT", software=("trl",))
    with open(opts.config, encoding="utf-8") as handle:
        payload.update(
            {"config": handle.read(), "recipe_flags": recipe_flags, "seeds": [], "arms": {}, "status": "running"}
        )
    for seed in seeds:
        out = os.path.join(opts.out, f"seed{seed}")
        command = [
            sys.executable,
            RECIPE,
            "--config",
            opts.config,
            "--output_dir",
            out,
            *recipe_flags,
            "--seed",
            str(seed),
        ]
        started = time.time()
        # This checkout's hf_datamix, whatever is installed.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
        done = subprocess.run(command, check=False, cwd=ROOT, env=env)
        summary = read_json(os.path.join(out, "summary.json"))
        if done.returncode != 0 or summary is None:
            payload["status"] = f"failed at seed {seed} (recipe exit code {done.returncode})"
            write_json(path, payload)
            sys.exit(1)
        payload["seeds"].append(
            {
                "seed": seed,
                "wall_seconds": time.time() - started,
                "tasks": summary["tasks"],
                "command": " ".join(command[1:]),
            }
        )
        collect(payload["arms"], summary)
        payload["comparisons"] = comparisons(payload["arms"])
        payload["targets"] = targets(payload["arms"], payload["comparisons"])
        write_json(path, payload)  # partial-safe: a cut run keeps the seeds done
    payload["status"] = "complete"
    write_json(path, payload)
    if not opts.no_plot:
        plot(payload["arms"], os.path.join(opts.results, "instruct_quality.png"))
    print(json.dumps(payload["targets"], indent=1))


if __name__ == "__main__":
    main()
