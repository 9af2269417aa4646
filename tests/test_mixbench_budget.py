"""mixbench's time budget: a worker does not train a prefix toward a decision point where none of its
units could end before the deadline."""

from __future__ import annotations

import os
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from mixbench.fidelity import FidelityPlan, drop_unreachable  # noqa: E402
from mixbench.runner import Budget  # noqa: E402


def test_units_beyond_a_prefix_that_cannot_fit_are_dropped():
    plan = FidelityPlan(set_name="five")  # 1400 steps: the points are at steps 280 and 700
    costs = dict(plan.units())
    pending = {0.2: [], 0.5: ["0.5/oracle/0", "0.5/sim/branches_quarter"]}
    budget = Budget(100.0)
    budget.observe(cost=100, seconds=10.0)  # 0.1 s per step: 1000 steps fit, with the margin ~870
    skipped = []
    drop_unreachable(pending, 280, plan, budget, skipped.append)
    # 420 prefix steps + 700 oracle steps do not fit; 420 + a quarter-branches unit do.
    assert costs["0.5/oracle/0"] + 420 > 870 > costs["0.5/sim/branches_quarter"] + 420
    assert pending[0.5] == ["0.5/sim/branches_quarter"]
    assert len(skipped) == 1 and "0.5/oracle/0" in skipped[0] and "420 prefix steps" in skipped[0]
    drop_unreachable(pending, 700, plan, budget, skipped.append)  # at the point itself: no prefix left
    assert pending[0.5] == ["0.5/sim/branches_quarter"]


def test_the_store_s_pace_checks_a_call_s_first_unit_and_names_units_longer_than_a_call(tmp_path):
    import json
    import subprocess

    from mixbench.quality import QualityPlan
    from mixbench.runner import measured_rate, unit_cost

    plan = QualityPlan("skewed", arms=("natural", "uniform", "op_mix_design", "uniform_forked"), seeds=(0, 1))
    assert unit_cost(plan, "natural/0") == plan.cost("natural") == 1400
    assert unit_cost(plan, "no_such_arm/0") is None
    units = {"natural/0": {"seconds": 70.0}, "uniform/0": {"seconds": 84.0}, "op_mix_design/0": {"seconds": 0}}
    rate = measured_rate(plan, units)
    assert rate == {"seconds_per_cost": 84.0 / 1400, "units": 2}  # the median of 0.05 and 0.06 (upper of two)
    # A call for one arm the store has never run is paced by the store's other arms, costed as the table has them.
    alone = QualityPlan("skewed", arms=("op_mix_design_redecide",), seeds=(3, 4))
    assert unit_cost(alone, "natural/0") == 1400 and unit_cost(alone, "op_mix_design/0") == plan.cost("op_mix_design")
    assert measured_rate(alone, units) == rate
    assert measured_rate(plan, {}) is None
    # without a pace the first unit always starts; with the store's it is held to the deadline as well
    assert Budget(60.0).allows(1400) and not Budget(60.0, rate["seconds_per_cost"]).allows(1400)
    fidelity = FidelityPlan(set_name="five")
    assert unit_cost(fidelity, "0.2/oracle/0") == dict(fidelity.units())["0.2/oracle/0"]

    store = tmp_path / "quality-skewed-gpu.json"
    store.write_text(json.dumps({"settings": plan.settings(), "units": units, "calls": [], "replicates": {}}))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.mixbench", "quality", "--set", "skewed", "--arms", ",".join(plan.arms)]
        + ["--seeds", "0,1", "--store", str(store), "--dry-run", "--budget-s", "100", "--work", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "median of 2 finished units" in out
    assert "longer than one call's --budget-s 100: op_mix_design+uniform_forked/1 (~" in out
    assert "left out: uniform_forked/0" in out  # op_mix_design/0 is done without it


def test_merge_saves_a_cut_off_call_s_units_even_in_a_dry_run_and_report_keeps_variants_to_fidelity(tmp_path):
    import json
    import subprocess

    from mixbench.__main__ import _variant
    from mixbench.runner import WorkerFile

    plan = FidelityPlan(set_name="five", planned=True, points=(0.2,))
    store = tmp_path / "fidelity_planned-five-gpu.json"
    store.write_text(json.dumps({"settings": plan.settings(), "units": {}, "calls": [], "replicates": {}}))
    cut = tmp_path / "cut"  # the worker file a call left when it was killed before saving its store
    cut.mkdir()
    worker = WorkerFile(str(cut / "worker-0.json"), plan.settings(), {"command": "cut off"})
    worker.add("0.2/oracle/3", {"test_mean": 2.0, "seconds": 50.0})
    command = [sys.executable, "-m", "benchmarks.mixbench", "fidelity", "--set", "five", "--planned", "--points"]
    out = subprocess.run(
        [*command, "0.2", "--store", str(store), "--merge", str(cut), "--dry-run", "--work", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "merged 1 new unit(s)" in out and "1 units done, 15 pending" in out
    saved = json.loads(store.read_text())
    assert list(saved["units"]) == ["0.2/oracle/3"] and saved["calls"] == [{"command": "cut off"}]

    class Opts:
        planned, prefix = True, "natural"

    for command, name in [
        ("fidelity", "fidelity_planned_natural"),
        ("quality", "quality"),
        ("baselines", "baselines"),
    ]:
        Opts.command = command
        assert _variant(Opts) == name  # `report --planned` must not look for a planned quality store


def test_a_call_stopped_by_sigterm_saves_and_exports_what_its_worker_finished(tmp_path, monkeypatch):
    import json
    import signal

    from mixbench import __main__ as mixbench_main
    from mixbench import fidelity

    def worker_killed_mid_run(plan, keys, work, out, budget, **kwargs):
        out.add(keys[0], {"test_mean": 2.0, "seconds": 50.0})  # one unit finished ...
        os.kill(os.getpid(), signal.SIGTERM)  # ... then `timeout` stops the call during the next

    monkeypatch.setattr(mixbench_main, "prepare", lambda *args: {"a": 1})  # no data packed: the worker is fake
    monkeypatch.setattr(fidelity, "run_worker", worker_killed_mid_run)
    store, export, before = tmp_path / "fidelity-five-gpu.json", tmp_path / "export", signal.getsignal(signal.SIGTERM)
    argv = ["fidelity", "--set", "five", "--points", "0.2", "--store", str(store), "--work", str(tmp_path / "w")]
    with pytest.raises(SystemExit, match="stopped by signal"):
        mixbench_main.main([*argv, "--scratch", str(tmp_path / "s"), "--export", str(export)])
    assert list(json.loads(store.read_text())["units"]) == ["0.2/oracle/0"]
    assert json.loads((export / store.name).read_text())["units"] == json.loads(store.read_text())["units"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the call's only


def test_each_kind_of_fidelity_unit_is_paced_by_its_own_measured_seconds():
    from mixbench.runner import measured_rate

    plan = FidelityPlan(set_name="five", points=(0.2,))
    costs = dict(plan.units())
    assert (
        plan.unit_kind("0.2/oracle/3") == "oracle" and plan.unit_kind("0.2/sim/lora_annealed") == "sim/lora_annealed"
    )
    # as measured on the H200: oracle units at 0.046 s a step, a LoRA unit (which compiles its probes) at 0.066
    units = {f"0.2/oracle/{i}": {"seconds": 0.046 * costs[f"0.2/oracle/{i}"]} for i in range(3)}
    units["0.2/sim/lora"] = {"seconds": 0.066 * costs["0.2/sim/lora"]}
    rate = measured_rate(plan, units)
    assert rate["seconds_per_cost"] == pytest.approx(0.046) and rate["by_kind"]["sim/lora"] == pytest.approx(0.066)
    # 38 s left (the call that ran over): by the one rate the LoRA unit (~33 s with the margin) would start;
    # by its own (~48 s) it is left for the next call; a kind never measured falls back to the one rate
    budget = Budget(38.0, rate["seconds_per_cost"], rate["by_kind"])
    assert Budget(38.0, rate["seconds_per_cost"]).allows(costs["0.2/sim/lora"])
    assert not budget.allows(costs["0.2/sim/lora"], kind="sim/lora")
    assert budget.allows(costs["0.2/sim/branches_quarter"], kind="sim/branches_quarter")
    budget.observe(costs["0.2/sim/branches_quarter"], 1.0, "sim/branches_quarter")
    assert budget.by_kind["sim/branches_quarter"] == pytest.approx(1.0 / costs["0.2/sim/branches_quarter"])


def test_a_shape_s_first_call_is_paced_from_another_shape_s_stores_by_their_flops_per_step(tmp_path):
    import json
    import subprocess

    from mixbench.common import SHAPES, flops_per_token
    from mixbench.quality import QualityPlan

    gpu, big = SHAPES["gpu"], SHAPES["60m"]
    ratio = big.flops_per_step / gpu.flops_per_step
    # same tokens per step, so the ratio is per token: 60m's non-embedding, head and attention terms are larger
    assert big.tokens_per_step == gpu.tokens_per_step and 2.0 < ratio < 3.5
    assert flops_per_token("60m", 1024) / flops_per_token("60m", 512) > 1  # attention grows with the block

    def dry_run(*stores):
        for name, units in stores:
            plan = QualityPlan("five" if "five" in name else "skewed", arms=("natural", "uniform"), seeds=(0, 1))
            (tmp_path / name).write_text(
                json.dumps({"settings": plan.settings(), "units": units, "calls": [], "replicates": {}})
            )
        command = ["quality", "--set", "skewed", "--shape", "60m", "--arms", "natural,uniform", "--seeds", "0,1"]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.mixbench",
                *command,
                "--store",
                str(tmp_path / "quality-skewed-60m.json"),
            ]
            + ["--dry-run", "--budget-s", "150", "--work", str(tmp_path / "w")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    # a CPU (tiny) store says nothing about a GPU shape's pace: no seconds are estimated from it
    assert "s in all" not in dry_run(("quality-five-tiny.json", {"natural/0": {"seconds": 2.0}}))
    out = dry_run(("quality-five-gpu.json", {"natural/0": {"seconds": 70.0}, "uniform/0": {"seconds": 70.0}}))
    pace = 70.0 / 1400 * ratio
    assert f"at the store's pace ({pace:.4f} s per unit of cost" in out
    assert f"of the gpu shape's stores, x {ratio:.2f} (FLOPs per step)" in out
    assert f"{4 * 1400 * pace:.0f} s in all" in out
    assert "longer than one call's --budget-s 150: natural/0" in out  # 1400 steps x 0.13 s: 185 s
