"""Recipes: every shipped YAML parses and builds its strategies, the strategy's settings are flags, and the
recipes run end to end (tiny settings) through accelerate."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks._common import free_port, run_process_group
from hf_datamix import DataMixArguments, create_strategy
from hf_datamix.recipe_args import RunArguments, parse_args


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "recipes", "configs", "*.yaml")))


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_every_shipped_config_parses_and_builds_its_strategies(config, tmp_path):
    types = (RunArguments, DataMixArguments)
    extra = []
    if os.path.basename(config) == "swarm.yaml":
        sys.path.insert(0, os.path.join(ROOT, "recipes"))
        from swarm import SwarmArguments

        types = (RunArguments, SwarmArguments, DataMixArguments)
    if os.path.basename(config).startswith("instruct"):
        sys.path.insert(0, os.path.join(ROOT, "recipes"))
        from instruct import InstructArguments

        from hf_datamix.sft import DataMixSFTConfig

        types = (RunArguments, InstructArguments, DataMixSFTConfig)
    if config.endswith("_gpu.yaml"):
        extra = ["--bf16", "false", "--optim", "adamw_torch"]  # GPU settings, parsed here on a CPU
    parsed = parse_args(types, argv=["--config", config, "--output_dir", str(tmp_path), *extra])
    assert parsed[-1].output_dir == str(tmp_path) and parsed[0].model_preset
    args = parsed[-1]
    if os.path.basename(config).startswith("instruct"):
        settings = parsed[1].strategy_settings or {}
        built = [create_strategy(name, settings.get(name)) for name in parsed[1].strategies.split(",")]
    else:
        built = [create_strategy(args.strategy, args.strategy_args)]
    for strategy in built:  # the settings of the file are the strategy's (and its simulator's)
        assert {
            k: v for k, v in strategy.settings().items() if k in args.strategy_args
        } == args.strategy_args or strategy.name != args.strategy
    assert parsed[-1].disable_tqdm is False  # long runs show a progress bar


def test_command_line_overrides_yaml_and_the_strategy_settings_land_in_strategy_args(tmp_path):
    config = os.path.join(ROOT, "recipes", "configs", "midtrain.yaml")
    run, args = parse_args(
        (RunArguments, DataMixArguments), argv=["--config", config, "--max_steps", "7", "--output_dir", str(tmp_path)]
    )
    assert args.max_steps == 7
    assert args.strategy == "op_mix" and args.strategy_args["probe_steps"] == 25
    _, args = parse_args((RunArguments, DataMixArguments), argv=["--config", config, "--probe_steps", "3"])
    assert args.strategy_args["probe_steps"] == 3 and args.strategy_args["eval_blocks"] == 16


def test_another_strategy_on_the_command_line_drops_the_files_strategy_settings(tmp_path):
    config = os.path.join(ROOT, "recipes", "configs", "midtrain.yaml")
    _, args = parse_args((RunArguments, DataMixArguments), argv=["--config", config, "--strategy", "uniform"])
    assert args.strategy == "uniform" and args.strategy_args == {}
    _, args = parse_args((RunArguments, DataMixArguments), argv=["--config", config, "--strategy", "op_mix"])
    assert args.strategy_args["probe_steps"] == 25
    # Another simulator: the file's lora_probes settings are dropped, op_mix's own are kept.
    _, args = parse_args((RunArguments, DataMixArguments), argv=["--config", config, "--simulator", "branches"])
    assert args.strategy_args["simulator"] == "branches" and "probe_steps" not in args.strategy_args


def test_unknown_yaml_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stepz: 3\n")
    with pytest.raises(ValueError, match="max_stepz"):
        parse_args((RunArguments, DataMixArguments), argv=["--config", str(bad)])


def launch(script, *flags, timeout=900, processes=1):
    where = (
        ["--num_processes", "1", "--cpu"]
        if processes == 1
        else [
            "--config_file",
            os.path.join(ROOT, "accelerate_configs", "cpu.yaml"),
            "--main_process_port",
            str(free_port()),
        ]
    )
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *where,
        os.path.join(ROOT, "recipes", script),
        *flags,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = run_process_group(command, timeout=timeout, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


TINY = [
    "--max_steps",
    "6",
    "--pretrain_steps",
    "4",
    "--block_size",
    "64",
    "--per_device_train_batch_size",
    "2",
    "--save_steps",
    "2",
    "--max_eval_blocks",
    "2",
    "--logging_steps",
    "1",
]


def run_python(*command, expect_kill=False):
    """Run ``python COMMAND`` (a recipe, or tests/kill_recipe.py around one) on one process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    expected = -9 if expect_kill else 0
    assert result.returncode == expected, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def records(path):
    """mixtures.json without the wall-clock times it records."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "seconds" not in k}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return strip(json.load(open(path / "mixtures.json")))


def step_losses(out):
    """Per-step training loss of every stage, from each stage's last checkpoint."""
    from hf_datamix.checkpoints import last_checkpoint

    losses = {}
    for stage in (1, 2, 3):
        state = json.load(open(os.path.join(last_checkpoint(str(out / f"stage-{stage}")), "trainer_state.json")))
        losses[stage] = {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}
    return losses


def test_midtrain_op_mix_killed_between_stages_and_at_a_checkpoint_resumes_to_the_same_run(tmp_path):
    flags = [
        "--max_steps",
        "12",
        "--pretrain_steps",
        "4",
        "--block_size",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--save_steps",
        "2",
        "--max_eval_blocks",
        "2",
        "--logging_steps",
        "1",
        "--probe_steps",
        "2",
        "--eval_blocks",
        "2",
        "--law_starts",
        "10",
        "--probe_batch_size",
        "2",
    ]
    out = tmp_path / "mt"
    stdout = launch("midtrain.py", "--output_dir", str(out), *flags)
    assert stdout.count("== stage") == 3 and "probe" in stdout and "eval ppl" in stdout
    history = records(out)
    assert [r["stage"] for r in history if r["kind"] == "decision"] == [1, 2, 3]
    assert all(abs(sum(r["weights"].values()) - 1) < 1e-9 for r in history)
    compute = json.load(open(out / "compute.json"))
    assert set(compute["by_kind"]) >= {"train", "probe", "eval"} and compute["total_flops"] > 0
    assert compute["tokens_by_kind"]["train"] == 12 * 2 * 64  # the stages (the base's pretraining is its own)
    assert (out / "weights.png").stat().st_size > 1000
    # The same run killed (SIGKILL) after stage 1, then at stage 2's first checkpoint, resumed each time.
    again = tmp_path / "again"
    recipe = os.path.join(ROOT, "recipes", "midtrain.py")
    killer = os.path.join(ROOT, "tests", "kill_recipe.py")
    run_python(killer, "after:1", recipe, "--output_dir", str(again), *flags, expect_kill=True)
    assert records(again) == [r for r in history if r["stage"] == 1]
    run_python(
        killer,
        "save:2:2",
        recipe,
        "--output_dir",
        str(again),
        *flags,
        "--resume_from_checkpoint",
        "true",
        expect_kill=True,
    )
    # Every decision reaches the run's mixtures.json when it is taken (stage 2's came before its step 2).
    assert records(again) == [r for r in history if r["stage"] <= 2]
    stdout = run_python(recipe, "--output_dir", str(again), *flags, "--resume_from_checkpoint", "true")
    assert stdout.count("== stage") == 2  # stage 2 (resumed) and stage 3
    # At the recipe's default log level: one line for stage 3's decision, with the mixture and its cost.
    assert (
        len(re.findall(r"stage 3 step 0: new mixture Mixture\(.*\) \(took [\d.]+ s, [\d.e+]+ FLOPs \(eval", stdout))
        == 1
    )
    assert not (again / "stage-1" / "checkpoint-5").exists()  # resuming at a stage's end trains no step more
    assert records(again) == history
    assert json.load(open(again / "compute.json")) == compute
    assert step_losses(again) == step_losses(out)
    results = [json.load(open(path / "results.json")) for path in (out, again)]
    assert [r["eval_loss"] for r in results[1]] == [r["eval_loss"] for r in results[0]]


def test_swarm_recipe_trains_proxies_and_fits(tmp_path):
    stdout = launch(
        "swarm.py",
        "--output_dir",
        str(tmp_path),
        "--initial_domains",
        "scripture,code,arithmetic",
        "--swarm_size",
        "5",
        "--proxy_steps",
        "2",
        "--proxy_batch_size",
        "2",
        "--proxy_eval_blocks",
        "2",
        "--block_size",
        "64",
    )
    assert "swarm of 5 proxies (5 trained now, 0 reused)" in stdout
    assert (tmp_path / "ratios.csv").read_text().startswith("run,scripture,code,arithmetic")
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "run,scripture,code,arithmetic"
    from hf_datamix import Mixture

    assert set(Mixture.load(tmp_path / "mixture.json")) == {"scripture", "code", "arithmetic"}
    again = launch(
        "swarm.py",
        "--output_dir",
        str(tmp_path),
        "--initial_domains",
        "scripture,code,arithmetic",
        "--swarm_size",
        "5",
        "--proxy_steps",
        "2",
        "--proxy_batch_size",
        "2",
        "--proxy_eval_blocks",
        "2",
        "--block_size",
        "64",
    )
    assert "(0 trained now, 5 reused)" in again


def test_swarm_members_are_spread_over_two_processes(tmp_path):
    stdout = launch(
        "swarm.py",
        "--output_dir",
        str(tmp_path),
        "--initial_domains",
        "scripture,code,arithmetic",
        "--swarm_size",
        "4",
        "--proxy_steps",
        "2",
        "--proxy_batch_size",
        "2",
        "--proxy_eval_blocks",
        "2",
        "--block_size",
        "64",
        processes=2,
    )
    assert "swarm of 4 proxies (2 trained now, 0 reused)" in stdout  # rank 0 trained its half
    for rank in (0, 1):
        ledger = json.load(open(tmp_path / f"compute-rank{rank}" / "compute.json"))
        assert ledger["tokens_by_kind"]["proxy"] == 2 * 2 * 2 * 64  # 2 members x 2 steps x batch 2 x 64 tokens


def test_pretrain_recipe_on_the_shipped_cpu_config_is_one_two_process_job(tmp_path):
    # accelerate launch --config_file accelerate_configs/cpu.yaml, no --use_cpu: before, each process trained alone.
    flags = [
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "3",
        "--block_size",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--max_eval_blocks",
        "2",
        "--strategy",
        "natural",
        "--save_steps",
        "3",
    ]
    stdout = launch("pretrain.py", *flags, processes=2)
    assert stdout.count("eval ppl") == 1  # one job: only its main process prints the table
    history = json.load(open(tmp_path / "mixtures.json"))
    assert history[0]["strategy"] == "natural" and len(history[0]["weights"]) == 7
    compute = json.load(open(tmp_path / "compute.json"))
    assert compute["tokens_by_kind"]["train"] == 3 * 2 * 2 * 64  # steps x per-device batch x 2 processes x block
    assert compute["tokens_by_kind"]["eval"] == 7 * 2 * 64  # the final evaluation the printed table shows
    # --resume_from_checkpoint true on the finished run: the newest checkpoint, nothing more to train.
    stdout = launch("pretrain.py", *flags, "--resume_from_checkpoint", "true", processes=2)
    assert "eval ppl" in stdout and not (tmp_path / "checkpoint-4").exists()
    assert json.load(open(tmp_path / "compute.json"))["tokens_by_kind"]["train"] == 3 * 2 * 2 * 64


def test_help_lists_the_strategys_and_its_simulators_settings(capsys):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "midtrain.py"), "--strategy", "op_mix", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for text in (
        "op_mix settings:",
        "--warmup_fraction",
        "--redecide_every",
        "--simulator",
        "--kl",
        "lora_probes simulator settings:",
        "--probe_steps",
        "Optimizer steps per probe, >= 1",
    ):
        assert text in done.stdout, text
    with pytest.raises(SystemExit):
        parse_args((RunArguments, DataMixArguments), argv=["--strategy", "olmix_reuse", "--help"])
    out = capsys.readouterr().out
    assert "olmix_reuse settings:" in out and "proxy_swarm simulator settings:" in out and "--proxy_steps" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--probe_steps", "abc"],
            r"argument --probe_steps.*invalid int value: 'abc' \(--probe_steps: Optimizer steps "
            r"per probe, >= 1",
        ),
        (
            ["--probe_stepz", "3"],
            r"unknown flag\(s\) \['--probe_stepz'\] \(--probe_stepz: did you mean --probe_steps\?\)",
        ),
        (["--warmup_fraction", "2"], r"op_mix settings out of range: warmup_fraction=2.0 \(must be in \(0, 1\)\)"),
        (["--kl", "-1", "--law", "gp"], r"kl=-1.0 \(must be >= 0\), prior=|law='gp' \(must be one of \["),
        (["--strategy", "olmix_reuse", "--reuse", "sometimes"], r"reuse='sometimes' \(must be one of \['full'"),
        (["--strategy_args", "probe_steps=2"], r"the strategy's settings are flags of their own now"),
        (["--simulator", "lora_probez"], r"Unknown simulator 'lora_probez'. Did you mean 'lora_probes'\?"),
        (["--strategy", "natural", "--probe_steps", "2"], r"unknown flag\(s\) \['--probe_steps'"),
    ],
)
def test_a_bad_strategy_flag_fails_naming_the_flag_the_value_and_the_range(argv, message):
    config = os.path.join(ROOT, "recipes", "configs", "midtrain.yaml")
    with pytest.raises(ValueError, match=message):
        parse_args((RunArguments, DataMixArguments), argv=["--config", config, *argv])


def test_a_bad_setting_in_a_config_file_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("strategy: op_mix\nprobe_steps: abc\n")
    with pytest.raises(ValueError, match=r"argument --probe_steps.*invalid int value: 'abc'"):
        parse_args((RunArguments, DataMixArguments), argv=["--config", str(tmp_path / "bad.yaml")])
    (tmp_path / "old.yaml").write_text("strategy: op_mix\nstrategy_args:\n  probe_steps: 3\n")
    with pytest.raises(ValueError, match=r"strategy_args: put the strategy's settings at the top level"):
        parse_args((RunArguments, DataMixArguments), argv=["--config", str(tmp_path / "old.yaml")])
    (tmp_path / "typo.yaml").write_text("strategy: op_mix\nprobe_stepz: 3\n")
    with pytest.raises(
        ValueError, match=r"unknown setting\(s\) \['probe_stepz'\] \(probe_stepz: did you mean probe_steps"
    ):
        parse_args((RunArguments, DataMixArguments), argv=["--config", str(tmp_path / "typo.yaml")])
