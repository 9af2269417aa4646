"""Two CPU processes (gloo) through `accelerate launch`: same weights on every rank, no block seen twice."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from conftest import task_files

from benchmarks._common import free_port, run_process_group
from hf_datamix.callbacks import DECISION_LOG


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The test helpers, and this checkout's hf_datamix (whichever one is installed).
TESTS_PATH = os.pathsep.join([os.path.join(ROOT, "tests"), ROOT])


def launch_on_two_cpu_processes(script: str, *args: str, timeout: int, **env: str) -> str:
    """``accelerate launch`` with accelerate_configs/cpu.yaml (2 gloo processes); returns stdout + stderr."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        os.path.join(ROOT, "accelerate_configs", "cpu.yaml"),
        "--main_process_port",
        str(free_port()),
        script,
        *args,
    ]
    result = run_process_group(command, env=dict(os.environ, OMP_NUM_THREADS="1", **env), timeout=timeout, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return output


@pytest.mark.parametrize("workers, batches", [("0", "dispatch"), ("2", "dispatch"), ("0", "read")])
def test_two_processes_agree_and_never_share_a_block(tmp_path, workers, batches):
    launch_on_two_cpu_processes(
        os.path.join(ROOT, "tests", "distributed", "two_ranks.py"),
        str(tmp_path),
        timeout=600,
        WORKERS=workers,
        BATCHES=batches,
        PYTHONPATH=TESTS_PATH,
    )
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["weights"][-1]["beta"] == 1.0
    samples = [
        tuple(batch[i * 32 : (i + 1) * 32])
        for rank in ranks
        for batch in rank["seen"]
        for i in range(len(batch) // 32)
    ]
    assert len(samples) == 8 * 2 * 2 * 2  # steps x accumulation x per-device batch x ranks
    assert len(set(samples)) == len(samples), "a block was trained on twice (by two ranks or twice by one)"
    history = json.load(open(tmp_path / "mixtures.json"))
    assert history[-1]["weights"]["beta"] == 1.0
    # No gloo thread outlives the interpreter's shutdown (left to finalisation, one aborted the process now
    # and then: "terminate called without an active exception", SIGABRT after training ended).
    for rank in (0, 1):
        path = tmp_path / f"threads-at-exit-{rank}.json"
        if path.exists():
            assert not [name for name in json.load(open(path)) if "gloo" in name], json.load(open(path))


def test_probes_on_an_fsdp_sharded_model_train_and_score_collectively(tmp_path):
    # FSDP2 (fully_shard) on two gloo CPU processes: accelerate runs FSDP only on GPUs, torch does not.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=TESTS_PATH)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        os.path.join(ROOT, "tests", "distributed", "sharded_probes.py"),
        str(tmp_path),
    ]
    result = run_process_group(command, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    together, reference = ranks[0]["collective_sharded"], ranks[0]["alone_unsharded"]
    # Same probes and scores on every process.
    assert ranks[1]["collective_sharded"] == together
    # Half a batch per process with averaged gradients == the whole batch on one unsharded model.
    assert together["probe_losses"] == pytest.approx(reference["probe_losses"], abs=1e-5)
    assert together["lora_B_pa"] == pytest.approx(reference["lora_B_pa"], abs=1e-5)
    np.testing.assert_allclose(together["losses"], reference["losses"], atol=1e-4)
    assert together["probe_tokens"] == reference["probe_tokens"]  # all processes' tokens are counted
    # Sharding alone changes nothing either.
    np.testing.assert_allclose(ranks[0]["alone_sharded"]["losses"], reference["losses"], atol=1e-5)
    assert not np.allclose(reference["losses"][1], reference["losses"][0], atol=1e-4)  # the probes moved θ
    # Probes as a bf16-mixed-precision model's first forward leave θ's gradients in fp32 (its dtype).
    assert [r["train_after_probes"] for r in ranks] == [{"grad_dtypes": ["torch.float32"]}] * 2


def test_instruct_recipe_on_two_processes(tmp_path):
    # DataMixSFTTrainer pads each batch to its own longest example: accelerate cannot dispatch such batches
    # across processes, so every process reads the stream and keeps its share.
    settings = '{"op_mix": {"probe_steps": 1, "eval_blocks": 2, "alpha_points": 3, "law_starts": 8}}'
    output = launch_on_two_cpu_processes(
        os.path.join(ROOT, "recipes", "instruct.py"),
        "--use_cpu",
        "true",
        "--output_dir",
        str(tmp_path),
        "--strategies",
        "op_mix,sequential",
        "--domains",
        task_files(tmp_path),  # the tasks cut to a few examples: each process prepares every example
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
        "--per_device_train_batch_size",
        "4",
        "--strategy_settings",
        settings,
        "--log_level",
        "info",
        "--log_level_replica",
        "info",
        timeout=900,
        PYTHONPATH=ROOT,
    )
    decisions = DECISION_LOG.findall(output)
    by_rank = {
        rank: sorted({(stage, step, mixture) for r, world, stage, step, mixture in decisions if r == rank})
        for rank in ("0", "1")
    }
    assert {world for _, world, *_ in decisions} == {"2"}
    assert by_rank["0"] and by_rank["0"] == by_rank["1"]  # every rank applied the same mixtures
    for strategy in ("op_mix", "sequential"):
        stages = json.load(open(tmp_path / strategy / "results.json"))
        assert [s["stage"] for s in stages] == [0, 1]


def test_streaming_domains_on_two_processes_tokenise_each_document_once_and_resume(tmp_path, tokenizer):
    from test_streaming import docs_needed

    launch_on_two_cpu_processes(
        os.path.join(ROOT, "tests", "distributed", "stream_ranks.py"),
        str(tmp_path),
        timeout=600,
        PYTHONPATH=TESTS_PATH,
    )
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2 and ranks[0]["drawn"] == ranks[1]["drawn"]
    docs = {
        name: [json.loads(line)["text"] for line in open(tmp_path / f"{name}.jsonl")] for name in ("alpha", "beta")
    }
    need = sum(docs_needed(tokenizer, type(tokenizer).__call__, docs[d], n) for d, n in ranks[0]["drawn"].items())
    tokenised = ranks[0]["docs"] + ranks[1]["docs"]  # both runs (40 steps, then 20 -> 60 resumed), both ranks
    assert tokenised <= 1.05 * need, (tokenised, need)
    # Each rank trained on its own samples: the resumed run (steps 21-60) shares no block between ranks.
    resumed = [tuple(batch[i * 32 : (i + 1) * 32]) for rank in ranks for batch in rank["seen"][40:] for i in range(4)]
    assert len(resumed) == 40 * 2 * 4 and len(set(resumed)) == len(resumed)
