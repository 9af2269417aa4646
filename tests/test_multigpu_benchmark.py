"""benchmarks/multigpu.py on two gloo CPU processes: the checks it will make on GPUs hold here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_items(tmp_path, items: str) -> dict:
    """benchmarks/multigpu.py --cpu on two gloo processes; the items of the multigpu.json it writes."""
    command = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "multigpu.py"),
        "--cpu",
        "--items",
        items,
        "--out",
        str(tmp_path),
        "--work",
        str(tmp_path / "work"),
        "--commit",
        "test",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.load(open(tmp_path / "multigpu.json"))["items"]


def test_op_mix_on_two_processes_agrees_and_resumes_on_one(tmp_path):
    items = run_items(tmp_path, "ddp,resume")
    ddp = items["ddp"]
    for key in ("n1", "n2_equal_global", "n2_equal_per_device"):
        record = ddp[key]
        assert record["ok"], record
        assert [d["kind"] for d in record["decisions"]] == ["decision"]  # op_mix decided (collectively on 2)
        assert record["every_rank_same_mixture_every_step"] and record["blocks_on_two_ranks_in_one_step"] == 0
    same_global = ddp["n2_equal_global"]
    assert same_global["world_size"] == 2 and same_global["global_batch"] == ddp["n1"]["global_batch"]
    assert same_global["blocks_trained"] == ddp["n1"]["blocks_trained"]
    assert same_global["steps_with_same_blocks_as_1_process"] == same_global["steps"]  # each step's global batch
    # the probes see the same samples at 1 and 2 processes, so the decision agrees up to float error
    assert same_global["max_mixture_difference_vs_1_process"] < 0.01
    assert ddp["n2_equal_per_device"]["blocks_trained"] == 2 * ddp["n1"]["blocks_trained"]
    resumed = items["resume"]["resumed_on_1"]
    assert resumed["ok"] and resumed["world_size"] == 1
    assert resumed["same_mixtures_as_uninterrupted"] and resumed["same_second_half_blocks_as_uninterrupted"]


def test_midtrain_recipe_on_two_processes_logs_the_same_decisions_on_every_rank(tmp_path):
    record = run_items(tmp_path, "recipe")["recipe"]["by_processes"]["2"]
    assert record["exit_code"] == 0, record["output_tail"]
    assert record["ranks_logging_decisions"] == [0, 1]  # --log_level_replica info reaches hf_datamix's logger
    assert record["decisions_in_mixtures_json"] == 3  # one per continual stage
    assert record["every_rank_logged_every_decision"] and record["every_rank_same_mixture_every_decision"]
    assert record["final_line"] is not None
    assert record["stage_models_saved"] == ["stage-1", "stage-2", "stage-3"]


def test_a_timed_out_launch_leaves_no_worker_behind(tmp_path):
    from benchmarks._common import free_port, run_process_group

    # A launcher that starts a long-lived worker and waits on it, like accelerate launch.
    pid_file = tmp_path / "worker.pid"
    script = f"import subprocess, sys; w = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(w.pid)); w.wait()"
    with pytest.raises(subprocess.TimeoutExpired):
        run_process_group([sys.executable, "-c", script], timeout=3)
    worker = int(pid_file.read_text())
    for _ in range(50):  # killed with the group (subprocess.run kills only the launcher); init reaps it
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"worker {worker} outlived its launcher's timeout")
    assert run_process_group([sys.executable, "-c", "print('ok')"], timeout=60).stdout == "ok\n"
    ports = {free_port() for _ in range(3)}
    assert all(1024 < port < 65536 for port in ports)
