"""One launched run of benchmarks/multigpu.py (started by ``accelerate launch``; one per process).

Trains the embedded corpus with ``op_mix`` (one decision early in the run) and writes
``<out>/rank<k>.json`` per process: the mixture applied at every step, a hash of every block it
trained on, the step times, the end-of-run per-domain eval losses and the ledger.

    accelerate launch --config_file accelerate_configs/ddp.yaml --num_processes 2 \\
        benchmarks/multigpu_worker.py --out /tmp/run --per_device_batch 32 --max_steps 120
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import torch
from _common import decision_records  # this script's folder, benchmarks/, is on sys.path
from transformers import TrainerCallback

from hf_datamix import DataMixArguments, DataMixTrainer
from hf_datamix.recipe_args import RunArguments, load_domains, load_model, load_tokenizer


class StepClock(TrainerCallback):
    """Wall time of every optimizer step (synchronised), to get a median step free of the decision."""

    def __init__(self):
        self.begin, self.seconds = 0.0, {}

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds[state.global_step] = time.perf_counter() - self.begin


class HashingTrainer(DataMixTrainer):
    """Keeps a short hash of every block this process trains on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.block_hashes: list[str] = []

    def training_step(self, model, inputs, *args, **kwargs):
        for row in inputs["input_ids"].cpu().numpy():
            self.block_hashes.append(hashlib.sha1(row.tobytes()).hexdigest()[:16])
        return super().training_step(model, inputs, *args, **kwargs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="20m")
    parser.add_argument("--per_device_batch", type=int, default=32)
    parser.add_argument("--grad_accum", type=int, default=1)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--max_steps", type=int, default=120)
    parser.add_argument("--decision_fraction", type=float, default=0.2)
    parser.add_argument("--probe_steps", type=int, default=30)
    parser.add_argument("--save_steps", type=int, default=0, help="checkpoint every N steps (0: none)")
    parser.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    parser.add_argument("--cpu", action="store_true", help="tiny CPU run (the script's own test)")
    opts = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not opts.cpu
    run = RunArguments(model_preset=opts.preset)
    tokenizer = load_tokenizer(run)
    domains = load_domains(run)
    args = DataMixArguments(
        output_dir=opts.out,
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.per_device_batch,
        gradient_accumulation_steps=opts.grad_accum,
        block_size=opts.block_size,
        learning_rate=1e-3,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=10,
        bf16=gpu,
        use_cpu=not gpu,
        optim="adamw_torch_fused" if gpu else "adamw_torch",
        max_grad_norm=1.0,
        max_repetitions=0,
        strategy="op_mix",
        strategy_args={
            "warmup_fraction": opts.decision_fraction,
            "probe_steps": opts.probe_steps,
            "eval_blocks": 16,
            "probe_bf16": gpu,
            "law_starts": 100,
        },
        save_strategy="steps" if opts.save_steps else "no",
        save_steps=opts.save_steps or 500,
        eval_strategy="no",
        max_eval_blocks=32,
        per_device_eval_batch_size=16,
        logging_steps=20,
        report_to=[],
        disable_tqdm=True,
        seed=0,
        write_plots=False,
        ddp_timeout=3600,
    )
    model = load_model(run, tokenizer, seed=0)
    clock = StepClock()
    trainer = HashingTrainer(model=model, args=args, domains=domains, processing_class=tokenizer, callbacks=[clock])
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=opts.resume)
    wall = time.perf_counter() - started
    metrics = trainer.evaluate()
    decisions = decision_records(trainer.history)
    record = {
        "rank": trainer.args.process_index,
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "per_device_batch": opts.per_device_batch,
        "grad_accum": opts.grad_accum,
        "global_batch": trainer.samples_per_step,
        "block_size": opts.block_size,
        "mixture_by_step": [
            trainer.interleaver.weights_at(s * trainer.samples_per_step).to_dict()
            for s in range(trainer.state.max_steps)
        ],
        "decisions": [
            {"stage_step": r["stage_step"], "kind": r["kind"], "weights": r["weights"], "seconds": r.get("seconds")}
            for r in decisions
        ],
        "block_hashes": trainer.block_hashes,
        "step_seconds": clock.seconds,
        "train_wall_s": wall,
        "eval": {k: float(v) for k, v in metrics.items() if k.endswith("_loss")},
        "ledger": trainer.ledger.to_dict(),
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
    }
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, f"rank{record['rank']}.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    sys.exit(main())
