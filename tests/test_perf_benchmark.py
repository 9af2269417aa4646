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
    command = [sys.executable, "-m", "benchmarks.perf", "--quick", "--out", str(out), "--work", str(work)]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
        HF_DATAMIX_CACHE=str(tmp_path / "packed"),
    )
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=170, cwd=ROOT, env=env)
    assert run.returncode == 0, f"benchmarks.perf failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"

    result = json.loads((out / "perf.json").read_text())
    assert result["status"] == "complete" and result["quick"] is True
    for key in ("command", "commit", "device"):
        assert isinstance(result[key], str) and result[key], key
    assert "benchmarks/perf" in result["command"] and "--quick" in result["command"]
    assert result["software"]["torch"] and result["software"]["transformers"]
    assert "FlopCounterMode" in result["formulas"]["mfu"]

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
    assert set(overhead["ratios_vs_plain"]) == {
        "datamix_uniform",
        "datamix_uniform_dispatch_on",
        "datamix_op_mix_no_decision",
        "datamix_op_mix_decided_in_warmup",
    }
    assert overhead["variants"]["datamix_op_mix_no_decision@1"]["decisions"] == []
    assert [d["kind"] for d in overhead["variants"]["datamix_op_mix_decided_in_warmup@1"]["decisions"]] == ["decision"]
    assert overhead["loader_only"]["datamix_s_per_batch"] > 0
    assert parts["laws"]["small_case"]["speedup"] > 0 and parts["laws"]["proposal_64_domains"]["caps_respected"]
    assert set(parts["candidates"]["by_candidates"]) == {"1", "4", "12"}
    assert parts["candidates"]["plain_forward"]["seconds"] > 0
    speed = parts["speed"]
    tiny = speed["runs"]["tiny_eager"]
    assert tiny["tokens_per_s"] > 0
    # counted FLOPs with the formula beside them; on a CPU there is no peak: MFU None with the reason
    assert tiny["flops_per_token"] > 0 and 0.97 < tiny["counted_over_formula"] < 1.05
    for key in ("mfu", "mfu_from_formula", "mfu_6n_only"):
        assert tiny[key] is None or tiny[key] > 0, key
    if tiny["mfu"] is None:
        assert speed["peak_flops"] is None and tiny["mfu_none_reason"] and speed["mfu_none_reason"]
    for name in ("probe", "branch"):
        ratio = speed[f"{name}_vs_train_tokens_per_s"]
        assert (isinstance(ratio, float) and ratio > 0) or (
            ratio is None and speed[f"{name}_vs_train_tokens_per_s_reason"]
        )
        assert tiny["simulators"][name]["tokens_per_s"] > 0
    assert tiny["simulators"]["branch"]["snapshot_on_device"] is True
    scaling = parts["scaling"]
    assert scaling["op_mix_runs"]["tiny"][0]["domains"] == 4
    assert scaling["olmix_reuse_runs"]["tiny"][0]["domains"] == 4
    for kind in ("op_mix_runs", "olmix_reuse_runs"):
        for record in scaling[kind]["tiny"]:
            assert record["seconds"] > 0 and record["ledger_flops"] > 0
    assert result["scaling_plot"] and (out / "perf_scaling.png").stat().st_size > 0
    assert {t["target"].split(" ")[0] for t in result["targets"]} >= {"interleaver", "datamix_uniform"}


def test_counted_step_flops_match_the_formula_on_a_tiny_model():
    """FlopCounterMode's count of one step is within a few % of 6(N + V d) + 12 L d T per token."""
    from transformers import LlamaForCausalLM

    from benchmarks.perf.flops import formula_flops_per_token, step_flops
    from hf_datamix.models import llama_config

    config = llama_config("tiny", vocab_size=512)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    for block in (32, 128):
        counted = step_flops(model, batch=2, block=block) / (2 * block)
        formula, six_n = formula_flops_per_token(model, block)
        assert 1.0 <= counted / formula < 1.04, (block, counted, formula)
        assert counted > six_n
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients behind


def test_peak_table_lookup_by_device_name():
    from benchmarks.perf.flops import device_peak, mfu

    assert device_peak("NVIDIA H200", "bf16")[0] == 989.5e12
    assert device_peak("NVIDIA H100 80GB HBM3", "bf16")[0] == 989.5e12
    assert device_peak("NVIDIA H100 PCIe", "bf16")[0] == 756.5e12
    assert device_peak("NVIDIA H200 NVL", "bf16")[0] == 835.5e12
    assert device_peak("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156e12
    assert device_peak("NVIDIA A100 80GB PCIe", "fp32")[0] == 19.5e12
    assert device_peak("NVIDIA L40S", "bf16")[0] == 366.5e12  # not L4's
    assert device_peak("NVIDIA L4", "bf16")[0] == 121e12
    peak, reason = device_peak("Tesla T4", "bf16")
    assert peak is None and "not in" in reason and "PEAKS" in reason
    peak, reason = device_peak(None, "bf16")
    assert peak is None and reason
    assert mfu(1e6, 1e8, None) is None and mfu(1e6, 1e8, 1e15) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="precision"):
        device_peak("NVIDIA H200", "fp8")


def test_readme_performance_row_is_rendered_from_perf_json():
    """The README's performance row is readme_row(benchmarks/results/perf.json): regenerate it, never edit it."""
    from benchmarks.perf.readme import PERF_JSON, README, ROW_START, readme_row, replace_row

    with open(PERF_JSON, encoding="utf-8") as handle:
        row = readme_row(json.load(handle))
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    assert [line for line in text.split("\n") if line.startswith(ROW_START)] == [row], (
        "README performance row differs from perf.json: run python -m benchmarks.perf.readme"
    )
    assert replace_row(text, row) == text
    quick = {
        "device": "CPU; torch",
        "commit": "abc",
        "status": "complete",
        "parts": {
            "speed": {
                "runs": {"tiny_eager": {"tokens_per_s": 1e4, "mfu": None, "flops_per_step_counted": 1.0}},
                "peak_flops": None,
                "mfu_none_reason": "no accelerator",
                "probe_vs_train_tokens_per_s": 0.9,
                "branch_vs_train_tokens_per_s": None,
            }
        },
    }
    rendered = readme_row(quick)
    assert "tiny_eager 0.01 M tok/s (n/a)" in rendered and "probe tokens/s vs training: **0.90×**" in rendered
    assert "branch tokens/s vs training: not measured" in rendered


@pytest.mark.timeout(150)
def test_speed_variants_time_training_levers_on_the_largest_preset_and_bad_ones_are_named_first(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_DISABLED="true")
    base = [sys.executable, "-m", "benchmarks.perf", "--quick", "--parts", "speed", "--work", str(tmp_path / "w")]
    bad = subprocess.run(
        [*base, "--out", str(tmp_path / "bad"), "--speed-variants", '{"x": {"no_such_field": 1}}'],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "variant 'x' sets ['no_such_field']" in bad.stderr
    assert not (tmp_path / "bad" / "perf.json").exists()  # named before any part ran
    levers = '{"b4": {"per_device_train_batch_size": 4}}'
    run = subprocess.run(
        [*base, "--out", str(tmp_path / "out"), "--speed-variants", levers],
        capture_output=True, text=True, timeout=140, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    speed = json.loads((tmp_path / "out" / "perf.json").read_text())["parts"]["speed"]
    variant = speed["runs"]["small_eager_b4"]
    assert variant["variant"] == "b4" and variant["per_device_train_batch_size"] == 4
    assert variant["tokens_per_step"] == 4 * speed["settings"]["block_size"]
    assert speed["runs"]["small_eager"]["per_device_train_batch_size"] == 8  # the plain run keeps its batch
    fastest = speed["variants"]["fastest"]
    assert fastest["run"] in ("small_eager", "small_eager_b4")
    assert fastest["tokens_per_s"] == max(speed["runs"][k]["tokens_per_s"] for k in ("small_eager", "small_eager_b4"))
