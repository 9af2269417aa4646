"""Candidate interpolation (issue 21): hf_datamix's forward hook against PEFT's own two ways.

    python benchmarks/interpolation.py                                  # the GPU run: 20m and 150m, 4 and 12 candidates
    python benchmarks/interpolation.py --tiny --cpu --out /tmp/interp   # tiny sizes on CPU (the test)

A candidate is theta + sum_c w_c dW_c over K LoRA probes (dW_c = (alpha/r) B_c A_c).  Each method scores
the same candidates on the same eval blocks with the production loss loop of ``LoRAProbeSimulator``
(token-weighted next-token loss per domain, read back once per candidate):

* ``hook``: ``LoRAProbeSimulator.interpolated`` (what op_mix uses): the adapters are switched off and a
  forward hook adds one stacked low-rank product [w_1 s B_1 | ... | w_K s B_K] [A_1; ...; A_K] x per layer;
* ``peft_scales``: PEFT's multi-adapter forward: ``set_adapter([probes])`` and ``LoraLayer.set_scale(probe, w_c)``
  on every layer, so each layer runs 2K small matmuls;
* ``peft_cat``: ``add_weighted_adapter(probes, weights, combination_type="cat")`` builds one rank-Kr adapter per
  candidate (its creation is timed), ``set_adapter`` it, and ``delete_adapter`` it afterwards.

Every method's losses are compared with the hook's (``max_abs_loss_difference_vs_hook``).  Times are medians
over ``--reps`` passes over all candidates after one warm-up candidate; GPU memory is the peak allocated
during a pass.  Results: ``OUT/interpolation.json`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from peft.tuners.lora import LoraLayer


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import provenance  # noqa: E402

from hf_datamix.models import llama_config  # noqa: E402
from hf_datamix.simulate.lora_probes import LoRAProbeSimulator, ProbeConfig  # noqa: E402
from hf_datamix.simulate.scoring import BlockLossScorer  # noqa: E402


FULL = {
    "presets": ["20m", "150m"],
    "candidates": [4, 12],
    "probes": 6,
    "domains": 6,
    "eval_blocks": 32,
    "block": 1024,
    "batch": 16,
    "reps": 3,
}
TINY = {
    "presets": ["tiny"],
    "candidates": [4, 12],
    "probes": 3,
    "domains": 3,
    "eval_blocks": 2,
    "block": 32,
    "batch": 4,
    "reps": 1,
}
CANDIDATE = "_candidate"  # the adapter peft_cat builds for each candidate


@contextlib.contextmanager
def peft_scales(sim: LoRAProbeSimulator, peft_model, weights: dict[str, float]):
    """PEFT's multi-adapter forward with per-adapter scales (the scales are put back afterwards)."""
    lora, active = peft_model.base_model, [n for n in sim.probes if weights.get(n, 0.0)]
    lora.set_adapter(active, inference_mode=True)
    layers = [m for m in sim.model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        for name in active:
            layer.set_scale(name, weights[name])
    try:
        yield
    finally:
        for layer in layers:
            for name in active:
                layer.set_scale(name, 1.0)
        lora.set_adapter([], inference_mode=True)


@contextlib.contextmanager
def peft_cat(sim: LoRAProbeSimulator, peft_model, weights: dict[str, float]):
    """PEFT's ``add_weighted_adapter(combination_type="cat")``: one concatenated adapter per candidate."""
    lora, active = peft_model.base_model, [n for n in sim.probes if weights.get(n, 0.0)]
    lora.add_weighted_adapter(active, [weights[n] for n in active], CANDIDATE, combination_type="cat")
    lora.set_adapter(CANDIDATE, inference_mode=True)
    sim.model.eval()  # the new adapter's modules are made in training mode: its dropout would be on
    try:
        yield
    finally:
        # Probes active (frozen) first, as the simulator does: deleting the active adapter makes PEFT pick one.
        lora.set_adapter(sim.probes, inference_mode=True)
        lora.delete_adapter(CANDIDATE)
        lora.set_adapter([], inference_mode=True)


METHODS = {"hook": lambda sim, peft_model, w: sim.interpolated(w), "peft_scales": peft_scales, "peft_cat": peft_cat}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_all(sim, method, candidates, scorer, peft_model=None) -> np.ndarray:
    """Losses ``(C, D)``: every candidate through ``method``, scored by the scorer op_mix uses; ``peft_model``:
    the probes as PEFT adapters (``LoRAProbeSimulator.as_peft_adapters``), for PEFT's methods."""
    rows = []
    with torch.no_grad():
        for candidate in candidates:
            with METHODS[method](sim, peft_model, candidate):
                rows.append(scorer(sim.model))
    return np.asarray(rows)


def timed(sim, method, candidates, scorer, reps, device, peft_model=None) -> dict:
    """Median seconds of scoring all ``candidates`` (after one warm-up candidate), peak memory, losses."""
    score_all(sim, method, candidates[:1], scorer, peft_model)
    times, peak = [], None
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        losses = score_all(sim, method, candidates, scorer, peft_model)
        sync(device)
        times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peak = max(peak or 0, torch.cuda.max_memory_allocated(device))
    return {"times_s": times, "seconds": statistics.median(times), "peak_memory_bytes": peak, "losses": losses}


def bench_preset(preset: str, settings: dict, device: torch.device) -> dict:
    """Every method at every candidate count for one model size."""
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(llama_config(preset, max_position_embeddings=max(2048, settings["block"]))).to(device)
    gpu = device.type == "cuda"
    sim = LoRAProbeSimulator(model, ProbeConfig(steps=1, batch_size=2, bf16=gpu, seed=0), 1e-3, device=device)
    vocab, block = model.config.vocab_size, settings["block"]
    generator = torch.Generator().manual_seed(0)
    eval_sets = {
        f"d{j}": torch.randint(0, vocab, (settings["eval_blocks"], block), generator=generator)
        for j in range(settings["domains"])
    }
    scorer = BlockLossScorer(eval_sets, settings["batch"], device, bf16=gpu)  # blocks on the device once
    model.eval()
    plain = timed(sim, "hook", [{}], scorer, settings["reps"], device)  # theta alone, no probe yet
    names = [f"p{i}" for i in range(settings["probes"])]
    for name in names:  # one real training step each: non-zero B factors, through the production path
        ids = torch.randint(0, vocab, (2, block), generator=generator)
        sim.train_probe(name, iter([{"input_ids": ids, "labels": ids}]), steps=1)
    model.eval()
    out = {
        "non_embedding_parameters": sim.num_parameters,
        "plain_forward_s": plain["seconds"],
        "plain_forward_times_s": plain["times_s"],
        "plain_forward_peak_memory_bytes": plain["peak_memory_bytes"],
        "by_candidates": {},
    }
    for count in settings["candidates"]:
        weights = np.random.default_rng(count).dirichlet(np.ones(len(names)), size=count)
        candidates = [{n: float(w) for n, w in zip(names, row)} for row in weights]
        # Every method with the probes also PEFT adapters (none active), so the hook is timed on the same modules.
        with sim.as_peft_adapters() as peft_model:
            model.eval()  # the new adapters' modules are made in training mode
            runs = {m: timed(sim, m, candidates, scorer, settings["reps"], device, peft_model) for m in METHODS}
        hook = runs["hook"]
        record = {}
        for method, run in runs.items():
            record[method] = {
                "seconds": run["seconds"],
                "times_s": run["times_s"],
                "seconds_per_candidate": run["seconds"] / count,
                "over_hook": run["seconds"] / hook["seconds"],
                "per_candidate_over_plain_forward": run["seconds"] / count / plain["seconds"],
                "peak_memory_bytes": run["peak_memory_bytes"],
                "max_abs_loss_difference_vs_hook": float(np.max(np.abs(run["losses"] - hook["losses"]))),
            }
        record["fastest"] = min(METHODS, key=lambda m: record[m]["seconds"])
        out["by_candidates"][str(count)] = record
        print(f"{preset} C={count}: " + ", ".join(f"{m} {record[m]['seconds']:.3f}s" for m in METHODS), flush=True)
    sim.close()
    return out


def header(device: torch.device, settings: dict, argv: list[str]) -> dict:
    return {
        **provenance(
            "interpolation (issue 21): hook vs PEFT set_adapter+set_scale vs add_weighted_adapter('cat')",
            argv=[os.path.abspath(__file__), *argv],
            software=("peft",),
        ),
        "settings": {
            **settings,
            "probe_rank": ProbeConfig().rank,
            "bf16_autocast": device.type == "cuda",
            "torch_threads": torch.get_num_threads(),
            "eval_data": "random token ids (the time does not depend on them)",
        },
        "methods": {
            "hook": "LoRAProbeSimulator.interpolated: adapters off, one stacked low-rank product per layer (a hook)",
            "peft_scales": peft_scales.__doc__,
            "peft_cat": peft_cat.__doc__,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds on a CPU)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is there")
    parser.add_argument("--presets", help="comma list of model presets (default 20m,150m; --tiny: tiny)")
    parser.add_argument("--reps", type=int, help="timed passes per method (median)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"), help="folder of the JSON")
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = parser.parse_args(argv)
    settings = dict(TINY if opts.tiny else FULL)
    if opts.presets:
        settings["presets"] = opts.presets.split(",")
    if opts.reps:
        settings["reps"] = opts.reps
    device = torch.device("cuda" if torch.cuda.is_available() and not opts.cpu else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a shared CPU: several intra-op threads made a tiny forward 40x slower here
    started = time.perf_counter()
    result = header(device, settings, argv)
    result["results"] = {preset: bench_preset(preset, settings, device) for preset in settings["presets"]}
    result["seconds_total"] = time.perf_counter() - started
    os.makedirs(opts.out, exist_ok=True)
    path = os.path.join(opts.out, "interpolation.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
