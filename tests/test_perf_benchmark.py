"""python -m benchmarks.perf --quick runs end to end on CPU and writes every part's figures (issue 7)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ["interleaver", "overhead", "laws", "candidates", "speed", "scaling"]


def numbers(value):
    """Every int/float inside a JSON value (bools are not numbers here)."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)


@pytest.mark.timeout(180)
def test_quick_perf_run_records_every_part(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, "-m", "benchmarks.perf", "--quick", "--out", str(out),
               "--work", str(work)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_DISABLED="true",
               HF_DATAMIX_CACHE=str(tmp_path / "packed"))
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=170, cwd=ROOT, env=env)
    assert run.returncode == 0, f"benchmarks.perf failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"

    result = json.loads((out / "perf.json").read_text())
    assert result["status"] == "complete" and result["quick"] is True
    for key in ("command", "commit", "device"):
        assert isinstance(result[key], str) and result[key], key
    assert "benchmarks/perf" in result["command"] and "--quick" in result["command"]
    assert result["software"]["torch"] and result["software"]["transformers"]
    assert "989.5e12" in result["formulas"]["mfu"]

    assert list(result["parts"]) == PARTS
    for name, part in result["parts"].items():
        assert "error" not in part, f"part {name} failed: {part.get('error')}\n{part.get('traceback', '')}"
        values = list(numbers(part))
        assert values, f"part {name} holds no numbers"
        assert all(math.isfinite(v) for v in values), f"part {name} holds a non-finite number"

    parts = result["parts"]
    inter = parts["interleaver"]
    assert inter["interleaver_blocks_per_s"] > 0 and inter["speedup_vs_map"] > 0
    assert inter["ratio_to_gpu_20m_consumption"] > 0
    overhead = parts["overhead"]
    assert set(overhead["ratios_vs_plain"]) == {"datamix_uniform", "datamix_uniform_dispatch_on",
                                                "datamix_op_mix_no_decision", "datamix_op_mix_decided_in_warmup"}
    assert overhead["variants"]["datamix_op_mix_no_decision@1"]["decisions"] == []
    assert [d["kind"] for d in overhead["variants"]["datamix_op_mix_decided_in_warmup@1"]["decisions"]] == ["decision"]
    assert overhead["loader_only"]["datamix_s_per_batch"] > 0
    assert parts["laws"]["small_case"]["speedup"] > 0 and parts["laws"]["proposal_64_domains"]["caps_respected"]
    assert set(parts["candidates"]["by_candidates"]) == {"1", "4", "12"}
    assert parts["candidates"]["plain_forward"]["seconds"] > 0
    assert parts["speed"]["runs"]["tiny_eager"]["tokens_per_s"] > 0
    scaling = parts["scaling"]
    assert scaling["op_mix_runs"]["tiny"][0]["domains"] == 4
    assert scaling["olmix_reuse_runs"]["tiny"][0]["domains"] == 4
    for kind in ("op_mix_runs", "olmix_reuse_runs"):
        for record in scaling[kind]["tiny"]:
            assert record["seconds"] > 0 and record["ledger_flops"] > 0
    assert result["scaling_plot"] and (out / "perf_scaling.png").stat().st_size > 0
    assert {t["target"].split(" ")[0] for t in result["targets"]} >= {"interleaver", "datamix_uniform"}
