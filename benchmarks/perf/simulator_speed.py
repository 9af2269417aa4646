"""Part 5's simulator figures: tokens/s of a LoRA probe and of a branch against main training.

Both run on the speed run's own trainer after its training, so model, block and batch are the same:
a probe through ``LoRAProbeSimulator.train_probe`` (op_mix's settings: bf16 autocast on a GPU when the
run is bf16, fused AdamW on CUDA, losses read back every few steps), a branch through
``TrainerBranches.train`` (the trainer's own step, optimizer and schedule).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from . import flops
from .common import sync


class _Clock:
    """Wraps a batch iterator: the time the first timed batch was asked for (setup excluded)."""

    def __init__(self, batches):
        self.batches, self.first = iter(batches), None

    def __iter__(self):
        return self

    def __next__(self):
        if self.first is None:
            sync()
            self.first = time.perf_counter()
        return next(self.batches)


def probe_speed(trainer, batch: int, warm: int, steps: int, bf16: bool, compile_probe: bool = False) -> dict[str, Any]:
    """Tokens/s of a probe trained ``steps`` steps after a ``warm``-step probe, on the trainer's model."""
    import torch

    from hf_datamix import Mixture
    from hf_datamix.compute import non_embedding_parameters
    from hf_datamix.simulate.lora_probes import LoRAProbeSimulator, ProbeConfig

    model = trainer.accelerator.unwrap_model(trainer.model)
    config = ProbeConfig(steps=steps, batch_size=batch, bf16=bf16, compile=compile_probe)
    mixture = Mixture.uniform(trainer.domains.names)
    started = time.perf_counter()
    with LoRAProbeSimulator(
        model, config, base_learning_rate=trainer.args.learning_rate, device=trainer.args.device
    ) as simulator:
        simulator.train_probe("warm", trainer.probe_batches(mixture, batch, seed=1), steps=warm)
        sync()
        warm_s = time.perf_counter() - started  # compiled: the probe step's one compilation is in here
        clock = _Clock(trainer.probe_batches(mixture, batch, seed=2))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = simulator.train_probe("timed", clock, steps=steps)
        sync()
        seconds = time.perf_counter() - clock.first
        # one more probe step under FlopCounterMode (eager): what a probe token really costs, against the ledger's 4N
        simulator.config = dataclasses.replace(config, compile=False)
        counted = flops.count_flops(
            lambda: simulator.train_probe("counted", trainer.probe_batches(mixture, batch, seed=3), steps=1)
        )
    record = {
        "steps": result.steps,
        "tokens": result.steps * batch * _block(trainer),
        "seconds": seconds,
        "bf16": bf16,
        "compiled": compile_probe,
        "fused_adamw": trainer.args.device.type == "cuda",
        "final_loss": result.final_loss,
        "warm_probe_s": warm_s,
        "wall_s": time.perf_counter() - started,
        "timing": f"a {warm}-step probe first (warm-up), then the timed probe from its first batch request to "
        "its last step, synchronised at both ends (adapter creation excluded)",
    }
    if torch.cuda.is_available():
        record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    record["tokens_per_s"] = record["tokens"] / seconds
    per_token = counted / (batch * _block(trainer))
    ledger = 4.0 * non_embedding_parameters(model)
    record.update(
        {
            "flops_per_token_counted": per_token,
            "ledger_flops_per_token": ledger,
            "counted_over_ledger": per_token / ledger,
            "flops_note": "counted: one probe step (forward + backward through the frozen base, adapters "
            "trained) under FlopCounterMode, LM head and attention included; ledger: 4 x "
            "non-embedding parameters (hf_datamix/compute.py)",
        }
    )
    return record


def branch_speed(trainer, warm: int, steps: int) -> dict[str, Any]:
    """Tokens/s of a branch (``steps`` steps after ``warm``), and where and how fast its snapshot lives."""
    import torch

    from hf_datamix import Mixture
    from hf_datamix.simulate.branches import TrainerBranches

    mixture = Mixture.uniform(trainer.domains.names)
    model_device = str(next(trainer.model.parameters()).device)
    sync()
    started = time.perf_counter()
    with TrainerBranches(trainer) as branches:
        sync()
        snapshot_s = time.perf_counter() - started
        saved = branches._saved
        devices = sorted(
            {str(t.device) for t in saved["params"]}
            | {str(v.device) for s in saved["state"].values() for v in s.values() if torch.is_tensor(v)}
        )
        branches.train(mixture, warm)
        sync()
        begin = time.perf_counter()
        _, tokens = branches.train(mixture, steps)
        sync()
        seconds = time.perf_counter() - begin
        branches.restore()
        sync()
        restore_s = time.perf_counter() - begin - seconds
    return {
        "steps": steps,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "snapshot_devices": devices,
        "snapshot_on_device": devices == [model_device],
        "snapshot_s": snapshot_s,
        "restore_s": restore_s,
        "timing": f"TrainerBranches.train: {warm} warm-up steps, then {steps} steps synchronised at both ends "
        "(includes the branch's batch stream setup); snapshot_s / restore_s = the on-device copies",
    }


def _block(trainer) -> int:
    return int(trainer.args.block_size)
