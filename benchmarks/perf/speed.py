"""Part 5: tokens/s and MFU of ``DataMixTrainer`` for several presets, with and without compile."""

from __future__ import annotations

import json
import time
from typing import Any

from . import flops, simulator_speed
from .common import (
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
    levers = ctx.opts.speed_levers  # training_levers(--speed-variants), checked by main before any part ran
    compile_variants = [True] if compile_mode == "on" else []
    # cheap eager runs first, then the compiled ones: the largest (the MFU target) first, then from the smallest;
    # last, the largest preset again under each named set of training levers (--speed-variants)
    compiled_order = presets[-1:] + presets[:-1]
    plan = [(p, False, None) for p in presets] + [(p, True, None) for p in compiled_order for _ in compile_variants]
    plan += [(presets[-1], bool(compile_variants), name) for name in levers]
    out: dict[str, Any] = {
        "data": f"embedded corpus (7 domains) packed into {block}-token blocks, uniform mixture, no repetition cap "
        "(real text, repeated)",
        "settings": {
            **{k: v for k, v in train_settings().items() if k in ("bf16", "optim", "max_grad_norm")},
            "attn_implementation": "sdpa",
            "block_size": block,
            "logging_nan_inf_filter": False,
            "dataloader_num_workers": 0,
            **extra,
        },
        "timing": f"{warm} warm-up steps (compilation happens there), then {synced} steps synchronised at every "
        f"step (median_step_s = on_step_begin->on_step_end, median_interval_s = end->end incl. the "
        f"batch fetch), then {window} steps synchronised only at both ends (tokens_per_s: the GPU "
        "runs ahead as in a real run; MFU is computed from it)",
        "mfu_formula": MFU_FORMULA,
        "runs": {},
    }
    if levers:
        out["variants"] = {
            "preset": presets[-1],
            "levers": levers,
            "note": "each variant: the largest preset again, with these TrainingArguments on top of the settings",
        }
    precision = flops.train_precision(bf16=gpu)
    peak, peak_source = flops.device_peak(torch.cuda.get_device_name(0) if gpu else None, precision)
    out.update({"precision": precision, "peak_flops": peak, "peak_source": peak_source})
    if peak is None:
        out["mfu_none_reason"] = peak_source
    # probes and branches: on the first (smallest) preset's runs, against that run's own tokens/s
    simulated = presets[0]
    probe_warm, probe_steps = (2, 4) if quick else (5, 30)
    if not compile_variants:
        out["torch_compile"] = (
            "not run (--speed-compile off; the --quick default: inductor compilation takes minutes on 2 CPU cores)"
        )
    for index, (preset, compiled, variant) in enumerate(plan):
        key = f"{preset}{'_compiled' if compiled else '_eager'}" + (f"_{variant}" if variant else "")
        overrides = {**extra, **levers.get(variant, {})}
        need = 60 if compiled else (2 if quick else 8)
        if index > 0 and ctx.remaining() < need:
            out["runs"][key] = {"skipped": f"time budget ({ctx.remaining():.0f}s left of this part, needs ~{need}s)"}
            log(f"speed {key}: skipped (budget)")
            continue
        batch = int(overrides.pop("per_device_train_batch_size", batches.get(preset, 8)))
        steps = warm + synced + window
        first_window = warm + synced
        started = time.perf_counter()
        try:
            if compiled:
                torch._dynamo.reset()  # a new model per run: keep dynamo's recompile limit out of the way
            model = new_model(ctx, preset).to(ctx.device)
            counted = flops.step_flops(model, batch, block, bf16=gpu, key=(preset, block))
            timer = StepTimer(
                sync_begin=lambda s, a=warm, b=first_window: a < s <= b,
                sync_end=lambda s, a=warm, b=first_window, c=steps: a < s <= b or s == c,
            )
            args = datamix_args(
                ctx.outdir("speed", key),
                "uniform",
                max_steps=steps,
                per_device_train_batch_size=batch,
                block_size=block,
                **{"torch_compile": compiled, "logging_nan_inf_filter": False, **overrides},
            )
            trainer = DataMixTrainer(
                model=model, args=args, domains=ctx.corpus(), processing_class=ctx.tokenizer(), callbacks=[timer]
            )
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
            fpt = counted / tokens_per_step
            fpt_formula, fpt_6n = flops.formula_flops_per_token(model, block)
            tps = tokens_per_step / window_s
            record = {
                "preset": preset,
                **({"variant": variant, "levers": levers[variant]} if variant else {}),
                "torch_compile": compiled,
                "per_device_train_batch_size": batch,
                "tokens_per_step": tokens_per_step,
                "params_total": model.num_parameters(),
                "params_nonembedding": model.num_parameters(exclude_embeddings=True),
                "median_step_s": step_s,
                "median_interval_s": interval_s,
                "window_step_s": window_s,
                "tokens_per_s": tps,
                "tokens_per_s_from_median_interval": tokens_per_step / interval_s,
                "flops_per_step_counted": counted,
                "flops_per_token": fpt,
                "mfu": flops.mfu(tps, fpt, peak),
                "flops_per_token_formula": fpt_formula,
                "counted_over_formula": fpt / fpt_formula,
                "mfu_from_formula": flops.mfu(tps, fpt_formula, peak),
                "mfu_6n_only": flops.mfu(tps, fpt_6n, peak),
                "first_steps_s": (timer.end.get(warm, built) - built),
                "build_s": built - started,
                "wall_s": time.perf_counter() - started,
            }
            if gpu:
                record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if record["mfu"] is None:
                record["mfu_none_reason"] = peak_source
            out["runs"][key] = record
            shown = "n/a" if record["mfu"] is None else f"{record['mfu']:.1%}"
            log(
                f"speed {key}: {tps / 1e6:.3f}M tokens/s, MFU {shown} (step {step_s * 1e3:.1f} ms, "
                f"warm-up {record['first_steps_s']:.1f}s, wall {record['wall_s']:.1f}s)"
            )
            if preset == simulated and not variant:
                record["simulators"] = simulators(ctx, trainer, batch, tps, probe_warm, probe_steps, gpu, compiled)
            ctx.progress(out)
        except Exception as error:  # noqa: BLE001 - one failed run (OOM, compile error) must not lose the others
            out["runs"][key] = {
                "error": f"{type(error).__name__}: {str(error)[:500]}",
                "per_device_train_batch_size": batch,
            }
            out.setdefault("errors", []).append(f"{key}: {type(error).__name__}: {str(error)[:300]}")
            log(f"speed {key}: ERROR {type(error).__name__}: {str(error)[:200]}")
        trainer = model = None
        free_memory()
    summarise_simulators(out, simulated)
    for preset in presets:
        eager, comp = out["runs"].get(f"{preset}_eager", {}), out["runs"].get(f"{preset}_compiled", {})
        if "tokens_per_s" in eager and "tokens_per_s" in comp:
            out.setdefault("compile_speedup", {})[preset] = comp["tokens_per_s"] / eager["tokens_per_s"]
    if levers:
        out["variants"]["fastest"] = fastest_run(out["runs"], presets[-1], bool(compile_variants))
    return out


def training_levers(text: str | None) -> dict[str, dict[str, Any]]:
    """``--speed-variants``: a JSON object of ``name -> TrainingArguments overrides``, checked before any run.

    E.g. ``{"b128": {"per_device_train_batch_size": 128}, "autotune": {"torch_compile_mode": "max-autotune"}}``:
    settings a user can put in a recipe config, timed one against another on the same model.
    """
    if not text:
        return {}
    import dataclasses

    from transformers import TrainingArguments

    try:
        levers = json.loads(text)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--speed-variants is not JSON ({error}); give e.g. '{{\"b128\": {{...}}}}'.") from None
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    if not isinstance(levers, dict) or not all(isinstance(v, dict) for v in levers.values()):
        raise SystemExit("--speed-variants: give a JSON object of name -> {TrainingArguments field: value}.")
    for name, overrides in levers.items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise SystemExit(f"--speed-variants: variant name {name!r} must be letters, digits, '-' or '_'.")
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SystemExit(f"--speed-variants: variant {name!r} sets {unknown}, not TrainingArguments fields.")
    return levers


def fastest_run(runs: dict[str, Any], preset: str, compiled: bool) -> dict[str, Any] | None:
    """The fastest of ``preset``'s runs at this compile setting (plain and variants): key, tokens/s, MFU."""
    stem = f"{preset}{'_compiled' if compiled else '_eager'}"
    timed = {k: r for k, r in runs.items() if (k == stem or k.startswith(stem + "_")) and "tokens_per_s" in r}
    if not timed:
        return None
    key = max(timed, key=lambda k: timed[k]["tokens_per_s"])
    return {"run": key, "tokens_per_s": timed[key]["tokens_per_s"], "mfu": timed[key]["mfu"]}


def simulators(
    ctx: Context, trainer, batch: int, train_tps: float, warm: int, steps: int, gpu: bool, compiled: bool
) -> dict[str, Any]:
    """A probe and a branch on the run's trainer (same model, block, batch), each against the run's tokens/s."""
    out: dict[str, Any] = {}
    for name, measure in (
        ("probe", lambda: simulator_speed.probe_speed(trainer, batch, warm, steps, bf16=gpu, compile_probe=compiled)),
        ("branch", lambda: simulator_speed.branch_speed(trainer, warm, steps)),
    ):
        # a compiled probe step compiles in the warm-up probe; the timed probe reuses it (same adapter slot)
        need = 1.5 if ctx.quick else (120 if compiled and name == "probe" else 40)
        if ctx.remaining() < need:
            out[name] = {"skipped": f"time budget ({ctx.remaining():.0f}s left of this part, needs ~{need}s)"}
            continue
        try:
            with quiet(ctx):
                record = measure()
            record["vs_train_tokens_per_s"] = record["tokens_per_s"] / train_tps
            out[name] = record
            log(
                f"speed {name} on {'compiled' if compiled else 'eager'} run: {record['tokens_per_s'] / 1e6:.3f}M "
                f"tokens/s = {record['vs_train_tokens_per_s']:.2f}x training"
            )
        except Exception as error:  # noqa: BLE001 - recorded; the training figures stand
            out[name] = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
            log(f"speed {name}: ERROR {type(error).__name__}: {str(error)[:200]}")
        free_memory()
    return out


def summarise_simulators(out: dict[str, Any], preset: str) -> None:
    """``probe_vs_train_tokens_per_s`` / ``branch_vs_train_tokens_per_s``: the best of ``preset``'s runs (eager,
    compiled) over that preset's fastest training, or None with the reason."""
    runs = [out["runs"].get(f"{preset}_{kind}", {}) for kind in ("eager", "compiled")]
    train = [r["tokens_per_s"] for r in runs if "tokens_per_s" in r]
    for name in ("probe", "branch"):
        measured = [
            r["simulators"][name]["tokens_per_s"]
            for r in runs
            if "tokens_per_s" in r.get("simulators", {}).get(name, {})
        ]
        key = f"{name}_vs_train_tokens_per_s"
        if measured and train:
            out[key] = max(measured) / max(train)
            out[f"{key}_meaning"] = (
                f"the faster {name} of {preset}'s runs over {preset}'s faster training run (same "
                "model, block and batch); each run's own ratio is in runs.<run>.simulators"
            )
        else:
            out[key] = None
            out[f"{key}_reason"] = f"no {name} or no training run of {preset} was measured (see runs)"
