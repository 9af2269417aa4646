"""What the parts of the performance benchmark share: options, the budget, data, models, timers, the header."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCHMARKS)
RESULTS_DIR = os.path.join(BENCHMARKS, "results")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

import _common  # noqa: E402  (benchmarks/_common.py: provenance, timers)
from _common import decision_records  # noqa: E402, F401  (for the parts: the one implementation)


#: Reference consumption of a 20M Llama on one H100 with a plain bf16 loop (issue 7), used when part 5 did not run.
GPU_20M_TOKENS_PER_S_REFERENCE = 0.86e6

PARTS = ["interleaver", "overhead", "laws", "candidates", "speed", "scaling"]
#: share of the time budget each part may use (of what is left when it starts, among the parts still to run).
#: GPU: the overhead target is met (<= 1.02x, 3 rounds in an earlier file), so speed (MFU, probes, branches) and
#: scaling (32 and 64 domains) get most of one 10-minute device command.
SHARES = {"interleaver": 0.03, "overhead": 0.10, "laws": 0.03, "candidates": 0.04, "speed": 0.40, "scaling": 0.40}
SHARES_QUICK = {
    "interleaver": 0.05,
    "overhead": 0.15,
    "laws": 0.06,
    "candidates": 0.05,
    "speed": 0.08,
    "scaling": 0.61,
}

MFU_FORMULA = (
    "MFU = tokens_per_s * flops_per_token / peak.  flops_per_token: counted, one training step (forward + "
    "backward) of the run's model at its batch x block under torch.utils.flop_counter.FlopCounterMode "
    "(matmuls and attention; the count of one sequence x batch, once per preset and block), divided by the "
    "step's tokens.  peak: the device's dense tensor-core peak at the run's precision (bf16, else tf32/fp32) "
    "from benchmarks/perf/flops.py PEAKS, keyed by substrings of torch.cuda.get_device_name(); MFU is None with "
    "the reason when the device is not in the table (a CPU).  Cross-check kept beside it: flops_per_token_formula "
    "= 6*(N_nonembedding + V*d) + 12*L*d*T (N_nonembedding = model.num_parameters(exclude_embeddings=True), V*d = "
    "the tied LM head's matmul, 12*L*d*T = QK^T and AV forward + backward over the full T x T matrix, PaLM "
    "appendix B; L layers, d hidden size, T = block_size) and mfu_from_formula against the same peak; torch counts "
    "the attention backward with the recomputed QK^T of flash attention (14*L*d*T), hence counted slightly above "
    "the formula.  mfu_6n_only: 6*N_nonembedding alone (the ledger's Kaplan convention)."
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
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def header(opts) -> dict[str, Any]:
    import torch

    if cuda():
        props = torch.cuda.get_device_properties(0)
        details = {
            "kind": "cuda",
            "gpus": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cpu_cores": os.cpu_count(),
        }
    else:
        details = {"kind": "cpu", "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    return {
        **_common.provenance(
            "perf (issue 7)",
            opts.commit,
            commit_env="PERF_COMMIT",
            software=("datasets", "peft", "accelerate", "hf_datamix"),
        ),
        "status": "partial",
        "device_details": details,
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
        self.on_progress: Callable[[dict], None] | None = None

    def progress(self, record: dict) -> None:
        """Write the running part's record so far into perf.json (a run cut inside a part keeps what it measured)."""
        if self.on_progress is not None:
            self.on_progress(record)

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
    config = llama_config(
        preset,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
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
    return DataMixArguments(
        output_dir=output_dir, strategy=strategy, strategy_args=dict(strategy_args or {}), **values
    )


def only_decision(trainer, strategy: str, count: int) -> tuple[dict, dict]:
    """The run's first decision record and its ledger; RuntimeError if ``strategy`` took none."""
    decisions = decision_records(trainer.history)
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
            def __init__(
                self,
                sync_begin: Callable[[int], bool] = lambda step: True,
                sync_end: Callable[[int], bool] | None = None,
            ):
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
                return [
                    self.end[s] - self.begin[s] for s in range(first, last + 1) if s in self.end and s in self.begin
                ]

            def interval_s(self, first: int, last: int) -> list[float]:
                return [
                    self.end[s] - self.end[s - 1]
                    for s in range(max(2, first), last + 1)
                    if s in self.end and s - 1 in self.end
                ]

        return _Timer(*args, **kwargs)


def timed_methods(targets: list[tuple[Any, str, str]], times: dict[str, float]):
    """``_common.timed_methods`` synchronising the GPU around each call (raises if a method is missing)."""
    return _common.timed_methods(targets, times, sync=sync)
