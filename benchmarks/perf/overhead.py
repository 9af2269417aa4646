"""Part 2: median step time of a plain ``Trainer`` vs ``DataMixTrainer`` on the same data."""

from __future__ import annotations

import time
from typing import Any

from .common import (
    Context,
    StepTimer,
    cuda,
    datamix_args,
    decision_records,
    free_memory,
    log,
    median,
    new_model,
    pick,
    quiet,
    sync,
    train_settings,
)


def loader_seconds(trainer, batches: int) -> float:
    """Seconds per batch of the trainer's own prepared train DataLoader alone (batches land on the device)."""
    loader = trainer.get_train_dataloader()
    iterator = iter(loader)
    next(iterator)
    sync()
    start = time.perf_counter()
    for _ in range(batches):
        try:
            next(iterator)
        except StopIteration:  # a map-style epoch ended: a new epoch's iterator, as Trainer does
            iterator = iter(loader)
            next(iterator)
    sync()
    return (time.perf_counter() - start) / batches


def part_overhead(ctx: Context) -> dict:
    import numpy as np
    from transformers import Trainer, TrainingArguments, default_data_collator

    from hf_datamix import DataMixTrainer
    from hf_datamix.data.blocks import BlockDataset

    quick = ctx.quick
    preset = pick(ctx, "overhead_preset", "tiny", "20m")
    block = pick(ctx, "overhead_block", 64, 1024)
    batch = pick(ctx, "overhead_batch", 4, 32)
    steps = pick(ctx, "overhead_steps", 25, 230)
    warm = min(30, max(2, steps // 5)) if quick or steps < 150 else 30
    sources, _ = ctx.packed(block)
    blocks = np.concatenate([np.asarray(src.blocks) for src in sources.values()])
    common = {"max_steps": steps, "per_device_train_batch_size": batch}
    decision_step = max(1, warm // 3)
    rounds = pick(ctx, "overhead_rounds", 1, 3)
    specs = {
        "plain_trainer": None,
        "datamix_uniform": ("uniform", {}),
        "datamix_op_mix_no_decision": ("op_mix", {"warmup_fraction": 0.999}),
        "datamix_uniform_dispatch_on": ("uniform", {}),
        "datamix_op_mix_decided_in_warmup": (
            "op_mix",
            {
                "warmup_fraction": decision_step / steps,
                "probe_steps": 2 if quick else 10,
                "probe_batch_size": 8,
                "eval_blocks": 2 if quick else 4,
                "num_candidates": 12,
                "law_starts": 30 if quick else 300,
                "probe_bf16": cuda(),
            },
        ),
    }
    # Rounds of plain / uniform / op_mix back to back: a GPU's speed drifts by a few percent between
    # runs, so each DataMixTrainer run is compared with the plain run of its own round.
    core = ["plain_trainer", "datamix_uniform", "datamix_op_mix_no_decision"]
    order = [("untimed_warmup", None)] + [(f"{name}@{r}", specs[name]) for r in range(1, rounds + 1) for name in core]
    order += [
        (f"{name}@1", specs[name]) for name in ("datamix_uniform_dispatch_on", "datamix_op_mix_decided_in_warmup")
    ]
    out: dict[str, Any] = {
        "model": f"random-init Llama preset {preset!r} (hf_datamix.models), sdpa attention",
        "data": f"embedded corpus (7 domains) packed into {block}-token blocks; the plain Trainer reads the same "
        f"blocks ({len(blocks)}) as a map-style dataset (hf_datamix.data.blocks.BlockDataset, RandomSampler); "
        "DataMixTrainer draws them through the Interleaver, no repetition cap",
        "settings": {
            "steps": steps,
            "dropped_warmup_steps": warm,
            "per_device_train_batch_size": batch,
            "block_size": block,
            **{
                k: v
                for k, v in train_settings().items()
                if k in ("bf16", "optim", "dataloader_num_workers", "max_grad_norm", "torch_compile")
            },
        },
        "timing": "StepTimer callback with torch.cuda.synchronize at on_step_begin and on_step_end; step_s = begin->end "
        "(forward/backward/optimizer), interval_s = end->end (adds fetching the next batch and all "
        "callbacks, e.g. MixingController); medians over the steps after the warm-up",
        "dispatch_on": "datamix_uniform_dispatch_on = datamix_uniform with accelerator_config={'dispatch_batches': "
        "True}: accelerate's DataLoaderDispatcher, its default for an IterableDataset; on one process "
        "DataMixTrainer now turns dispatching off (reads its batches directly) unless it is set",
        "op_mix_no_decision": f"op_mix pretraining schedule with warmup_fraction=0.999: next_decision_step(1, {steps}) "
        f"= round(0.999*{steps}) = {round(0.999 * steps)} >= max_steps-1, so it returns None and "
        "no decision is taken in the run (the strategy, callback and horizon machinery run)",
        "op_mix_decided_in_warmup": f"op_mix pretraining schedule deciding after step {decision_step} (inside the "
        f"{warm} dropped warm-up steps): probes are trained, attached and removed, "
        "and the timed steps run on the decided mixture afterwards",
        "variants": {},
    }
    for name, spec in order:
        if ctx.remaining() < -15 and name not in ("untimed_warmup", "plain_trainer@1"):  # 15 s of grace: cheap runs
            out["variants"][name] = {"skipped": "time budget"}
            continue
        started = time.perf_counter()
        model = new_model(ctx, preset)
        timer = StepTimer()
        outdir = ctx.outdir("overhead", name)
        if name == "untimed_warmup":  # first-run costs (CUDA context, cuBLAS, allocator growth) land here
            warmup = Trainer(
                model=model,
                train_dataset=BlockDataset(blocks),
                data_collator=default_data_collator,
                args=TrainingArguments(output_dir=outdir, **train_settings(**{**common, "max_steps": warm})),
            )
            with quiet(ctx):
                warmup.train()
            del warmup
            log(f"overhead warm-up run: {time.perf_counter() - started:.1f}s")
            del model
            free_memory()
            continue
        try:
            if spec is None:
                trainer = Trainer(
                    model=model,
                    args=TrainingArguments(output_dir=outdir, **train_settings(**common)),
                    train_dataset=BlockDataset(blocks),
                    data_collator=default_data_collator,
                    callbacks=[timer],
                )
            else:
                strategy, strategy_args = spec
                extra = {"accelerator_config": {"dispatch_batches": True}} if "dispatch_on" in name else {}
                trainer = DataMixTrainer(
                    model=model,
                    args=datamix_args(outdir, strategy, strategy_args, block_size=block, **common, **extra),
                    domains=ctx.corpus(),
                    processing_class=ctx.tokenizer(),
                    callbacks=[timer],
                )
            with quiet(ctx):
                trainer.train()
            sync()
        except Exception as error:  # noqa: BLE001 - recorded; the other variants still run
            out["variants"][name] = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
            out.setdefault("errors", []).append(f"{name}: {type(error).__name__}: {str(error)[:300]}")
            log(f"overhead {name}: ERROR {type(error).__name__}: {str(error)[:200]}")
            trainer = model = None
            free_memory()
            continue
        record = {
            "median_step_s": median(timer.step_s(warm + 1, steps)),
            "median_interval_s": median(timer.interval_s(warm + 1, steps)),
            "timed_steps": len(timer.step_s(warm + 1, steps)),
            "wall_s": time.perf_counter() - started,
        }
        if name in ("plain_trainer@1", "datamix_uniform@1", "datamix_uniform_dispatch_on@1"):
            record["loader_only_s_per_batch"] = loader_seconds(trainer, 50 if quick else 100)
        if spec is not None:
            decisions = decision_records(trainer.history)
            record["decisions"] = [
                {"stage_step": r["stage_step"], "kind": r["kind"], "seconds": r.get("seconds")} for r in decisions
            ]
        out["variants"][name] = record
        log(
            f"overhead {name}: step {record['median_step_s'] * 1e3:.2f} ms, interval "
            f"{record['median_interval_s'] * 1e3:.2f} ms ({record['wall_s']:.1f}s)"
        )
        del trainer, model
        free_memory()
    measured = {name: record for name, record in out["variants"].items() if "median_step_s" in record}
    plain = {int(name.split("@")[1]): record for name, record in measured.items() if name.startswith("plain_trainer@")}
    if not plain:
        raise RuntimeError(f"no plain-Trainer baseline was measured: {out.get('errors')}")
    base_step = float(np.mean([p["median_step_s"] for p in plain.values()]))
    base_interval = float(np.mean([p["median_interval_s"] for p in plain.values()]))
    by_variant: dict[str, list[tuple[float, float, float]]] = {}
    for name, record in measured.items():
        variant, round_ = name.split("@")[0], int(name.split("@")[1])
        if variant != "plain_trainer" and round_ in plain:
            own = plain[round_]
            by_variant.setdefault(variant, []).append(
                (
                    record["median_step_s"] / own["median_step_s"],
                    record["median_interval_s"] / own["median_interval_s"],
                    (record["median_interval_s"] - own["median_interval_s"]) * 1e3,
                )
            )
    out["ratios_vs_plain"] = {
        variant: {
            "step_ratio": median([r[0] for r in rows]),
            "interval_ratio": median([r[1] for r in rows]),
            "interval_overhead_ms": median([r[2] for r in rows]),
            "rounds": len(rows),
            "step_ratio_by_round": [r[0] for r in rows],
        }
        for variant, rows in by_variant.items()
    }
    out["plain_baseline"] = {
        "median_step_s": base_step,
        "median_interval_s": base_interval,
        "rounds": len(plain),
        "step_s_by_round": [plain[r]["median_step_s"] for r in sorted(plain)],
        "note": "ratios are each run over the plain run of its own round, then the median over "
        "rounds; the plain runs' spread shows the GPU's drift",
    }
    if len(plain) > 1:
        steps_ = [p["median_step_s"] for p in plain.values()]
        out["plain_round_spread"] = (max(steps_) - min(steps_)) / base_step
    plain_loader = out["variants"].get("plain_trainer@1", {}).get("loader_only_s_per_batch")
    mix_loader = out["variants"].get("datamix_uniform@1", {}).get("loader_only_s_per_batch")
    on_loader = out["variants"].get("datamix_uniform_dispatch_on@1", {}).get("loader_only_s_per_batch")
    if plain_loader and mix_loader:
        out["loader_only"] = {
            "plain_s_per_batch": plain_loader,
            "datamix_s_per_batch": mix_loader,
            "datamix_dispatch_on_s_per_batch": on_loader,
            "difference_over_plain_step": (mix_loader - plain_loader) / base_step,
            "note": "each trainer's prepared train DataLoader iterated alone after training (collation and the "
            "copy to the device included): the data path's share of a step, free of GPU timing noise",
        }
    return out
