"""benchmarks/instruct_quality.py at a tiny size on CPU: seeds, arms, the keys the checks read, targets, plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import task_files


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config",
    os.path.join(ROOT, "recipes", "configs", "instruct.yaml"),
    "--strategies",
    "on_policy_distill,sequential",
    "--initial_domains",
    "arith",
    "--added_domains",
    "book",
    "--steps_per_stage",
    "2",
    "--pretrain_steps",
    "2",
    "--task_eval_examples",
    "2",
    "--max_eval_blocks",
    "4",
    "--strategy_settings",
    '{"on_policy_distill": {"max_new_tokens": 2}}',
    "--disable_tqdm",
    "true",
]


def test_instruct_quality_runs_seeds_and_writes_the_arms(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "instruct_quality.py"),
            "--out",
            str(tmp_path / "run"),
            "--seeds",
            "0,1",
            "--results",
            str(results),
            *TINY,
            "--domains",
            task_files(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((results / "instruct_quality.json").read_text())
    assert payload["status"] == "complete" and [s["seed"] for s in payload["seeds"]] == [0, 1]
    assert set(payload["arms"]) == {"on_policy_distill", "sequential"}
    for arm in payload["arms"].values():
        assert len(arm["mean_task_error"]) == 2 and len(arm["total_flops"]) == 2
        assert all(0 <= e <= 1 for e in arm["mean_task_error"]) and all(f > 0 for f in arm["total_flops"])
        assert len(arm["mean_answer_nll"]) == 2 and all(n > 0 for n in arm["mean_answer_nll"])
        assert set(arm["forgetting"]) == {"arith", "book"}
    assert payload["arms"]["on_policy_distill"]["flops_by_kind"][0]["teacher"] > 0
    diff = payload["comparisons"]["on_policy_distill - sequential"]["earlier_tasks_error"]
    assert len(diff["per_seed"]) == 2 and len(diff["t_ci"]) == 2
    assert "on_policy_distill_retention_vs_sequential" in payload["targets"]
    assert (results / "instruct_quality.png").is_file()
    assert payload["command"].startswith("python3 benchmarks/instruct_quality.py")
