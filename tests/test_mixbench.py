"""mixbench end to end at tiny size on the CPU: stage, oracle sweep + fidelity, baselines, quality arms, resume,
results files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from mixbench.common import SETS  # noqa: E402


def fake_corpus(folder, set_name):
    """A folder laid out like `hf-datamix corpus build` output, with the set's domain names."""
    for d, name in enumerate(SETS[set_name]):
        rng = random.Random(name)
        words = [f"{name[:3]}{i}{chr(97 + d)}" for i in range(40)]
        os.makedirs(folder / name)
        for split, n in (("train", 120), ("eval", 8)):
            with open(folder / name / f"{split}.jsonl", "w") as handle:
                for _ in range(n):
                    handle.write(
                        json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(15, 60)))}) + "\n"
                    )


def mixbench(*args, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.mixbench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def staged(tmp_path, set_name="five", extra=("--points", "0.2"), data=None):
    """Stage the tiny ``set_name`` set from a fake corpus (into ``tmp_path/data``, unless ``data`` holds it
    staged already); the arguments every command of a test shares (``extra`` appended: by default the
    fidelity tests' one decision point)."""
    common = [
        "--set",
        set_name,
        "--shape",
        "tiny",
        "--data",
        str(data or tmp_path / "data"),
        "--results",
        str(tmp_path / "results"),
        "--scratch",
        str(tmp_path / "scratch"),
        "--commit",
        "test",
        *extra,
    ]
    if data is None:
        fake_corpus(tmp_path / "corpus", set_name)
        mixbench("stage", "--corpus", str(tmp_path / "corpus"), *common)
    return common


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """The tiny five set staged once for the module's tests (commands only read it; each test keeps its own
    results, stores and scratch): staging is a process of its own, ~7 s."""
    folder = tmp_path_factory.mktemp("five")
    staged(folder)
    return folder / "data"


@pytest.mark.timeout(900)
def test_fidelity_and_baselines_pipeline_at_tiny_size(tmp_path, five):
    common = staged(tmp_path, data=five)
    manifest = json.load(open(five / "five" / "manifest.json"))
    assert set(manifest["domains"]) == set(SETS["five"])
    store = str(tmp_path / "store" / "fidelity-five-tiny.json")
    # Two workers share the units (one prefix run each).
    out = mixbench("fidelity", *common, "--store", store, "--procs", "2", "--work", str(tmp_path / "w1"))
    assert "0 units done, 16 pending" in out
    result = json.load(open(tmp_path / "results" / "mixbench_fidelity_tiny.json"))
    assert result["status"] == "complete", out
    point = result["domain_sets"]["five"]["decision_points"]["0.2"]
    assert len(point["oracle"]) == 12 and {o["name"] for o in point["oracle"]} >= {
        "uniform",
        "natural",
        "tilt:scripture",
    }
    assert point["headroom"] >= 0 and point["best_mixture"]
    assert set(point["simulators"]) == {
        "lora:spread",
        "lora:old",
        "lora_annealed:spread",
        "lora_annealed:old",
        "branches",
        "branches_quarter",
        "calibrated",
    }
    assert len(point["simulators"]["calibrated"]["calibration"]["candidates"]) == 3  # derived from lora + branches
    for sim in point["simulators"].values():
        assert -1 <= sim["spearman"] <= 1 and -1 <= sim["kendall"] <= 1 and sim["top1_regret"] >= 0 and sim["tokens"]
    assert point["simulators"]["lora:spread"]["encoding_inconsistency"] is not None
    gaps = [point["simulators"][f"lora:{e}"]["encoding_gap"] for e in ("spread", "old")]
    assert gaps[0]["mean"] == pytest.approx(-gaps[1]["mean"]) and gaps[0]["min"] <= gaps[0]["mean"] <= gaps[0]["max"]
    assert point["simulators"]["lora_annealed:spread"]["tokens"]["branch"] > 0  # the anneal is counted
    assert (tmp_path / "results" / "mixbench_fidelity_tiny.png").stat().st_size > 5000
    assert result["commits"] == ["test"] and len(result["unit_calls"]["five"]) == 2 and result["device"]
    assert "planned" not in result["domain_sets"]["five"]["settings"]  # the settings of the stores measured before

    # As the library trains by default: caps planned over the horizon, its own store and results file.
    mixbench(
        "fidelity",
        *common,
        "--planned",
        "--procs",
        "1",
        "--work",
        str(tmp_path / "w2"),
        "--store",
        str(tmp_path / "store" / "fidelity_planned-five-tiny.json"),
    )
    planned = json.load(open(tmp_path / "results" / "mixbench_fidelity_planned_tiny.json"))
    entry = planned["domain_sets"]["five"]
    assert planned["status"] == "complete" and entry["settings"]["planned"] is True
    for oracle in entry["decision_points"]["0.2"]["oracle"]:
        trained, requested = oracle["weights"], oracle["requested"]
        assert sum(trained.values()) == pytest.approx(1.0)
        lowered = [d for d in trained if trained[d] < requested[d] - 1e-9]
        assert all(trained[d] >= requested[d] - 1e-9 for d in trained if d not in lowered)
    assert (
        json.load(open(tmp_path / "results" / "mixbench_fidelity_tiny.json"))["domain_sets"]["five"]
        == result["domain_sets"]["five"]
    )  # the plain results are not mixed with the planned ones

    mixbench(
        "baselines",
        *common,
        "--seeds",
        "0,1",
        "--store",
        str(tmp_path / "store" / "baselines-five-tiny.json"),
        "--work",
        str(tmp_path / "w3"),
    )
    base = json.load(open(tmp_path / "results" / "mixbench_baselines_tiny.json"))["domain_sets"]["five"]
    assert len(base["arms"]["natural"]["mean_test_loss"]) == 2 and base["natural_minus_uniform"]["t_ci"]

    mixbench(
        "transfer",
        *common,
        "--mixtures",
        "4",
        "--rungs",
        "a=tiny:0.0001,b=tiny:0.0002",
        "--store",
        str(tmp_path / "store" / "transfer-five-tiny.json"),
        "--work",
        str(tmp_path / "w4"),
    )
    ladder = json.load(open(tmp_path / "results" / "mixbench_transfer_tiny.json"))
    rungs = ladder["domain_sets"]["five"]["rungs"]
    assert ladder["status"] == "complete" and [r["name"] for r in rungs] == ["a", "b"]
    for rung in rungs:
        assert -1 <= rung["spearman"] <= 1 and 0 < rung["compute_fraction"] < 1 and rung["proxy_tokens_per_s"] > 0
    assert rungs[0]["compute_fraction"] < rungs[1]["compute_fraction"]  # half the steps


@pytest.mark.timeout(900)
def test_quality_arms_resume_and_report(tmp_path, monkeypatch, capsys, five):
    common = staged(tmp_path, data=five)
    store = tmp_path / "store" / "mine.json"  # a --store named otherwise than the stores folder's: reported too
    arms = ["--arms", "natural,uniform,op_mix,op_mix_prior,op_mix_late", "--seeds", "0,1", "--store", str(store)]
    out = mixbench("quality", *common, *arms, "--procs", "2", "--work", str(tmp_path / "w1"))
    assert "0 units done, 8 pending" in out  # op_mix_prior shares op_mix's warm-up and decision: one unit a seed
    result = json.load(open(tmp_path / "results" / "opmix_quality_pretrain_tiny.json"))
    assert result["status"] == "complete", out
    entry = result["domain_sets"]["five"]
    assert set(entry["arms"]) == {"natural", "uniform", "op_mix", "op_mix_prior", "op_mix_late"}
    assert entry["arms"]["op_mix_prior"]["shared_decision_with"] == {"0": ["op_mix"], "1": ["op_mix"]}
    assert entry["shared_decision"]["differences"]["op_mix_prior - op_mix"]["shared_decision_seeds"] == [0, 1]
    for arm in entry["arms"].values():
        assert arm["seeds"] == [0, 1] and len(arm["mean_test_loss"]) == 2 and len(arm["test_by_domain"]) == 5
        assert all(total > 0 and flops["train"] > 0 for total, flops in zip(arm["total_flops"], arm["flops_by_kind"]))
        assert arm["decisions"]["0"][0]["kind"] == "initial"
    late = entry["arms"]["op_mix_late"]
    records = json.loads(store.read_text())["units"]["op_mix_late/0"]["decision_records"]
    assert [r["step"] for r in records] == [5] and records[0]["candidates"] and records[0]["proposal"]["x"]
    assert "decision_records" not in late  # the store keeps them; the results file the compact history
    assert late["decision_steps"] == [5] and all(f["probe"] > 0 for f in late["flops_by_kind"])
    assert late["minus_natural"]["t_ci"] and late["minus_uniform"]["bootstrap_ci"]
    assert late["headroom_fraction"]["fraction"] is None and late["headroom_fraction"]["why"]  # no fidelity run here
    verdict = entry["verdicts"]["op_mix"]
    assert (
        verdict["vs_natural"]["verdict"] in ("better", "worse", "not distinguishable")
        and verdict["vs_natural"]["rule"]
    )
    assert verdict["protocol"]["verdict"] == "not judged"  # 2 seeds
    assert (tmp_path / "results" / "opmix_quality_pretrain_tiny.png").stat().st_size > 5000
    # Run again: nothing is retrained, the store is unchanged.
    before = store.read_text()
    again = mixbench("quality", *common, *arms, "--work", str(tmp_path / "w2"))
    assert "10 units done, 0 pending" in again and "mean test loss" not in again
    assert json.loads(store.read_text())["units"] == json.loads(before)["units"]

    # An arm with a setting its strategy does not have fails before anything is trained or stored.
    from mixbench import quality
    from mixbench.__main__ import main

    monkeypatch.setitem(quality.ARMS, "op_mix_bad", quality._arm("op_mix", no_such_setting=1))
    scratch = tmp_path / "scratch2"
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(scratch / "packed"))  # main sets it otherwise, for the whole process
    with pytest.raises(SystemExit):
        main(
            [
                "quality",
                *common,
                "--arms",
                "natural,op_mix_bad",
                "--store",
                str(tmp_path / "bad.json"),
                "--scratch",
                str(scratch),
                "--work",
                str(tmp_path / "w3"),
            ]
        )
    message = capsys.readouterr().err
    assert "'op_mix_bad'" in message and "no_such_setting" in message
    assert not (tmp_path / "bad.json").exists() and not scratch.exists()


def test_quality_verdicts_follow_the_protocol():
    from mixbench.quality_report import _protocol, headroom_fraction, paired

    def arms(**losses):
        return {name: {"seeds": [0, 1, 2], "mean_test_loss": values} for name, values in losses.items()}

    headroom = {"headroom": 0.2, "headroom_relative": 0.1, "best_baseline_loss": 2.0}
    base = {"natural": [2.0, 2.01, 1.99], "uniform": [2.5, 2.6, 2.55]}
    cases = {
        "supported": ([1.85, 1.86, 1.84], headroom),
        "refuted": ([2.001, 2.009, 1.992], headroom),
        "untestable": ([1.85, 1.86, 1.84], {**headroom, "headroom_relative": 0.001}),
        "undecided": ([1.95, 1.96, 1.94], headroom),
    }  # better, with 25 % of the headroom
    for expected, (losses, room) in cases.items():
        table = arms(**base, op_mix=losses)
        verdict = _protocol(table, "op_mix", room, headroom_fraction(losses, room))
        assert (
            verdict["verdict"] == expected
            and verdict["best_baseline"] == "natural"
            and verdict["rule"].startswith(expected)
        )
    two = {name: {"seeds": [0, 1], "mean_test_loss": v[:2]} for name, v in {**base, "op_mix": [1.8] * 3}.items()}
    assert _protocol(two, "op_mix", headroom, {"fraction": 1.0})["verdict"] == "not judged"
    assert paired(arms(**base), "natural", "uniform")["mean"] < 0


def test_run_to_run_noise_is_measured_on_runs_that_read_the_same_stream():
    from mixbench import stats
    from mixbench.quality import QualityPlan
    from mixbench.quality_report import run_to_run_noise

    plan = QualityPlan("skewed", arms=("natural", "natural_unplanned", "uniform"), seeds=(0, 1, 2))

    def unit(loss, weights, epochs):
        return {
            "test_mean": loss,
            "epochs": epochs,
            "decisions": [{"step": 0, "kind": "initial", "weights": weights}, {"step": 9, "kind": "exhausted"}],
        }

    natural, uniform = {"a": 0.7, "b": 0.3}, {"a": 0.5, "b": 0.5}
    same, other = {"a": 1.5, "b": 1.5}, {"a": 1.1, "b": 2.5}
    units = {}
    for seed, (x, y) in enumerate([(2.0, 2.01), (2.1, 2.08), (1.9, 1.9)]):
        units[f"natural/{seed}"] = unit(x, natural, same)
        units[f"natural_unplanned/{seed}"] = unit(y, natural, same)
        units[f"uniform/{seed}"] = unit(1.5, uniform, other)
    units["natural_unplanned/2"]["epochs"] = {"a": 1.5, "b": 1.4}  # a cap bound: another stream, no pair
    noise = run_to_run_noise(plan, units, headroom={"headroom": 0.02, "oracle_mixtures": 12, "oracle_baselines": 2})
    assert [(p["arms"], p["seed"]) for p in noise["pairs"]] == [(["natural", "natural_unplanned"], s) for s in (0, 1)]
    sd = (((-0.01) ** 2 + 0.02**2) / 2) ** 0.5
    assert noise["sd_of_difference"] == pytest.approx(sd)
    assert noise["detectable"]["3"] == pytest.approx(4.302652729911275 * sd / 3**0.5)
    assert noise["detectable"]["10"] < noise["detectable"]["5"] < noise["detectable"]["3"]
    n = noise["headroom"]["seeds_for_half_headroom"]
    assert stats.detectable_difference(sd, n) <= 0.01 < stats.detectable_difference(sd, n - 1)
    # best of 2 minus best of 12 equal runs: E[min of 2] - E[min of 12] = (-0.564 + 1.629) sd of one run
    assert noise["headroom"]["chance_headroom"] == pytest.approx(1.065 * sd / 2**0.5, rel=0.02)
    assert stats.chance_headroom(0.01, 1, 1) == 0.0
    assert run_to_run_noise(plan, {k: v for k, v in units.items() if k.endswith("/0")})["sd_of_difference"] is None
    # Same mixtures, another stream (natural_unplanned/2: a cap bound) still pair in same_mixture; uniform never.
    mixed = noise["same_mixture"]
    assert [(p["arms"], p["seed"]) for p in mixed["pairs"]] == [
        (["natural", "natural_unplanned"], s) for s in (0, 1, 2)
    ]
    assert mixed["sd_of_difference"] == pytest.approx((((-0.01) ** 2 + 0.02**2 + 0.0) / 3) ** 0.5)


def test_same_mixture_pairs_runs_whose_mixtures_in_force_agree_at_every_step():
    from mixbench.quality import QualityPlan
    from mixbench.quality_report import same_mixture_noise

    plan = QualityPlan("skewed", arms=("uniform", "op_mix", "op_mix_design"), seeds=(0, 1))
    uniform, tilted = {"a": 0.5, "b": 0.5}, {"a": 0.3, "b": 0.7}

    def unit(loss, *schedule):
        return {"test_mean": loss, "decisions": [{"step": s, "kind": k, "weights": w} for s, k, w in schedule]}

    units = {}
    for seed, shift in enumerate((0.0, 0.01)):
        units[f"uniform/{seed}"] = unit(2.0 + shift, (0, "initial", uniform))
        # a decision that kept the warm-up mixture within 1e-3: the same mixture all along
        near = {"a": 0.5004, "b": 0.4996}
        units[f"op_mix/{seed}"] = unit(2.01, (0, "initial", uniform), (5, "decision", near), (9, "exhausted", uniform))
        units[f"op_mix_design/{seed}"] = unit(1.9, (0, "initial", uniform), (5, "decision", tilted))
    noise = same_mixture_noise(plan, units)
    assert [(p["arms"], p["seed"]) for p in noise["pairs"]] == [(["uniform", "op_mix"], s) for s in (0, 1)]
    assert noise["sd_of_difference"] == pytest.approx(((0.01**2 + 0.0**2) / 2) ** 0.5, abs=1e-12)
    assert same_mixture_noise(plan, {"uniform/0": units["uniform/0"]})["sd_of_difference"] is None


def test_the_confirmation_stage_judges_the_selected_arm_on_fresh_seeds_alone():
    from mixbench.quality import CONFIRMATION_SEEDS, SELECTION_ARMS, SELECTION_SEEDS
    from mixbench.quality_report import confirmation

    def entry(losses):
        return {"seeds": list(losses), "mean_test_loss": list(losses.values())}

    seeds = (*SELECTION_SEEDS, *CONFIRMATION_SEEDS)
    arms = {a: entry(dict.fromkeys(SELECTION_SEEDS, 2.0)) for a in SELECTION_ARMS}
    assert confirmation({**arms, "op_mix": entry({0: 2.0})}, {})["selected"] is None  # selection unfinished
    # op_mix_design is best on the selection seeds, where it also beats uniform by far; on the fresh seeds it
    # ties uniform: the verdict reads the fresh seeds only.
    arms["op_mix_design"] = entry({**dict.fromkeys(SELECTION_SEEDS, 1.0), **{s: 2.0 + 0.001 * s for s in seeds[3:]}})
    arms["uniform"] = entry({s: 2.0 + (0.001 * s if s > 2 else 0.5) for s in seeds})
    arms["natural"] = entry({s: 2.5 + 0.01 * (s % 2) for s in seeds})
    headroom = {"headroom": 0.2, "headroom_relative": 0.1, "best_baseline_loss": 2.0}
    result = confirmation(arms, {"op_mix_design": {"headroom": headroom}})
    assert result["selected"] == "op_mix_design" and result["seeds_run"] == list(CONFIRMATION_SEEDS)
    assert result["complete"] and "note" not in result
    assert result["vs_uniform"]["verdict"] == "not distinguishable" and result["vs_natural"]["verdict"] == "better"
    protocol = result["protocol"]
    assert protocol["best_baseline"] == "uniform" and protocol["difference"]["seeds"] == len(CONFIRMATION_SEEDS)
    assert result["protocol"]["verdict"] == "refuted"
    # with a confirmation seed missing the stage is incomplete, and says the verdicts wait for it
    arms["op_mix_design"] = entry({**dict.fromkeys(SELECTION_SEEDS, 1.0), **dict.fromkeys(seeds[3:-1], 2.0)})
    early = confirmation(arms, {"op_mix_design": {"headroom": headroom}})
    assert not early["complete"] and early["note"].startswith(
        f"{len(CONFIRMATION_SEEDS) - 1} of {len(CONFIRMATION_SEEDS)}"
    )


def test_the_held_out_set_judges_skewed_s_choice_on_all_its_seeds_and_only_then_is_complete():
    from mixbench.quality import HELD_OUT_ARM, HELD_OUT_ARMS, HELD_OUT_SEEDS
    from mixbench.quality_report import held_out

    def entry(losses, forked_with=()):
        return {
            "seeds": list(losses),
            "mean_test_loss": list(losses.values()),
            "shared_decision_with": {str(s): list(forked_with) for s in losses},
        }

    def arms_on(seeds):
        return {
            "natural": entry({s: 2.5 + 0.01 * (s % 2) for s in seeds}),
            "uniform": entry({s: 2.0 + 0.002 * (s % 3) for s in seeds}),
            "op_mix": entry(dict.fromkeys(seeds, 2.0), ["uniform_forked"]),
            HELD_OUT_ARM: entry({s: 1.95 + 0.001 * s for s in seeds}, ["uniform_forked"]),
            "uniform_forked": entry({s: 1.97 + 0.001 * (s % 2) for s in seeds}, [HELD_OUT_ARM]),
        }

    references = {HELD_OUT_ARM: ["uniform_forked"]}
    early = held_out(arms_on(HELD_OUT_SEEDS[:3]), {}, references)
    assert not early["complete"] and set(early["missing"]) == set(HELD_OUT_ARMS) and "note" in early
    assert "forked_everywhere" not in early
    result = held_out(arms_on(HELD_OUT_SEEDS), {}, references)
    assert result["complete"] and "missing" not in result and "note" not in result
    assert result["vs_uniform"]["verdict"] == "better" and result["vs_natural"]["verdict"] == "better"
    assert result["protocol"]["difference"]["seeds"] == len(HELD_OUT_SEEDS)
    assert result["vs_forked"]["uniform_forked"]["verdict"] == "better"
    # a reference that did not fork from the arm's θ_D on every seed leaves the set incomplete
    arms = arms_on(HELD_OUT_SEEDS)
    arms[HELD_OUT_ARM]["shared_decision_with"]["4"] = []
    apart = held_out(arms, {}, references)
    assert not apart["complete"] and "uniform_forked on seed(s) 4" in apart["note"]
    assert apart["vs_forked"]["uniform_forked"]["seeds"] == len(HELD_OUT_SEEDS) - 1
    assert held_out({}, {}, references)["why"] == "the arm has not run on a held-out seed"


def test_a_two_stage_plan_is_complete_when_both_stages_are():
    from mixbench.quality import CONFIRMATION_SEEDS, SELECTION_SEEDS, QualityPlan
    from mixbench.quality_report import _complete

    plan = QualityPlan("skewed", arms=("natural", "uniform", "op_mix"), seeds=(*SELECTION_SEEDS, *CONFIRMATION_SEEDS))
    first = {f"{a}/{s}": {} for a in plan.arms for s in SELECTION_SEEDS}
    assert not _complete(plan, first, {"selected": None})  # no selection yet: every unit of the plan
    assert not _complete(plan, first, {"selected": "op_mix", "complete": False})
    assert _complete(plan, first, {"selected": "op_mix", "complete": True})
    assert not _complete(
        plan, {k: v for k, v in first.items() if k != "natural/2"}, {"selected": "op_mix", "complete": True}
    )
    one_stage = QualityPlan("skewed", arms=("natural", "uniform"), seeds=SELECTION_SEEDS)
    assert _complete(one_stage, {f"{a}/{s}": {} for a in one_stage.arms for s in SELECTION_SEEDS}, {"selected": None})


def test_store_keeps_finished_units_and_replicates(tmp_path):
    from mixbench.runner import Budget, Store, WorkerFile, assign

    settings = {"kind": "x", "points": (0.2,)}
    worker = WorkerFile(str(tmp_path / "worker-0.json"), settings, {"command": "c"})
    worker.add("a", {"v": 1})
    store = Store(str(tmp_path / "store.json"), settings)
    assert store.merge_files([worker.path]) == 1
    again = WorkerFile(str(tmp_path / "worker-1.json"), settings, {"command": "d"})
    again.add("a", {"v": 2})  # the same unit from another run: kept apart, not over the first
    store.merge_files([again.path])
    store.save()
    reread = Store(str(tmp_path / "store.json"), {"kind": "x", "points": [0.2]})  # tuples read back as lists
    assert reread.units == {"a": {"v": 1}} and reread.replicates == {"a": [{"v": 2}]} and len(reread.calls) == 2
    with pytest.raises(ValueError, match="other settings.*points"):
        Store(str(tmp_path / "store.json"), {"kind": "x", "points": [0.5]})
    shares = assign([("big", 10), ("b", 4), ("c", 4), ("d", 3)], 2)
    assert shares == [["big"], ["b", "c", "d"]]
    grown = Store(str(tmp_path / "grown.json"), {"kind": "q", "seeds": [0, 1], "arms": {"a": 1}}, ("seeds", "arms"))
    grown.save()
    wider = Store(grown.path, {"kind": "q", "seeds": [2], "arms": {"b": 2}}, ("seeds", "arms"))  # more arms, seeds
    assert wider.settings == {"kind": "q", "seeds": [0, 1, 2], "arms": {"a": 1, "b": 2}}
    with pytest.raises(ValueError, match="arms.a"):  # an arm whose definition changed
        Store(grown.path, {"kind": "q", "seeds": [0], "arms": {"a": 3}}, ("seeds", "arms"))
    budget = Budget(10)
    budget.observe(cost=10, seconds=1.0)
    assert budget.allows(50) and not budget.allows(200)


def test_a_forked_reference_whose_group_finished_without_it_is_left_out_not_run_alone():
    from mixbench.quality import QualityPlan

    plan = QualityPlan("skewed", arms=("uniform", "op_mix_design", "uniform_forked"), seeds=(0, 1))
    assert ("op_mix_design", "uniform_forked") in plan.groups()
    # seed 0: the deadline came after op_mix_design's continuation; seed 1: nothing done yet
    done = {"uniform/0": {}, "op_mix_design/0": {}}
    assert plan.orphaned_references(done) == ["uniform_forked/0"]
    keys = [key for key, _ in plan.units(done)]
    assert not any(key.endswith("/0") for key in keys)  # no second uniform run under the reference's name
    assert "op_mix_design+uniform_forked/1" in keys and "uniform/1" in keys
    assert plan.orphaned_references({}) == []
    # asked for alone, the reference is still left out where its group's arms ran without it
    alone = QualityPlan("skewed", arms=("uniform_forked",), seeds=(0, 1))
    assert alone.orphaned_references(done) == ["uniform_forked/0"]
    assert [key for key, _ in alone.units(done)] == ["uniform_forked/1"]


def test_paired_by_domain_says_where_a_gain_comes_from_on_the_seeds_asked():
    from mixbench.quality_report import paired_by_domain

    arms = {
        "a": {"seeds": [0, 1, 2], "test_by_domain": {"x": [1.0, 1.1, 1.2], "y": [2.0, 2.0, 2.0]}},
        "b": {"seeds": [2, 1, 0], "test_by_domain": {"x": [1.3, 1.2, 1.1], "y": [1.9, 1.9, 1.9]}},
    }
    out = paired_by_domain(arms, "a", "b", {0, 1, 2})
    assert out["x"]["mean"] == pytest.approx(-0.1) and out["x"]["t_ci"][1] < 0  # paired by seed, not by position
    assert out["y"]["mean"] == pytest.approx(0.1)
    assert paired_by_domain(arms, "a", "b", {0, 1})["x"]["mean"] == pytest.approx(-0.1)
    assert paired_by_domain(arms, "a", "b", {0}) is None
    assert paired_by_domain({"a": {"seeds": [0, 1]}, "b": arms["b"]}, "a", "b", {0, 1}) is None


def test_a_store_whose_units_trained_on_other_data_refuses_the_staged_set(tmp_path, monkeypatch, five):
    from mixbench.__main__ import main
    from mixbench.common import SHAPES, prepare
    from mixbench.quality import QualityPlan
    from mixbench.runner import Store

    common = staged(tmp_path, data=five)
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path / "scratch" / "packed"))
    staged_counts = prepare("five", SHAPES["tiny"], str(tmp_path / "scratch"), str(five))
    plan = QualityPlan("five", seeds=(0, 1), shape=SHAPES["tiny"], arms=("natural",))
    store = Store(str(tmp_path / "other.json"), plan.settings(), extensible=plan.extensible)
    # The store's own first call trained on these data; a later one (e.g. adopted units) on others.
    store.calls = [
        {"command": "mixbench quality", "training_tokens": staged_counts},
        {"command": "mixbench baselines", "training_tokens": {**staged_counts, "python_stdlib": 1}},
    ]
    store.save()
    args = [
        "quality",
        *common,
        "--arms",
        "natural",
        "--seeds",
        "0,1",
        "--store",
        store.path,
        "--work",
        str(tmp_path / "w"),
    ]
    with pytest.raises(SystemExit, match=r"staged data differ from those of the store's earlier \(or adopted\) units"):
        main(args)
    assert not json.loads(open(store.path).read())["units"]  # nothing trained
