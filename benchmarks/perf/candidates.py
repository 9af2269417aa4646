"""Part 4: candidate evaluation of the LoRA probes vs a plain forward pass, and peak memory."""

from __future__ import annotations

import time
from typing import Any

from .common import (
    Context,
    cuda,
    free_memory,
    log,
    median,
    new_model,
    pick,
    sync,
)


def part_candidates(ctx: Context) -> dict:
    import numpy as np
    import torch

    from hf_datamix.compute import ComputeLedger
    from hf_datamix.simulate.lora_probes import LoRAProbeSimulator, ProbeConfig

    quick, gpu = ctx.quick, cuda()
    preset, block = pick(ctx, "candidates_preset", "tiny", "20m"), pick(ctx, "candidates_block", 64, 1024)
    eval_per_domain, batch = (4, 16) if quick else (64, 16)  # op_mix's default eval_blocks (the corpus has fewer)
    probes, probe_steps, probe_batch = (2, 3, 4) if quick else (3, 10, 8)
    sources, evals = ctx.packed(block)
    eval_sets = {n: torch.from_numpy(np.asarray(b[:eval_per_domain], dtype=np.int64)) for n, b in evals.items()}
    eval_tokens = sum(t.numel() for t in eval_sets.values())
    model = new_model(ctx, preset).to(ctx.device)
    ledger = ComputeLedger()
    sim = LoRAProbeSimulator(
        model,
        ProbeConfig(steps=probe_steps, batch_size=probe_batch, bf16=gpu, seed=0),
        base_learning_rate=1e-3,
        ledger=ledger,
        device=ctx.device,
    )

    def measure(candidates, reps):
        times, peaks, deltas = [], [], []
        for _ in range(reps):
            sync()
            if gpu:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            start = time.perf_counter()
            sim.evaluate_candidates(candidates, eval_sets, batch)
            sync()
            times.append(time.perf_counter() - start)
            if gpu:
                peaks.append(torch.cuda.max_memory_allocated())
                deltas.append(torch.cuda.max_memory_allocated() - before)
        return median(times), (max(peaks) if peaks else None), (max(deltas) if deltas else None)

    measure([{}], 1)  # warm-up (kernels, allocator)
    plain_s, plain_peak, plain_delta = measure([{}], 3)
    rng = np.random.default_rng(0)
    names = [f"p{i}" for i in range(probes)]
    train_rows = np.concatenate([np.asarray(s.blocks) for s in sources.values()])

    def batches():
        while True:
            ids = torch.from_numpy(train_rows[rng.integers(0, len(train_rows), probe_batch)].astype(np.int64))
            yield {"input_ids": ids, "labels": ids}

    sync()
    start = time.perf_counter()
    for name in names:
        sim.train_probe(name, batches())
    sync()
    probe_train_s = time.perf_counter() - start
    out: dict[str, Any] = {
        "model": f"random-init Llama preset {preset!r} on {ctx.device}",
        "eval_sets": f"{len(eval_sets)} embedded-corpus domains x up to {eval_per_domain} eval blocks of {block} "
        f"tokens ({sum(len(t) for t in eval_sets.values())} blocks, {eval_tokens} tokens), eval batch {batch}",
        "probes": {
            "count": probes,
            "steps": probe_steps,
            "batch_size": probe_batch,
            "rank": 16,
            "bf16_autocast": gpu,
            "training_s": probe_train_s,
        },
        "plain_forward": {
            "seconds": plain_s,
            "tokens_per_s": eval_tokens / plain_s,
            "peak_memory_bytes": plain_peak,
            "note": "evaluate_candidates([{}]) before any probe exists: the bare model's forward passes and "
            "the same loss computation over the same eval sets (median of 3 after a warm-up)",
        },
        "by_candidates": {},
    }
    # θ with the probes attached but inactive: the cost of the PEFT wrappers alone
    theta_s, _, _ = measure([{}], 2)
    out["theta_with_probes_attached_s"] = theta_s
    for count in (1, 4, 12):
        weights = np.random.default_rng(count).dirichlet(np.ones(len(names)), size=count)
        candidates = [dict(zip(names, row)) for row in weights]
        if count == 1:
            measure(candidates, 1)
        seconds, peak, delta = measure(candidates, 3 if count == 1 else (2 if count == 4 else 1))
        record = {
            "seconds": seconds,
            "seconds_per_candidate": seconds / count,
            "per_candidate_over_plain_forward": seconds / count / plain_s,
        }
        if gpu:
            record.update(
                {
                    "peak_memory_bytes": peak,
                    "peak_over_single_plain_evaluation": peak / plain_peak,
                    "peak_increment_bytes": delta,
                    "peak_increment_over_plain_increment": delta / plain_delta if plain_delta else None,
                }
            )
        out["by_candidates"][str(count)] = record
        log(
            f"candidates C={count}: {seconds / count * 1e3:.1f} ms/candidate = "
            f"{record['per_candidate_over_plain_forward']:.2f}x plain forward"
        )
    if gpu:
        c1 = out["by_candidates"]["1"]["peak_memory_bytes"]
        for record in out["by_candidates"].values():
            record["peak_over_single_candidate"] = record["peak_memory_bytes"] / c1
        out["memory_note"] = (
            "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), model weights "
            "included; peak_increment = peak minus what was allocated before the call"
        )
    else:
        out["memory_note"] = "CPU run: time only"
    sim.close()
    sim = model = None  # dropped before the next part
    free_memory()
    return out
