"""Base error of instruction task domains at the benchmark's model size (issue 20, item 2).

    python benchmarks/instruct_tasks_calibration.py --out DIR [--tasks pos,section,add,cloze]
        [--config recipes/configs/instruct_quality_gpu.yaml] [recipe flags ...]

Trains the base as ``benchmarks/instruct_quality.py`` does (``recipes/instruct.py``'s ``base_model``: the
config's preset pretrained on the embedded text), then each task alone for one stage of
``steps_per_stage`` SFT steps from that base (the ``sequential`` strategy, i.e. plain SFT, through
``run_continual``, as the recipe's first stage) and the stage's evaluation: exact-match error of greedy
answers on the held-out prompts and the gold answers' NLL (nats per answer).  Writes
``benchmarks/results/instruct_tasks_calibration.json`` (rewritten after every task): per task the error,
the answer NLL, the majority-class error (the floor a model must beat to show learning), the record
counts, the prompts scored, and whether the error is in the band the issue asks for (0.2 to 0.9).

No decisions are made, so ``decision_blocks`` is 0: every held-out prompt (up to ``task_eval_examples``
and ``max_eval_blocks``) is scored.  With the GPU config (20M, 400 pretraining steps, 200 steps of 32 per
task) the default four tasks should take about 2-3 minutes on one H200 (an estimate, not measured: about
30 s of start-up and pretraining, then per task some 10 s of data preparation and evaluation and 5-10 s of
eager steps).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]  # this checkout's hf_datamix, not an installed one
from _common import RESULTS_DIR, provenance, write_json  # noqa: E402

from hf_datamix import create_strategy  # noqa: E402
from hf_datamix.continual import run_continual  # noqa: E402
from hf_datamix.data.instruct_tasks import TASK_NAMES, build_task, majority_error  # noqa: E402
from hf_datamix.recipe_args import RunArguments, parse_args, setup_logging  # noqa: E402
from hf_datamix.sft import DataMixSFTConfig, DataMixSFTTrainer  # noqa: E402


DEFAULT_CONFIG = os.path.join(ROOT, "recipes", "configs", "instruct_quality_gpu.yaml")
DEFAULT_TASKS = "pos,section,add,cloze"
BAND = (0.2, 0.9)  # issue 20: base error after the first stage between these


def load_recipe():
    """``recipes/instruct.py`` as a module (benchmarks/instruct.py would shadow it on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location("instruct_recipe", os.path.join(ROOT, "recipes", "instruct.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrate_task(recipe, base, tokenizer, run, instruct, args, task: str) -> dict:
    """Train ``task`` alone for one stage from ``base`` and score it; the task's entry of the results file."""
    instruct = copy.copy(instruct)
    instruct.tasks = task
    _, stages = recipe.plan(run, instruct)
    stage_args = copy.deepcopy(args)
    stage_args.output_dir = os.path.join(args.output_dir, task)
    stage_args.strategy = "sequential"
    started = time.time()
    results = run_continual(
        copy.deepcopy(base),
        tokenizer,
        stage_args,
        stages,
        create_strategy("sequential"),
        trainer_class=DataMixSFTTrainer,
    )
    stage = results["stages"][0]
    data = build_task(task, args.seed)
    error = stage["eval_error"][task]
    return {
        "error": error,
        "answer_nll": stage["eval_answer_nll"][task],
        "majority_error": majority_error(task, args.seed),
        "records": {"train": len(data["train"]), "eval": len(data["eval"])},
        "eval_prompts": min(len(data["eval"]), args.task_eval_examples, args.max_eval_blocks or len(data["eval"])),
        "in_band": BAND[0] <= error <= BAND[1],
        "steps": stages[0].steps,
        "train_flops": results["compute"]["total_flops"],
        "wall_seconds": time.time() - started,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="working folder: the base under pretrain/, one folder per task")
    parser.add_argument(
        "--tasks", default=DEFAULT_TASKS, help=f"comma list of tasks, each trained alone: {TASK_NAMES}"
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--results", default=RESULTS_DIR)
    opts, recipe_flags = parser.parse_known_args()
    tasks = [t for t in opts.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown:
        parser.error(f"--tasks names unknown task(s) {unknown}; known tasks: {list(TASK_NAMES)}")
    recipe = load_recipe()
    # The recipe's flags after ours, so the command line can still set decision_blocks.
    argv = ["--config", opts.config, "--output_dir", opts.out, "--decision_blocks", "0", *recipe_flags]
    run, instruct, args = parse_args((RunArguments, recipe.InstructArguments, DataMixSFTConfig), argv=argv)
    setup_logging()
    path = os.path.join(opts.results, "instruct_tasks_calibration.json")
    payload = provenance("instruct_tasks_calibration", commit_env="OPMIX_COMMIT", software=("trl",))
    with open(opts.config, encoding="utf-8") as handle:
        config = handle.read()
    payload.update(
        {
            "config": config,
            "recipe_flags": recipe_flags,
            "settings": {
                "model_preset": run.model_preset,
                "pretrain_steps": run.pretrain_steps,
                "steps_per_stage": instruct.steps_per_stage,
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "learning_rate": args.learning_rate,
                "task_eval_examples": args.task_eval_examples,
                "task_max_new_tokens": args.task_max_new_tokens,
                "seed": args.seed,
                "band": BAND,
            },
            "tasks": {},
            "status": "running",
        }
    )
    started = time.time()
    tokenizer, base = recipe.base_model(run, instruct, args)
    payload["base_wall_seconds"] = time.time() - started
    write_json(path, payload)
    for task in tasks:
        payload["tasks"][task] = calibrate_task(recipe, base, tokenizer, run, instruct, args, task)
        write_json(path, payload)  # partial-safe: a cut run keeps the tasks done
    payload["status"] = "complete"
    payload["wall_seconds"] = time.time() - started
    write_json(path, payload)
    print(
        json.dumps(
            {t: {k: v[k] for k in ("error", "answer_nll", "majority_error")} for t, v in payload["tasks"].items()}
        )
    )


if __name__ == "__main__":
    main()
