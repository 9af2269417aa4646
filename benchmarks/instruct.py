"""Benchmark of continual instruction tuning (issue 5): op_mix vs on_policy_distill, sequential, replay, retrain.

    python benchmarks/instruct.py --out DIR [--config recipes/configs/instruct_gpu.yaml] [recipe flags ...]

Runs ``recipes/instruct.py`` (every strategy over the same task stages from the same base model),
then reads its ``summary.json`` and writes ``benchmarks/results/instruct.json`` and ``instruct.png``:
final average task error over all tasks seen, error on the earlier tasks (retention), and overall
FLOPs (the ledger: training, probes, candidate scoring, generation, teacher passes) per strategy,
and the paper's targets: op_mix within 1 point of on_policy_distill's average error with <= 5 % of
its FLOPs, and lower error than sequential on the earlier tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from opmix import RESULTS_DIR, header, write  # noqa: E402


RECIPE = os.path.join(os.path.dirname(HERE), "recipes", "instruct.py")
DEFAULT_CONFIG = os.path.join(os.path.dirname(HERE), "recipes", "configs", "instruct_gpu.yaml")


def targets(runs: dict) -> dict:
    op, opd, seq = runs.get("op_mix"), runs.get("on_policy_distill"), runs.get("sequential")
    out = {}
    if op and opd:
        gap = 100 * (op["final_avg_error"] - opd["final_avg_error"])
        share = 100 * op["total_flops"] / opd["total_flops"]
        out["error_gap_points_vs_on_policy_distill"] = {"value": gap, "target": "<= 1", "met": gap <= 1.0}
        out["flops_percent_of_on_policy_distill"] = {"value": share, "target": "<= 5", "met": share <= 5.0}
    if op and seq and op["earlier_tasks_avg_error"] is not None:
        met = op["earlier_tasks_avg_error"] < seq["earlier_tasks_avg_error"]
        out["retention_vs_sequential"] = {
            "op_mix_earlier_error": op["earlier_tasks_avg_error"],
            "sequential_earlier_error": seq["earlier_tasks_avg_error"],
            "met": met,
        }
    return out


def plot(runs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in runs.items():
        ax.scatter(run["total_flops"], 100 * run["final_avg_error"], s=40)
        ax.annotate(
            name,
            (run["total_flops"], 100 * run["final_avg_error"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("overall FLOPs (ledger)")
    ax.set_ylabel("final average task error over all tasks (%)")
    ax.set_title("Continual instruction tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="working folder of the recipe run")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--results", default=RESULTS_DIR)
    parser.add_argument("--commit", default=None)
    parser.add_argument("--tree-note", default=os.environ.get("OPMIX_TREE_NOTE"))
    opts, recipe_flags = parser.parse_known_args()
    payload = header(opts, "instruct")
    command = [sys.executable, RECIPE, "--config", opts.config, "--output_dir", opts.out, *recipe_flags]
    payload["recipe_command"] = " ".join(command[1:])
    with open(opts.config, encoding="utf-8") as handle:
        payload["config"] = handle.read()
    started = time.time()
    done = subprocess.run(command, check=False)
    payload["wall_seconds"] = time.time() - started
    summary_path = os.path.join(opts.out, "summary.json")
    if done.returncode != 0 or not os.path.isfile(summary_path):
        payload["status"] = f"failed (recipe exit code {done.returncode})"
        write(os.path.join(opts.results, "instruct.json"), payload)
        sys.exit(1)
    with open(summary_path, encoding="utf-8") as handle:
        summary = json.load(handle)
    runs = {run["strategy"]: run for run in summary["runs"]}
    payload.update({"status": "complete", "tasks": summary["tasks"], "runs": runs, "targets": targets(runs)})
    write(os.path.join(opts.results, "instruct.json"), payload)
    plot(runs, os.path.join(opts.results, "instruct.png"))
    print(json.dumps(payload["targets"], indent=1))


if __name__ == "__main__":
    main()
