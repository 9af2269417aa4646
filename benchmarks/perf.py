"""Performance benchmark (issue 7): every speed figure side by side, in one run on one machine.

    python benchmarks/perf.py                      # the GPU run (one H100: about 8 minutes)
    python benchmarks/perf.py --quick              # tiny sizes on CPU (< 3 minutes on 2 cores; the test)
    python benchmarks/perf.py --parts speed,scaling --out /tmp/perf

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
   settings, with and without ``torch_compile``.
6. ``scaling``      seconds and ledger FLOPs of one op_mix decision and of one olmix reuse step for
   4..64 domains and two model sizes; plotted into ``perf_scaling.png``.

Writes ``<out>/perf.json`` (rewritten after every part, ``"status": "partial"`` until the end) and
``<out>/perf_scaling.png``.  A part that fails records its error and the others still run.  The run
keeps to ``--budget-s`` (default 480 s on a GPU): parts get shares of what is left, and the looping
parts (5, 6) skip items they cannot finish in their share, saying so in the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")

#: NVIDIA H100 SXM, dense bf16 tensor-core peak (the denominator of every MFU figure here).
H100_BF16_PEAK = 989.5e12
#: Reference consumption of a 20M Llama on one H100 with a plain bf16 loop (issue 7), used when part 5 did not run.
GPU_20M_TOKENS_PER_S_REFERENCE = 0.86e6

PARTS = ["interleaver", "overhead", "laws", "candidates", "speed", "scaling"]
#: share of the time budget each part may use (of what is left when it starts, among the parts still to run).
SHARES = {"interleaver": 0.04, "overhead": 0.17, "laws": 0.03, "candidates": 0.04, "speed": 0.42, "scaling": 0.30}
SHARES_QUICK = {"interleaver": 0.05, "overhead": 0.15, "laws": 0.06, "candidates": 0.05, "speed": 0.05, "scaling": 0.64}

MFU_FORMULA = (
    "MFU = tokens_per_s * flops_per_token / 989.5e12 (H100 SXM dense bf16 peak); flops_per_token = "
    "6*(N_nonembedding + V*d) + 12*L*d*T: N_nonembedding = model.num_parameters(exclude_embeddings=True), "
    "V*d = the (tied) LM head's matmul, 12*L*d*T = attention scores and weighted values (QK^T, AV) forward + "
    "backward over the full T x T matrix (PaLM, Chowdhery et al. 2022, appendix B; the causal mask's half is "
    "not discounted), L layers, d hidden size, T = block_size.  mfu_6n_only uses 6*N_nonembedding alone "
    "(the ledger's Kaplan convention)."
)

T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[perf {time.perf_counter() - T0:7.1f}s] {message}", file=sys.__stdout__, flush=True)


@contextlib.contextmanager
def quiet(ctx: Context):
    """Send what trainers print (their log dicts: PrinterCallback with disable_tqdm) to work/trainers.log."""
    with open(os.path.join(ctx.work, "trainers.log"), "a") as handle, contextlib.redirect_stdout(handle):
        yield


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package)."""
    module_name = f"_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def git_commit(explicit: str | None) -> tuple[str, bool | None]:
    if explicit:
        return explicit, None
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT, check=False)
    try:
        commit = run("rev-parse", "HEAD").stdout.strip()
        dirty = bool(run("status", "--porcelain", "--untracked-files=no").stdout.strip()) if commit else None
    except OSError:
        commit, dirty = "", None
    return commit or os.environ.get("PERF_COMMIT", "unknown"), dirty


def header(opts) -> dict[str, Any]:
    import accelerate
    import datasets
    import peft
    import torch
    import transformers

    import hf_datamix

    if cuda():
        props = torch.cuda.get_device_properties(0)
        device = f"{torch.cuda.get_device_name(0)}"
        details = {"kind": "cuda", "gpus": torch.cuda.device_count(), "memory_gib": round(props.total_memory / 2**30, 1),
                   "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    else:
        device = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        details = {"kind": "cpu", "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    commit, dirty = git_commit(opts.commit)
    return {
        "benchmark": "perf (issue 7)",
        "status": "partial",
        "command": " ".join(["python"] + [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "device": device,
        "device_details": details,
        "software": {
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "peft": peft.__version__, "accelerate": accelerate.__version__,
            "hf_datamix": hf_datamix.__version__,
        },
        "commit": commit,
        "tree_dirty": dirty,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": bool(opts.quick),
        "budget_s": opts.budget_s,
        "parts_requested": opts.parts,
        "formulas": {"mfu": MFU_FORMULA},
        "parts": {},
    }


class Context:
    """What the parts share: options, the time budget, the tokenizer, packed data, figures of other parts."""

    def __init__(self, opts):
        self.opts = opts
        self.quick = opts.quick
        self.deadline = T0 + opts.budget_s
        self.work = opts.work
        self._tokenizer = None
        self._packed: dict[int, tuple] = {}
        self.part_deadline = self.deadline

    @property
    def device(self) -> str:
        return "cuda" if cuda() else "cpu"

    def remaining(self) -> float:
        return self.part_deadline - time.perf_counter()

    def tokenizer(self):
        if self._tokenizer is None:
            from hf_datamix.data.embedded import load_embedded_tokenizer

            self._tokenizer = load_embedded_tokenizer()
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def corpus(self):
        from hf_datamix import DomainSet, DomainSpec
        from hf_datamix.data.embedded import embedded_corpus_files

        return DomainSet([DomainSpec(n, train=f["train"], eval=f["eval"]) for n, f in embedded_corpus_files().items()])

    def packed(self, block_size: int):
        """``(train sources, eval blocks)`` of the embedded corpus at ``block_size`` (packed once)."""
        if block_size not in self._packed:
            from hf_datamix.data.blocks import pack_eval
            from hf_datamix.data.packing import pack_dataset

            sources, evals = {}, {}
            for spec in self.corpus():
                train, evaluation = spec.load()
                sources[spec.name] = pack_dataset(train, self.tokenizer(), block_size, name=spec.name)
                evals[spec.name] = pack_eval(evaluation, self.tokenizer(), block_size, "text", spec.name).blocks
            self._packed[block_size] = (sources, evals)
        return self._packed[block_size]

    def outdir(self, *names: str) -> str:
        path = os.path.join(self.work, *names)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.makedirs(path)
        return path


def pick(ctx: Context, option: str, quick_value, full_value):
    """``--<option>`` when given, else the --quick or the full (GPU) value."""
    value = getattr(ctx.opts, option, None)
    return value if value is not None else (quick_value if ctx.quick else full_value)


def new_model(ctx: Context, preset: str, seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    from hf_datamix.models import llama_config

    tok = ctx.tokenizer()
    config = llama_config(preset, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def train_settings(**overrides) -> dict[str, Any]:
    """The TrainingArguments every trainer here shares (GPU settings on a GPU)."""
    gpu = cuda()
    values = dict(  # noqa: C408
        bf16=gpu,
        use_cpu=not gpu,
        optim="adamw_torch_fused" if gpu else "adamw_torch",
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        torch_compile=False,
    )
    values.update(overrides)
    return values


def datamix_args(output_dir: str, strategy: str = "uniform", strategy_args: dict | None = None, **overrides):
    from hf_datamix import DataMixArguments

    values = train_settings(**overrides)
    values.setdefault("max_repetitions", 0)  # 0 = no cap: speed runs go over the small corpus many times
    return DataMixArguments(output_dir=output_dir, strategy=strategy, strategy_args=dict(strategy_args or {}), **values)


def decision_records(trainer) -> list[dict]:
    """The decisions a strategy took in ``trainer``'s run (kept-mixture decisions included)."""
    return [r for r in trainer.history if r.get("kind") in ("decision", "kept")]


def only_decision(trainer, strategy: str, count: int) -> tuple[dict, dict]:
    """The run's first decision record and its ledger; RuntimeError if ``strategy`` took none."""
    decisions = decision_records(trainer)
    if not decisions:
        raise RuntimeError(f"{strategy} took no decision with {count} domains")
    return decisions[0], trainer.ledger.to_dict()


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


class StepTimer:
    """TrainerCallback timing optimizer steps (built lazily so transformers loads only when needed).

    ``step_s``: on_step_begin -> on_step_end (forward, backward, clip, optimizer step).
    ``interval_s``: on_step_end -> next on_step_end: the whole loop iteration, *including* fetching the
    batch (Trainer fetches a step's batches before on_step_begin) and every callback after ours.
    ``sync_begin(step)`` / ``sync_end(step)`` say at which steps to call torch.cuda.synchronize (default:
    every step); ``end`` holds every step's end time, so an unsynchronised window is timed from its ends.
    """

    def __new__(cls, *args, **kwargs):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self, sync_begin: Callable[[int], bool] = lambda step: True,
                         sync_end: Callable[[int], bool] | None = None):
                self.sync_begin = sync_begin
                self.sync_end = sync_begin if sync_end is None else sync_end
                self.begin: dict[int, float] = {}
                self.end: dict[int, float] = {}

            def on_step_begin(self, args, state, control, **kwargs):
                step = state.global_step + 1
                if self.sync_begin(step):
                    sync()
                self.begin[step] = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                step = state.global_step
                if self.sync_end(step):
                    sync()
                self.end[step] = time.perf_counter()

            def step_s(self, first: int, last: int) -> list[float]:
                return [self.end[s] - self.begin[s] for s in range(first, last + 1) if s in self.end and s in self.begin]

            def interval_s(self, first: int, last: int) -> list[float]:
                return [self.end[s] - self.end[s - 1] for s in range(max(2, first), last + 1)
                        if s in self.end and s - 1 in self.end]

        return _Timer(*args, **kwargs)


@contextlib.contextmanager
def timed_methods(targets: list[tuple[Any, str, str]], times: dict[str, float]):
    """Wrap ``owner.attr`` (synchronising around it) to add its seconds to ``times[key]``; restored after."""
    originals = []
    for owner, attr, key in targets:
        original = getattr(owner, attr, None)
        if original is None:  # the library moved it: time what is left
            continue
        originals.append((owner, attr, original))

        def wrapper(*args, _original=original, _key=key, **kwargs):
            sync()
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                sync()
                times[_key] = times.get(_key, 0.0) + time.perf_counter() - start

        setattr(owner, attr, wrapper)
    try:
        yield times
    finally:
        for owner, attr, original in reversed(originals):
            setattr(owner, attr, original)


# ---------------------------------------------------------------------------------------------
# 1. interleaver
# ---------------------------------------------------------------------------------------------
def part_interleaver(ctx: Context) -> dict:
    bench = load_benchmark("interleaver")
    samples, block = (2000, 128) if ctx.quick else (ctx.opts.interleaver_samples, 512)
    result = bench.bench_data(samples, block)
    result["tokens_note"] = (f"tokens/s = blocks/s x {block}; the cost per block hardly depends on its length, so "
                             "at the GPU runs' 1024-token blocks the interleaver's tokens/s is about twice this")
    result["method"] = ("benchmarks/interleaver.py bench_data: 6 synthetic domains x 4000 pre-tokenised blocks, "
                        "weights 1..6, one process; the same blocks as datasets.Dataset (map-style and "
                        "to_iterable_dataset) through datasets.interleave_datasets(probabilities=same weights, "
                        "stopping_strategy='all_exhausted').with_format('torch'); first `samples` samples timed")
    # gpu ratio fields are (re)computed in finish() from part 5's measurement when it ran
    result.pop("ratio_to_gpu_20m_consumption", None)
    result.pop("gpu_20m_tokens_per_s_reference", None)
    return result


# ---------------------------------------------------------------------------------------------
# 2. trainer overhead
# ---------------------------------------------------------------------------------------------
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
        "datamix_op_mix_decided_in_warmup": ("op_mix", {
            "warmup_fraction": decision_step / steps, "probe_steps": 2 if quick else 10, "probe_batch_size": 8,
            "eval_blocks": 2 if quick else 4, "num_candidates": 12, "law_starts": 30 if quick else 300,
            "probe_bf16": cuda(),
        }),
    }
    # Rounds of plain / uniform / op_mix back to back: a GPU's speed drifts by a few percent between
    # runs, so each DataMixTrainer run is compared with the plain run of its own round.
    core = ["plain_trainer", "datamix_uniform", "datamix_op_mix_no_decision"]
    order = [("untimed_warmup", None)] + [(f"{name}@{r}", specs[name]) for r in range(1, rounds + 1) for name in core]
    order += [(f"{name}@1", specs[name]) for name in ("datamix_uniform_dispatch_on", "datamix_op_mix_decided_in_warmup")]
    out: dict[str, Any] = {
        "model": f"random-init Llama preset {preset!r} (hf_datamix.models), sdpa attention",
        "data": f"embedded corpus (7 domains) packed into {block}-token blocks; the plain Trainer reads the same "
                f"blocks ({len(blocks)}) as a map-style dataset (hf_datamix.data.blocks.BlockDataset, RandomSampler); "
                "DataMixTrainer draws them through the Interleaver, no repetition cap",
        "settings": {"steps": steps, "dropped_warmup_steps": warm, "per_device_train_batch_size": batch,
                     "block_size": block, **{k: v for k, v in train_settings().items() if k in (
                         "bf16", "optim", "dataloader_num_workers", "max_grad_norm", "torch_compile")}},
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
            warmup = Trainer(model=model, train_dataset=BlockDataset(blocks), data_collator=default_data_collator,
                             args=TrainingArguments(output_dir=outdir, **train_settings(**{**common, "max_steps": warm})))
            with quiet(ctx):
                warmup.train()
            del warmup
            log(f"overhead warm-up run: {time.perf_counter() - started:.1f}s")
            del model
            free_memory()
            continue
        try:
            if spec is None:
                trainer = Trainer(model=model, args=TrainingArguments(output_dir=outdir, **train_settings(**common)),
                                  train_dataset=BlockDataset(blocks), data_collator=default_data_collator,
                                  callbacks=[timer])
            else:
                strategy, strategy_args = spec
                extra = {"accelerator_config": {"dispatch_batches": True}} if "dispatch_on" in name else {}
                trainer = DataMixTrainer(model=model, args=datamix_args(outdir, strategy, strategy_args,
                                                                        block_size=block, **common, **extra),
                                         domains=ctx.corpus(), processing_class=ctx.tokenizer(), callbacks=[timer])
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
            decisions = decision_records(trainer)
            record["decisions"] = [{"stage_step": r["stage_step"], "kind": r["kind"], "seconds": r.get("seconds")}
                                   for r in decisions]
        out["variants"][name] = record
        log(f"overhead {name}: step {record['median_step_s'] * 1e3:.2f} ms, interval "
            f"{record['median_interval_s'] * 1e3:.2f} ms ({record['wall_s']:.1f}s)")
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
            by_variant.setdefault(variant, []).append((
                record["median_step_s"] / own["median_step_s"], record["median_interval_s"] / own["median_interval_s"],
                (record["median_interval_s"] - own["median_interval_s"]) * 1e3))
    out["ratios_vs_plain"] = {
        variant: {"step_ratio": median([r[0] for r in rows]), "interval_ratio": median([r[1] for r in rows]),
                  "interval_overhead_ms": median([r[2] for r in rows]), "rounds": len(rows),
                  "step_ratio_by_round": [r[0] for r in rows]}
        for variant, rows in by_variant.items()
    }
    out["plain_baseline"] = {"median_step_s": base_step, "median_interval_s": base_interval, "rounds": len(plain),
                             "step_s_by_round": [plain[r]["median_step_s"] for r in sorted(plain)],
                             "note": "ratios are each run over the plain run of its own round, then the median over "
                                     "rounds; the plain runs' spread shows the GPU's drift"}
    if len(plain) > 1:
        steps_ = [p["median_step_s"] for p in plain.values()]
        out["plain_round_spread"] = (max(steps_) - min(steps_)) / base_step
    plain_loader = out["variants"].get("plain_trainer@1", {}).get("loader_only_s_per_batch")
    mix_loader = out["variants"].get("datamix_uniform@1", {}).get("loader_only_s_per_batch")
    on_loader = out["variants"].get("datamix_uniform_dispatch_on@1", {}).get("loader_only_s_per_batch")
    if plain_loader and mix_loader:
        out["loader_only"] = {
            "plain_s_per_batch": plain_loader, "datamix_s_per_batch": mix_loader,
            "datamix_dispatch_on_s_per_batch": on_loader,
            "difference_over_plain_step": (mix_loader - plain_loader) / base_step,
            "note": "each trainer's prepared train DataLoader iterated alone after training (collation and the "
                    "copy to the device included): the data path's share of a step, free of GPU timing noise",
        }
    return out


# ---------------------------------------------------------------------------------------------
# 3. law fit + proposal
# ---------------------------------------------------------------------------------------------
def part_laws(ctx: Context) -> dict:
    import numpy as np

    from hf_datamix.laws import (
        LogLinearLaw,
        fit_loglinear_batched,
        fit_loglinear_per_start_reference,
    )
    from hf_datamix.proposer import propose

    bench = load_benchmark("laws")
    starts = 3 if ctx.quick else 8
    X, Y = bench.synthetic(runs=27, domains=6, targets=2)
    (_, _, ref_loss), ref_s = bench.timed(lambda: fit_loglinear_per_start_reference(X, Y, starts=starts, seed=0))
    (_, _, batch_loss), batch_s = bench.timed(lambda: fit_loglinear_batched(X, Y, starts=starts, seed=0, screen_iter=None))
    out = {
        "small_case": {
            "runs": 27, "domains": 6, "targets": 2, "starts": starts,
            "per_start_loop_s": ref_s, "batched_s": batch_s, "speedup": ref_s / batch_s,
            "loss_ratio_batched_over_loop": [float(v) for v in np.asarray(batch_loss / ref_loss)],
            "note": "benchmarks/laws.py's synthetic data; the loop is fit_loglinear_per_start_reference (one LBFGS "
                    "problem per start and target), the batched fit solves them all at once (screen_iter=None: "
                    "every start refined, as the loop does)",
        }
    }
    X, Y = bench.synthetic(runs=195, domains=64, targets=8, seed=2)
    law, fit_s = bench.timed(lambda: LogLinearLaw(starts=30).fit(X, Y))
    caps, prior = np.full(64, 0.05), np.full(64, 1 / 64)
    _, first_s = bench.timed(lambda: propose(law, prior, kl=0.05, caps=caps))
    proposal, solve_s = bench.timed(lambda: propose(law, prior, kl=0.05, caps=caps))
    out["proposal_64_domains"] = {
        "runs": 195, "targets": 8, "law_fit_s": fit_s, "law_starts": 30,
        "first_call_s": first_s, "seconds": solve_s, "solver": proposal.solver, "status": proposal.status,
        "caps_respected": bool((proposal.x <= caps + 1e-6).all()),
    }
    log(f"laws: loop {ref_s:.2f}s vs batched {batch_s:.3f}s; 64-domain proposal {solve_s:.3f}s")
    return out


# ---------------------------------------------------------------------------------------------
# 4. candidate evaluation
# ---------------------------------------------------------------------------------------------
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
    sim = LoRAProbeSimulator(model, ProbeConfig(steps=probe_steps, batch_size=probe_batch, bf16=gpu, seed=0),
                             base_learning_rate=1e-3, ledger=ledger, device=ctx.device)

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
        "probes": {"count": probes, "steps": probe_steps, "batch_size": probe_batch, "rank": 16,
                   "bf16_autocast": gpu, "training_s": probe_train_s},
        "plain_forward": {
            "seconds": plain_s, "tokens_per_s": eval_tokens / plain_s, "peak_memory_bytes": plain_peak,
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
        record = {"seconds": seconds, "seconds_per_candidate": seconds / count,
                  "per_candidate_over_plain_forward": seconds / count / plain_s}
        if gpu:
            record.update({"peak_memory_bytes": peak, "peak_over_single_plain_evaluation": peak / plain_peak,
                           "peak_increment_bytes": delta,
                           "peak_increment_over_plain_increment": delta / plain_delta if plain_delta else None})
        out["by_candidates"][str(count)] = record
        log(f"candidates C={count}: {seconds / count * 1e3:.1f} ms/candidate = "
            f"{record['per_candidate_over_plain_forward']:.2f}x plain forward")
    if gpu:
        c1 = out["by_candidates"]["1"]["peak_memory_bytes"]
        for record in out["by_candidates"].values():
            record["peak_over_single_candidate"] = record["peak_memory_bytes"] / c1
        out["memory_note"] = ("torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), model weights "
                              "included; peak_increment = peak minus what was allocated before the call")
    else:
        out["memory_note"] = "CPU run: time only"
    sim.close()
    sim = model = None  # dropped before the next part
    free_memory()
    return out


# ---------------------------------------------------------------------------------------------
# 5. training speed
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# 6. scaling of one decision with the number of domains
# ---------------------------------------------------------------------------------------------
def split_domains(ctx: Context, count: int, pieces: int = 10):
    """``count`` domains cut from the embedded corpus: domain i = contiguous shard i//7 (of ``pieces``) of source i%7.

    Shards of the same datasets are reused across counts, so their fingerprints (and packed-block
    cache entries) are the same in every set; eval = a shard of the source's eval split.
    """
    from hf_datamix import DomainSet, DomainSpec

    if not hasattr(ctx, "_sources"):
        loaded = {}
        for spec in ctx.corpus():
            train, evaluation = spec.load()
            loaded[spec.name] = (train, evaluation)
        ctx._sources = loaded
        ctx._shards = {}
    names = list(ctx._sources)
    if count > pieces * len(names):
        raise ValueError(f"split_domains: at most {pieces * len(names)} domains, asked for {count}")
    specs = []
    for i in range(count):
        source, piece = names[i % len(names)], i // len(names)
        key = (source, piece)
        if key not in ctx._shards:
            train, evaluation = ctx._sources[source]
            eval_shards = min(pieces, max(1, len(evaluation) // 2))
            ctx._shards[key] = (train.shard(pieces, piece, contiguous=True),
                                evaluation.shard(eval_shards, piece % eval_shards, contiguous=True))
        train, evaluation = ctx._shards[key]
        specs.append(DomainSpec(f"{source}_{piece}", train=train, eval=evaluation))
    return DomainSet(specs)


def run_opmix_decision(ctx: Context, preset: str, count: int, settings: dict) -> dict:
    from hf_datamix import DataMixTrainer
    from hf_datamix.simulate.lora_probes import LoRAProbeSimulator
    from hf_datamix.strategies.op_mix import OpMixStrategy

    domains = split_domains(ctx, count)
    started = time.perf_counter()
    model = new_model(ctx, preset)
    args = datamix_args(ctx.outdir("scaling", f"op_mix-{preset}-{count}"), "op_mix", settings["op_mix"],
                        max_steps=settings["max_steps"], per_device_train_batch_size=settings["batch"],
                        block_size=settings["block"], max_repetitions=4.0)
    trainer = DataMixTrainer(model=model, args=args, domains=domains, processing_class=ctx.tokenizer())
    built = time.perf_counter()
    times: dict[str, float] = {}
    with timed_methods([(LoRAProbeSimulator, "train_probe", "probe_training_s"),
                        (LoRAProbeSimulator, "score_candidates", "candidate_scoring_s"),
                        (OpMixStrategy, "_propose", "law_fit_and_proposal_s")], times), quiet(ctx):
        trainer.train()
    decision, ledger = only_decision(trainer, "op_mix", count)
    flops = ledger["by_kind"].get("probe", 0.0) + ledger["by_kind"].get("eval", 0.0)
    record = {
        "domains": count, "seconds": float(decision["seconds"]), "kind": decision["kind"],
        "ledger_flops": flops,
        "ledger_flops_by_kind": {k: ledger["by_kind"].get(k, 0.0) for k in ("probe", "eval")},
        "probes": count + 1, "build_s": built - started, "wall_s": time.perf_counter() - started, **times,
    }
    del trainer, model
    free_memory()
    return record


def run_olmix_reuse(ctx: Context, preset: str, count: int, settings: dict) -> dict:
    import hf_datamix.strategies.olmix_reuse as olmix_module
    from hf_datamix import DataMixTrainer, Mixture
    from hf_datamix.simulate.proxy_swarm import ProxySwarm

    full = split_domains(ctx, count)
    previous = full.select(full.names[:-1])
    update = previous.add(full[full.names[-1]])
    started = time.perf_counter()
    model = new_model(ctx, "tiny")  # the main model does not take part in an olmix decision
    strategy_args = {**settings["olmix"], "proxy_preset": preset}
    args = datamix_args(ctx.outdir("scaling", f"olmix-{preset}-{count}"), "olmix_reuse", strategy_args, max_steps=1,
                        per_device_train_batch_size=settings["batch"], block_size=settings["block"],
                        max_repetitions=4.0)
    trainer = DataMixTrainer(model=model, args=args, domains=update.domains, processing_class=ctx.tokenizer(),
                             stage=1, update=update, previous_mixture=Mixture.uniform(previous.names))
    built = time.perf_counter()
    times: dict[str, float] = {}
    with timed_methods([(ProxySwarm, "_train_member", "proxy_runs_s"),
                        (olmix_module, "fit_and_propose", "law_fit_and_proposal_s")], times), quiet(ctx):
        trainer.train()
    decision, ledger = only_decision(trainer, "olmix_reuse", count)
    record = {
        "domains": count, "seconds": float(decision["seconds"]), "kind": decision["kind"],
        "ledger_flops": ledger["by_kind"].get("proxy", 0.0), "proxy_runs": decision.get("proxy_runs"),
        "reuse": {k: decision.get("reuse", {}).get(k) for k in ("mode", "compute")},
        "fixed_domains": len(decision.get("reuse", {}).get("fixed", [])),
        "build_s": built - started, "wall_s": time.perf_counter() - started, **times,
    }
    del trainer, model
    free_memory()
    return record


def part_scaling(ctx: Context) -> dict:
    quick, gpu = ctx.quick, cuda()
    counts = [int(c) for c in pick(ctx, "scaling_counts", "4,8", "4,8,16,32,64").split(",")]
    presets = pick(ctx, "scaling_presets", "tiny", "tiny,20m").split(",")
    settings = {
        "block": 64 if quick else 128, "batch": 8, "max_steps": 10,
        "op_mix": {"warmup_fraction": 0.2, "probe_steps": 10 if quick else 20, "probe_batch_size": 8,
                   "num_candidates": 12, "eval_blocks": 2, "eval_batch_size": 16, "probe_bf16": gpu,
                   "law_starts": 30 if quick else 300},
        "olmix": {"reuse": "full", "proxy_steps": 5 if quick else 20, "proxy_batch_size": 8, "proxy_eval_blocks": 2,
                  "law_starts": 30 if quick else 300, **({"swarm_size": 4} if quick else {})},
    }
    out: dict[str, Any] = {
        "domains": "synthetic: the 7 embedded-corpus domains each cut into 10 contiguous document shards; domain i "
                   "= shard i//7 of source i%7 (its eval split = a shard of the source's eval split)",
        "settings": settings,
        "op_mix": "ONE decision of the pretraining schedule: DataMixTrainer(strategy='op_mix', max_steps=10) decides "
                  "after step 2: D+1 LoRA probes x probe_steps, num_candidates Dirichlet candidates scored on D "
                  "domains x eval_blocks, law fit + proposal.  'seconds' is the decision record's seconds; "
                  "ledger_flops = probe + eval FLOPs of the run's ledger (6N/2N per token, N non-embedding)",
        "num_candidates_note": "num_candidates = max(12, D+2): the log-linear law over the D+1 collapsed coordinates "
                               "has D+2 parameters per target and LogLinearLaw.fit refuses fewer runs, so with 12 "
                               "candidates an op_mix decision over 11 or more domains raises ValueError (after all "
                               "probes are trained)",
        "olmix_reuse": "ONE reuse step: a stage that adds domain D to D-1 domains whose previous mixture is "
                       "uniform, reuse='full' -> coordinates {virtual, new}, a swarm of proxies (default 3(2+1)=9) "
                       "of the given preset trained from scratch (proxy_steps each) and scored on all D domains; "
                       "'seconds' is the decision record's seconds (at step 0, before training); ledger_flops = "
                       "proxy FLOPs",
        "model_size_meaning": "op_mix: the preset of the model being trained (the probes' base); olmix: the proxy preset",
        "budget_rule": "the smallest D of every series always runs; a larger one runs only if its projection fits in "
                       "what is left of this part's budget (op_mix: probe time x (D+1)/(D_last+1) + scoring time x "
                       "C*D*(D+1)/(C_last*D_last*(D_last+1)) + the rest as measured; olmix: last wall x (D/D_last)^p, "
                       "p from the last two points in [0.25, 3], 0.5 before); within a D the cheaper series run first",
        "op_mix_runs": {p: [] for p in presets},
        "olmix_reuse_runs": {p: [] for p in presets},
        "skipped": [],
    }
    runners = {"op_mix": run_opmix_decision, "olmix_reuse": run_olmix_reuse}
    series = [("op_mix", p) for p in presets] + [("olmix_reuse", p) for p in presets]
    stopped: dict = {}

    def candidates(count: int) -> int:
        return max(settings["op_mix"]["num_candidates"], count + 2)

    def projection(kind: str, preset: str, count: int) -> float:
        done = out[f"{kind}_runs"][preset]
        if not done:
            return 0.0
        last = done[-1]
        d = last["domains"]
        if kind == "op_mix" and "probe_training_s" in last and "candidate_scoring_s" in last:
            # probes ~ D+1; scoring ~ C*D forward calls, each carrying D+1 active adapters; law + rest as measured
            rest = last["wall_s"] - last["probe_training_s"] - last["candidate_scoring_s"]
            return (last["probe_training_s"] * (count + 1) / (d + 1)
                    + last["candidate_scoring_s"] * candidates(count) * count * (count + 1) / (candidates(d) * d * (d + 1))
                    + rest)
        if len(done) >= 2:
            ratio = last["wall_s"] / max(1e-9, done[-2]["wall_s"])
            exponent = min(3.0, max(0.25, math.log(ratio) / math.log(d / done[-2]["domains"])))
        else:
            exponent = 2.0 if kind == "op_mix" else 0.5
        return last["wall_s"] * (count / d) ** exponent

    for count in counts:
        order = sorted(series, key=lambda item: projection(*item, count))
        for kind, preset in order:
            if (kind, preset) in stopped:
                out["skipped"].append({"kind": kind, "preset": preset, "domains": count,
                                       "reason": f"a smaller D was skipped ({stopped[(kind, preset)]})"})
                continue
            estimate = projection(kind, preset, count)
            first = not out[f"{kind}_runs"][preset]
            if not first and estimate > ctx.remaining():
                stopped[(kind, preset)] = f"D={count}"
                out["skipped"].append({"kind": kind, "preset": preset, "domains": count, "projected_s": estimate,
                                       "reason": f"time budget: projected {estimate:.0f}s > {ctx.remaining():.0f}s left"})
                log(f"scaling {kind} {preset} D={count}: skipped (projected {estimate:.0f}s, "
                    f"{ctx.remaining():.0f}s left)")
                continue
            run_settings = settings
            if kind == "op_mix":
                run_settings = {**settings, "op_mix": {**settings["op_mix"], "num_candidates": candidates(count)}}
            try:
                record = runners[kind](ctx, preset, count, run_settings)
            except Exception as error:  # noqa: BLE001 - one failed point must not lose the others
                stopped[(kind, preset)] = f"error at D={count}"
                out["skipped"].append({"kind": kind, "preset": preset, "domains": count,
                                       "reason": f"error: {type(error).__name__}: {error}"[:500]})
                log(f"scaling {kind} {preset} D={count}: ERROR {type(error).__name__}: {error}")
                free_memory()
                continue
            if kind == "op_mix":
                record["num_candidates"] = run_settings["op_mix"]["num_candidates"]
            record["projected_wall_s"] = estimate or None
            out[f"{kind}_runs"][preset].append(record)
            log(f"scaling {kind} {preset} D={count}: decision {record['seconds']:.2f}s, {record['ledger_flops']:.3g} "
                f"FLOPs (wall {record['wall_s']:.1f}s)")
    if not any(out["op_mix_runs"].values()) and not any(out["olmix_reuse_runs"].values()):
        raise RuntimeError(f"no scaling point could be measured: {out['skipped']}")
    errors = [s for s in out["skipped"] if s["reason"].startswith("error")]
    if errors:
        out["errors"] = errors
    return out


def plot_scaling(result: dict, path: str) -> str | None:
    part = result.get("parts", {}).get("scaling", {})
    if not any(part.get("op_mix_runs", {}).values()) and not any(part.get("olmix_reuse_runs", {}).values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from hf_datamix.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.5))
    titles = {"op_mix": "op_mix: one decision (pretraining schedule)", "olmix_reuse": "olmix_reuse: one reuse step"}
    pieces = {"op_mix": [("probe_training_s", "probes", ":"), ("candidate_scoring_s", "candidates", "--"),
                         ("law_fit_and_proposal_s", "law + proposal", "-.")],
              "olmix_reuse": [("proxy_runs_s", "proxies", ":"), ("law_fit_and_proposal_s", "law + proposal", "-.")]}
    for ax, kind in zip(axes, ("op_mix", "olmix_reuse")):
        ticks = set()
        for i, (preset, runs) in enumerate(part.get(f"{kind}_runs", {}).items()):
            color = f"C{i}"
            if runs:
                xs = [r["domains"] for r in runs]
                ticks.update(xs)
                ax.plot(xs, [r["seconds"] for r in runs], marker="o", color=color, label=f"{preset}: decision total")
                for field, label, style in pieces[kind]:
                    if all(field in r for r in runs):
                        ax.plot(xs, [r[field] for r in runs], linestyle=style, color=color, alpha=0.6,
                                label=f"{preset}: {label}")
            projected = [(s["domains"], s["projected_s"]) for s in part.get("skipped", [])
                         if s["kind"] == kind and s["preset"] == preset and s.get("projected_s")]
            if projected:
                ticks.update(d for d, _ in projected)
                ax.scatter(*zip(*projected), marker="o", facecolors="none", edgecolors=color,
                           label=f"{preset}: skipped, projected wall")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if ticks:
            ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("number of domains")
        ax.set_ylabel("seconds")
        ax.set_title(titles[kind], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{result.get('device', '')}, commit {str(result.get('commit', ''))[:10]}: seconds of one decision "
                 "(model size = trained model for op_mix, proxy preset for olmix)", fontsize=9)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
FUNCTIONS = {
    "interleaver": part_interleaver, "overhead": part_overhead, "laws": part_laws,
    "candidates": part_candidates, "speed": part_speed, "scaling": part_scaling,
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
        inter["gpu_20m_tokens_per_s_source"] = ("part 5 (speed), best of the 20m runs" if measured else
                                                "reference 0.86M tokens/s (20M Llama, plain bf16 loop on an H100)")
        inter["ratio_to_gpu_20m_consumption"] = inter["interleaver_tokens_per_s"] / gpu_tps
        targets.append({"target": "interleaver tokens/s >= 4x the GPU's 20m consumption",
                        "measured": f"{inter['ratio_to_gpu_20m_consumption']:.1f}x",
                        "met": bool(inter["ratio_to_gpu_20m_consumption"] >= 4)})
        overhead = parts.get("overhead", {})
        loader = overhead.get("loader_only", {}).get("datamix_s_per_batch")
        settings = overhead.get("settings", {})
        if loader and settings.get("block_size"):
            tokens = settings["per_device_train_batch_size"] * settings["block_size"] / loader
            inter["trainer_loader_tokens_per_s"] = tokens
            inter["trainer_loader_ratio_to_gpu_20m_consumption"] = tokens / gpu_tps
            inter["trainer_loader_note"] = ("part 2's DataMixTrainer train DataLoader alone (Interleaver + collation + "
                                            "accelerate's loader + copy to the device), its tokens/s over the GPU's")
    for name, ratio in parts.get("overhead", {}).get("ratios_vs_plain", {}).items():
        targets.append({"target": f"{name} median step <= 1.02x plain Trainer",
                        "measured": f"step {ratio['step_ratio']:.3f}x, interval (incl. batch fetch) {ratio['interval_ratio']:.3f}x",
                        "met": bool(max(ratio["step_ratio"], ratio["interval_ratio"]) <= 1.02)})
    for count, record in parts.get("candidates", {}).get("by_candidates", {}).items():
        if "peak_over_single_plain_evaluation" in record:
            targets.append({"target": f"peak GPU memory of {count} candidates <= 1.1x a single evaluation",
                            "measured": f"{record['peak_over_single_plain_evaluation']:.3f}x",
                            "met": bool(record["peak_over_single_plain_evaluation"] <= 1.1)})
    for key in ("150m_compiled", "150m_eager"):
        if "mfu" in speed.get(key, {}):
            targets.append({"target": f"MFU >= 40% at 150m ({key})", "measured": f"{speed[key]['mfu']:.1%}",
                            "met": bool(speed[key]["mfu"] >= 0.40)})
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
    parser.add_argument("--work", default=None, help="scratch folder (trainer outputs, packed blocks); default a temp dir")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of the run (default 480 GPU, 140 --quick)")
    parser.add_argument("--commit", default=None, help="commit to record (default: git rev-parse HEAD, else $PERF_COMMIT)")
    parser.add_argument("--overhead-preset", default=None, help="part 2: model preset (default 20m; tiny with --quick)")
    parser.add_argument("--overhead-block", type=int, default=None, help="part 2: block size (default 1024; 64 --quick)")
    parser.add_argument("--overhead-steps", type=int, default=None, help="part 2: steps per trainer (default 230; 25 --quick)")
    parser.add_argument("--overhead-rounds", type=int, default=None,
                        help="part 2: rounds of plain / uniform / op_mix runs (default 3; 1 --quick)")
    parser.add_argument("--overhead-batch", type=int, default=None, help="part 2: per-device batch (default 32; 4 --quick)")
    parser.add_argument("--candidates-preset", default=None, help="part 4: model preset (default 20m; tiny --quick)")
    parser.add_argument("--candidates-block", type=int, default=None, help="part 4: block size (default 1024; 64 --quick)")
    parser.add_argument("--speed-presets", default=None, help="part 5: presets (default 20m,60m,150m; tiny,small --quick)")
    parser.add_argument("--speed-block", type=int, default=None, help="part 5: block size (default 1024; 64 --quick)")
    parser.add_argument("--speed-compile", choices=["on", "off"], default=None,
                        help="part 5: also run with torch_compile (default on; off with --quick)")
    parser.add_argument("--scaling-presets", default=None, help="part 6: presets (default tiny,20m; tiny --quick)")
    parser.add_argument("--scaling-counts", default=None, help="part 6: domain counts (default 4,8,16,32,64; 4,8 --quick)")
    parser.add_argument("--interleaver-samples", type=int, default=10000, help="part 1: samples timed (GPU run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads on CPU (default 1 with --quick: tiny models, shared cores)")
    parser.add_argument("--speed-args", default=None,
                        help='part 5: JSON of extra TrainingArguments for every run, e.g. \'{"use_liger_kernel": true}\'')
    parser.add_argument("--speed-batch", default="20m=64,60m=48,150m=64,tiny=8,small=8",
                        help="part 5: per-device batch per preset")
    opts = parser.parse_args(argv)
    opts.parts = parse_parts(opts.parts)
    if opts.budget_s is None:
        opts.budget_s = 140.0 if opts.quick else 480.0
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
    summary = {name: ("ERROR " + part["error"]) if "error" in part else f"ok ({part['part_wall_s']:.1f}s)"
               for name, part in result["parts"].items()}
    log(f"wrote {os.path.join(opts.out, 'perf.json')}: {json.dumps(summary)}")
    for target in result.get("targets", []):
        log(f"target {'MET ' if target['met'] else 'MISS'} {target['target']}: {target['measured']}")
    return result


if __name__ == "__main__":
    main()
