"""Part 5: tokens/s and MFU of ``DataMixTrainer`` for several presets, with and without compile."""

from __future__ import annotations

import json
import time
from typing import Any

from .common import (
    H100_BF16_PEAK,
    MFU_FORMULA,
    Context,
    StepTimer,
    cuda,
    datamix_args,
    free_memory,
    log,
    median,
    new_model,
    pick,
    quiet,
    sync,
    train_settings,
)


def flops_per_token(model, block: int) -> tuple[float, float]:
    config = model.config
    n = model.num_parameters(exclude_embeddings=True)
    head = config.vocab_size * config.hidden_size
    attention = 12 * config.num_hidden_layers * config.hidden_size * block
    return 6.0 * (n + head) + attention, 6.0 * n


def part_speed(ctx: Context) -> dict:
    import torch

    from hf_datamix import DataMixTrainer

    quick, gpu = ctx.quick, cuda()
    block = pick(ctx, "speed_block", 64, 1024)
    presets = pick(ctx, "speed_presets", "tiny,small", "20m,60m,150m").split(",")
    batches = dict(item.split("=") for item in ctx.opts.speed_batch.split(","))
    batches = {k: int(v) for k, v in batches.items()}
    warm, synced, window = (3, 5, 5) if quick else (8, 15, 15)
    compile_mode = ctx.opts.speed_compile or ("off" if quick else "on")
    extra = json.loads(ctx.opts.speed_args) if ctx.opts.speed_args else {}
    compile_variants = [True] if compile_mode == "on" else []
    # cheap eager runs first, then the compiled ones: the largest (the MFU target) first, then from the smallest
    compiled_order = presets[-1:] + presets[:-1]
    plan = [(p, False) for p in presets] + [(p, True) for p in compiled_order for _ in compile_variants]
    out: dict[str, Any] = {
        "data": f"embedded corpus (7 domains) packed into {block}-token blocks, uniform mixture, no repetition cap "
                "(real text, repeated)",
        "settings": {**{k: v for k, v in train_settings().items() if k in ("bf16", "optim", "max_grad_norm")},
                     "attn_implementation": "sdpa", "block_size": block, "logging_nan_inf_filter": False,
                     "dataloader_num_workers": 0, **extra},
        "timing": f"{warm} warm-up steps (compilation happens there), then {synced} steps synchronised at every "
                  f"step (median_step_s = on_step_begin->on_step_end, median_interval_s = end->end incl. the "
                  f"batch fetch), then {window} steps synchronised only at both ends (tokens_per_s: the GPU "
                  "runs ahead as in a real run; MFU is computed from it)",
        "mfu_formula": MFU_FORMULA,
        "peak_flops": H100_BF16_PEAK,
        "runs": {},
    }
    if not compile_variants:
        out["torch_compile"] = ("not run (--speed-compile off; the --quick default: inductor compilation takes "
                                "minutes on 2 CPU cores)")
    if gpu and "H100" not in torch.cuda.get_device_name(0):
        out["peak_note"] = "MFU uses the H100 SXM peak although this GPU is not one"
    for index, (preset, compiled) in enumerate(plan):
        key = f"{preset}{'_compiled' if compiled else '_eager'}"
        need = 60 if compiled else (2 if quick else 8)
        if index > 0 and ctx.remaining() < need:
            out["runs"][key] = {"skipped": f"time budget ({ctx.remaining():.0f}s left of this part, needs ~{need}s)"}
            log(f"speed {key}: skipped (budget)")
            continue
        batch = batches.get(preset, 8)
        steps = warm + synced + window
        first_window = warm + synced
        started = time.perf_counter()
        try:
            if compiled:
                torch._dynamo.reset()  # a new model per run: keep dynamo's recompile limit out of the way
            model = new_model(ctx, preset)
            timer = StepTimer(sync_begin=lambda s, a=warm, b=first_window: a < s <= b,
                              sync_end=lambda s, a=warm, b=first_window, c=steps: a < s <= b or s == c)
            args = datamix_args(ctx.outdir("speed", key), "uniform", max_steps=steps, per_device_train_batch_size=batch,
                                block_size=block, torch_compile=compiled, logging_nan_inf_filter=False, **extra)
            trainer = DataMixTrainer(model=model, args=args, domains=ctx.corpus(), processing_class=ctx.tokenizer(),
                                     callbacks=[timer])
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            built = time.perf_counter()
            with quiet(ctx):
                trainer.train()
            sync()
            tokens_per_step = batch * block
            step_s = median(timer.step_s(warm + 1, first_window))
            interval_s = median(timer.interval_s(warm + 1, first_window))
            window_s = (timer.end[steps] - timer.end[first_window]) / (steps - first_window)
            fpt, fpt_6n = flops_per_token(model, block)
            tps = tokens_per_step / window_s
            record = {
                "preset": preset, "torch_compile": compiled, "per_device_train_batch_size": batch,
                "tokens_per_step": tokens_per_step, "params_total": model.num_parameters(),
                "params_nonembedding": model.num_parameters(exclude_embeddings=True),
                "median_step_s": step_s, "median_interval_s": interval_s, "window_step_s": window_s,
                "tokens_per_s": tps, "tokens_per_s_from_median_interval": tokens_per_step / interval_s,
                "flops_per_token": fpt, "mfu": tps * fpt / H100_BF16_PEAK, "mfu_6n_only": tps * fpt_6n / H100_BF16_PEAK,
                "first_steps_s": (timer.end.get(warm, built) - built),
                "build_s": built - started, "wall_s": time.perf_counter() - started,
            }
            if gpu:
                record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            out["runs"][key] = record
            log(f"speed {key}: {tps / 1e6:.3f}M tokens/s, MFU {record['mfu']:.1%} (step {step_s * 1e3:.1f} ms, "
                f"warm-up {record['first_steps_s']:.1f}s, wall {record['wall_s']:.1f}s)")
        except Exception as error:  # noqa: BLE001 - one failed run (OOM, compile error) must not lose the others
            out["runs"][key] = {"error": f"{type(error).__name__}: {str(error)[:500]}", "per_device_train_batch_size": batch}
            out.setdefault("errors", []).append(f"{key}: {type(error).__name__}: {str(error)[:300]}")
            log(f"speed {key}: ERROR {type(error).__name__}: {str(error)[:200]}")
        trainer = model = None
        free_memory()
    for preset in presets:
        eager, comp = out["runs"].get(f"{preset}_eager", {}), out["runs"].get(f"{preset}_compiled", {})
        if "tokens_per_s" in eager and "tokens_per_s" in comp:
            out.setdefault("compile_speedup", {})[preset] = comp["tokens_per_s"] / eager["tokens_per_s"]
    return out
