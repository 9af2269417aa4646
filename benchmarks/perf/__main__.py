"""Performance benchmark (issue 7): every speed figure side by side, in one run on one machine.

One module per part (``interleaver.py`` ... ``scaling.py``); what they share is ``common.py``.

    python -m benchmarks.perf                      # the GPU run (one H100/H200: within --budget-s, 530 s)
    python -m benchmarks.perf --quick              # tiny sizes on CPU (< 3 minutes on 2 cores; the test)
    python -m benchmarks.perf --parts speed,scaling --out /tmp/perf

Parts (``--parts`` takes names or numbers, comma-separated; default all, run in this order):

1. ``interleaver``  blocks/s of the Interleaver vs ``datasets.interleave_datasets`` on identical
   pre-tokenised blocks (``benchmarks/interleaver.py``'s ``bench_data``), and its tokens/s against
   4x what the GPU consumes (the 20m tokens/s of part 5 when it ran, else the 0.86M reference).
2. ``overhead``     median step time of a plain ``transformers.Trainer`` on pre-packed blocks vs
   ``DataMixTrainer`` (uniform; op_mix with no decision in the run; op_mix with its decision inside
   the dropped warm-up), same model, data and settings.
3. ``laws``         batched log-linear fit vs the per-start LBFGS loop (small case) and the
   64-domain proposal (``benchmarks/laws.py``'s helpers).
4. ``candidates``   ``LoRAProbeSimulator.evaluate_candidates`` with C = 1, 4, 12 candidates: time per
   candidate vs one plain forward pass over the same eval sets, and peak GPU memory.
5. ``speed``        tokens/s and MFU of ``DataMixTrainer`` for presets 20m, 60m, 150m with the GPU
   settings, with and without ``torch_compile``; MFU from counted FLOPs against the device's peak
   (``flops.py``); on the first preset's runs also a LoRA probe and a branch on the same trainer
   (``probe_vs_train_tokens_per_s``, ``branch_vs_train_tokens_per_s``; ``simulator_speed.py``).
6. ``scaling``      seconds and ledger FLOPs of one op_mix decision and of one olmix reuse step for
   4..64 domains and two model sizes; plotted into ``perf_scaling.png``.

Writes ``<out>/perf.json`` (rewritten after every part and inside parts 5 and 6 after every run, a running part
marked ``"status": "in progress"``, the file ``"status": "partial"`` until the end) and
``<out>/perf_scaling.png``.  A part that fails records its error and the others still run.  The run
keeps to ``--budget-s`` (default 530 s on a GPU): parts get shares of what is left, and the looping
parts (5, 6) skip items they cannot finish in their share, saying so in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import traceback

from .candidates import part_candidates
from .common import (
    GPU_20M_TOKENS_PER_S_REFERENCE,
    PARTS,
    RESULTS_DIR,
    SHARES,
    SHARES_QUICK,
    T0,
    Context,
    free_memory,
    header,
    log,
)
from .interleaver import part_interleaver
from .laws import part_laws
from .overhead import part_overhead
from .scaling import part_scaling, plot_scaling
from .speed import part_speed, training_levers


FUNCTIONS = {
    "interleaver": part_interleaver,
    "overhead": part_overhead,
    "laws": part_laws,
    "candidates": part_candidates,
    "speed": part_speed,
    "scaling": part_scaling,
}


def finish(result: dict) -> None:
    """Cross-part figures and the targets table."""
    parts = result["parts"]
    speed = parts.get("speed", {}).get("runs", {})
    measured = [speed[k]["tokens_per_s"] for k in ("20m_compiled", "20m_eager") if "tokens_per_s" in speed.get(k, {})]
    inter = parts.get("interleaver", {})
    targets = []
    if "interleaver_tokens_per_s" in inter:
        gpu_tps = max(measured) if measured else GPU_20M_TOKENS_PER_S_REFERENCE
        inter["gpu_20m_tokens_per_s"] = gpu_tps
        inter["gpu_20m_tokens_per_s_source"] = (
            "part 5 (speed), best of the 20m runs"
            if measured
            else "reference 0.86M tokens/s (20M Llama, plain bf16 loop on an H100)"
        )
        inter["ratio_to_gpu_20m_consumption"] = inter["interleaver_tokens_per_s"] / gpu_tps
        targets.append(
            {
                "target": "interleaver tokens/s >= 4x the GPU's 20m consumption",
                "measured": f"{inter['ratio_to_gpu_20m_consumption']:.1f}x",
                "met": bool(inter["ratio_to_gpu_20m_consumption"] >= 4),
            }
        )
        overhead = parts.get("overhead", {})
        loader = overhead.get("loader_only", {}).get("datamix_s_per_batch")
        settings = overhead.get("settings", {})
        if loader and settings.get("block_size"):
            tokens = settings["per_device_train_batch_size"] * settings["block_size"] / loader
            inter["trainer_loader_tokens_per_s"] = tokens
            inter["trainer_loader_ratio_to_gpu_20m_consumption"] = tokens / gpu_tps
            inter["trainer_loader_note"] = (
                "part 2's DataMixTrainer train DataLoader alone (Interleaver + collation + "
                "accelerate's loader + copy to the device), its tokens/s over the GPU's"
            )
    for name, ratio in parts.get("overhead", {}).get("ratios_vs_plain", {}).items():
        targets.append(
            {
                "target": f"{name} median step <= 1.02x plain Trainer",
                "measured": f"step {ratio['step_ratio']:.3f}x, interval (incl. batch fetch) {ratio['interval_ratio']:.3f}x",
                "met": bool(max(ratio["step_ratio"], ratio["interval_ratio"]) <= 1.02),
            }
        )
    for count, record in parts.get("candidates", {}).get("by_candidates", {}).items():
        if "peak_over_single_plain_evaluation" in record:
            targets.append(
                {
                    "target": f"peak GPU memory of {count} candidates <= 1.1x a single evaluation",
                    "measured": f"{record['peak_over_single_plain_evaluation']:.3f}x",
                    "met": bool(record["peak_over_single_plain_evaluation"] <= 1.1),
                }
            )
    for key in ("150m_compiled", "150m_eager"):
        if speed.get(key, {}).get("mfu") is not None:
            targets.append(
                {
                    "target": f"MFU >= 40% at 150m ({key})",
                    "measured": f"{speed[key]['mfu']:.1%}",
                    "met": bool(speed[key]["mfu"] >= 0.40),
                }
            )
    for name, bound in (("probe", 0.8), ("branch", 0.9)):
        ratio = parts.get("speed", {}).get(f"{name}_vs_train_tokens_per_s")
        if ratio is not None:
            targets.append(
                {
                    "target": f"{name} tokens/s >= {bound}x main training",
                    "measured": f"{ratio:.2f}x",
                    "met": bool(ratio >= bound),
                }
            )
    result["targets"] = targets


def write(result: dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "perf.json")
    with open(path + ".tmp", "w") as handle:
        json.dump(result, handle, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    os.replace(path + ".tmp", path)


def parse_parts(text: str) -> list[str]:
    chosen = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name = PARTS[int(item) - 1] if item.isdigit() and 1 <= int(item) <= len(PARTS) else item
        if name not in PARTS:
            raise SystemExit(f"--parts: unknown part {item!r}; use numbers 1-{len(PARTS)} or names {PARTS}")
        if name not in chosen:
            chosen.append(name)
    return [p for p in PARTS if p in chosen]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated names or numbers of {PARTS}")
    parser.add_argument("--out", default=RESULTS_DIR, help="folder of perf.json and perf_scaling.png")
    parser.add_argument(
        "--work", default=None, help="scratch folder (trainer outputs, packed blocks); default a temp dir"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock budget of the run (default 530 GPU: one 10-minute device command with its "
        "setup; 140 --quick)",
    )
    parser.add_argument(
        "--commit", default=None, help="commit to record (default: git rev-parse HEAD, else $PERF_COMMIT)"
    )
    parser.add_argument(
        "--overhead-preset", default=None, help="part 2: model preset (default 20m; tiny with --quick)"
    )
    parser.add_argument(
        "--overhead-block", type=int, default=None, help="part 2: block size (default 1024; 64 --quick)"
    )
    parser.add_argument(
        "--overhead-steps", type=int, default=None, help="part 2: steps per trainer (default 230; 25 --quick)"
    )
    parser.add_argument(
        "--overhead-rounds",
        type=int,
        default=None,
        help="part 2: rounds of plain / uniform / op_mix runs (default 3; 1 --quick)",
    )
    parser.add_argument(
        "--overhead-batch", type=int, default=None, help="part 2: per-device batch (default 32; 4 --quick)"
    )
    parser.add_argument("--candidates-preset", default=None, help="part 4: model preset (default 20m; tiny --quick)")
    parser.add_argument(
        "--candidates-block", type=int, default=None, help="part 4: block size (default 1024; 64 --quick)"
    )
    parser.add_argument(
        "--speed-presets", default=None, help="part 5: presets (default 20m,60m,150m; tiny,small --quick)"
    )
    parser.add_argument("--speed-block", type=int, default=None, help="part 5: block size (default 1024; 64 --quick)")
    parser.add_argument(
        "--speed-compile",
        choices=["on", "off"],
        default=None,
        help="part 5: also run with torch_compile (default on; off with --quick)",
    )
    parser.add_argument("--scaling-presets", default=None, help="part 6: presets (default tiny,20m; tiny --quick)")
    parser.add_argument(
        "--scaling-counts", default=None, help="part 6: domain counts (default 4,8,16,32,64; 4,8 --quick)"
    )
    parser.add_argument("--interleaver-samples", type=int, default=10000, help="part 1: samples timed (GPU run)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads on CPU (default 1 with --quick: tiny models, shared cores)",
    )
    parser.add_argument(
        "--speed-args",
        default=None,
        help="part 5: JSON of extra TrainingArguments for every run, e.g. '{\"use_liger_kernel\": true}'",
    )
    parser.add_argument(
        "--speed-variants",
        default=None,
        help="part 5: JSON of name -> TrainingArguments overrides, each run on the largest preset (training "
        'levers, e.g. \'{"b128": {"per_device_train_batch_size": 128}}\')',
    )
    parser.add_argument(
        "--speed-batch", default="20m=64,60m=48,150m=64,tiny=8,small=8", help="part 5: per-device batch per preset"
    )
    opts = parser.parse_args(argv)
    opts.parts = parse_parts(opts.parts)
    opts.speed_levers = training_levers(opts.speed_variants)  # parsed once; a bad variant is named before any part
    if opts.budget_s is None:
        opts.budget_s = 140.0 if opts.quick else 530.0
    scratch = None
    if opts.work is None:
        scratch = opts.work = tempfile.mkdtemp(prefix="hf_datamix_perf_")
    os.makedirs(opts.work, exist_ok=True)
    os.environ.setdefault("HF_DATAMIX_CACHE", os.path.join(opts.work, "packed"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    import torch

    if opts.threads or (opts.quick and not torch.cuda.is_available()):
        torch.set_num_threads(opts.threads or 1)
    ctx = Context(opts)
    result = header(opts)
    log(f"device {result['device']}; parts {opts.parts}; budget {opts.budget_s:.0f}s; out {opts.out}")
    try:
        for index, name in enumerate(opts.parts):
            now = time.perf_counter()
            left = ctx.deadline - now
            table = SHARES_QUICK if opts.quick else SHARES
            shares = sum(table[p] for p in opts.parts[index:])
            ctx.part_deadline = now + max(0.0, left) * table[name] / shares
            log(f"part {PARTS.index(name) + 1} {name}: start ({ctx.part_deadline - now:.0f}s of budget)")

            def progress(record, name=name, now=now):
                result["parts"][name] = {**record, "status": "in progress", "part_wall_s": time.perf_counter() - now}
                result["wall_s"] = time.perf_counter() - T0
                write(result, opts.out)

            ctx.on_progress = progress
            try:
                record = FUNCTIONS[name](ctx)
            except Exception as error:  # noqa: BLE001 - recorded; the other parts still run
                record = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
                log(f"part {name}: ERROR {type(error).__name__}: {error}")
            free_memory()
            record["part_wall_s"] = time.perf_counter() - now
            result["parts"][name] = record
            log(f"part {PARTS.index(name) + 1} {name}: done in {record['part_wall_s']:.1f}s")
            finish(result)
            result["wall_s"] = time.perf_counter() - T0
            write(result, opts.out)
        result["status"] = "complete"
        finish(result)
        try:
            result["scaling_plot"] = plot_scaling(result, os.path.join(opts.out, "perf_scaling.png"))
        except Exception as error:  # noqa: BLE001 - a missing plot must not lose the figures
            result["scaling_plot"] = f"error: {type(error).__name__}: {error}"
        result["wall_s"] = time.perf_counter() - T0
        write(result, opts.out)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        name: ("ERROR " + part["error"]) if "error" in part else f"ok ({part['part_wall_s']:.1f}s)"
        for name, part in result["parts"].items()
    }
    log(f"wrote {os.path.join(opts.out, 'perf.json')}: {json.dumps(summary)}")
    for target in result.get("targets", []):
        log(f"target {'MET ' if target['met'] else 'MISS'} {target['target']}: {target['measured']}")
    return result


if __name__ == "__main__":
    main()
