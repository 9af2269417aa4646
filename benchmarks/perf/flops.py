"""Counted FLOPs of a training step and the device's peak: the two halves of an MFU figure.

:func:`step_flops` runs one forward + backward of the actual model at the benchmark's shape under
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention; elementwise work, norms and the
loss are not counted, as in the MFU convention).  :func:`device_peak` looks the device's dense
tensor-core peak up in :data:`PEAKS` by substrings of its name.  Only the benchmark uses them: the
library's ComputeLedger keeps its stated 6N / 4N / 2N convention (``hf_datamix/compute.py``), and
perf.json puts the counted figure beside it.
"""

from __future__ import annotations

from typing import Any


#: Dense (no structured sparsity) peaks in FLOP/s per GPU, checked in order: the first entry all of whose
#: substrings occur in ``torch.cuda.get_device_name()`` wins, so specific variants come before their family.
#: Sources: NVIDIA's product datasheets; they quote tensor-core figures "with sparsity", halved here.
PEAKS: list[tuple[tuple[str, ...], dict[str, float], str]] = [
    # H200 NVL: datasheet BF16 1,671 TFLOPS (sparse), TF32 835 (sparse), FP32 60 TFLOPS.
    (("H200", "NVL"), {"bf16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12}, "NVIDIA H200 NVL datasheet (2024)"),
    # H200 SXM: datasheet BF16 1,979 TFLOPS (sparse), TF32 989 (sparse), FP32 67 TFLOPS (same chip as H100 SXM).
    (("H200",), {"bf16": 989.5e12, "tf32": 494.7e12, "fp32": 67e12}, "NVIDIA H200 datasheet (2024), SXM"),
    # H100 PCIe: datasheet BF16 1,513 TFLOPS (sparse), TF32 756 (sparse), FP32 51 TFLOPS.
    (("H100", "PCIe"), {"bf16": 756.5e12, "tf32": 378e12, "fp32": 51e12}, "NVIDIA H100 datasheet (2023), PCIe"),
    # H100 NVL: datasheet BF16 1,671 TFLOPS (sparse), TF32 835 (sparse), FP32 60 TFLOPS.
    (("H100", "NVL"), {"bf16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12}, "NVIDIA H100 datasheet (2023), NVL"),
    # H100 SXM ("NVIDIA H100 80GB HBM3"): datasheet BF16 1,979 TFLOPS (sparse), TF32 989 (sparse), FP32 67.
    (("H100",), {"bf16": 989.5e12, "tf32": 494.7e12, "fp32": 67e12}, "NVIDIA H100 datasheet (2023), SXM"),
    # A100 (SXM4 and PCIe, 40 and 80 GB): datasheet BF16 312 TFLOPS dense, TF32 156 dense, FP32 19.5.
    (("A100",), {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}, "NVIDIA A100 datasheet (2021)"),
    # L40S: datasheet BF16 733 TFLOPS (sparse), TF32 366 (sparse), FP32 91.6 TFLOPS.
    (("L40S",), {"bf16": 366.5e12, "tf32": 183e12, "fp32": 91.6e12}, "NVIDIA L40S datasheet (2023)"),
    # L4: datasheet BF16 242 TFLOPS (sparse), TF32 120 (sparse), FP32 30.3 TFLOPS.
    (("L4",), {"bf16": 121e12, "tf32": 60e12, "fp32": 30.3e12}, "NVIDIA L4 datasheet (2023)"),
]


def device_peak(name: str | None, precision: str) -> tuple[float | None, str]:
    """``(peak FLOP/s, source)`` of device ``name`` at ``precision`` (bf16, tf32, fp32), or ``(None, reason)``."""
    if precision not in ("bf16", "tf32", "fp32"):
        raise ValueError(f"device_peak: precision={precision!r}; use bf16, tf32 or fp32.")
    if not name:
        return None, "no accelerator: the peak table holds GPUs only, so MFU is not computed"
    words = name.split()
    for needles, peaks, source in PEAKS:
        # "L4" must not match "L40S": a needle matches a whole word, or a part of one before a '-' (A100-SXM4-80GB)
        if all(any(w == n or w.startswith(n + "-") for w in words) for n in needles):
            return peaks[precision], f"{source}: {precision} dense, matched {'+'.join(needles)} in {name!r}"
    return None, f"device {name!r} is not in benchmarks/perf/flops.py PEAKS: add its datasheet peak to compute MFU"


def train_precision(bf16: bool) -> str:
    """The precision whose peak bounds a run: bf16 autocast, else fp32 matmuls (tf32 where CUDA allows it)."""
    import torch

    if bf16:
        return "bf16"
    return "tf32" if torch.cuda.is_available() and torch.backends.cuda.matmul.allow_tf32 else "fp32"


def _attention_formulas() -> dict:
    """FLOP formulas for the CPU flash-attention kernels, which torch's table lacks (it counts the CUDA ones)."""
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    table = {}
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None:
        table[forward] = lambda query, key, value, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(
            query, key, value
        )
    if backward is not None:
        table[backward] = lambda grad, query, key, value, *args, out_shape=None, **kwargs: (
            flop_counter.sdpa_backward_flop_count(grad, query, key, value)
        )
    return table


def count_flops(run) -> float:
    """FLOPs torch's FlopCounterMode counts while ``run()`` executes (CPU attention kernels included)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_attention_formulas()) as counter:
        run()
    return float(counter.get_total_flops())


_CACHE: dict[Any, float] = {}


def step_flops(model, batch: int, block: int, bf16: bool = False, key: Any = None) -> float:
    """Counted FLOPs of one training step (forward + backward) of ``model`` on ``batch`` x ``block`` tokens.

    One sequence is counted and multiplied by ``batch`` (every counted op is linear in the batch); the
    gradients it leaves are cleared.  ``key`` (e.g. ``(preset, block)``) caches the count: once per shape.
    """
    import torch

    if key is not None and (key, batch) in _CACHE:
        return _CACHE[(key, batch)]
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (1, block), device=device)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()

    was_training = model.training
    model.train()
    try:
        flops = count_flops(step) * batch
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    if key is not None:
        _CACHE[(key, batch)] = flops
    return flops


def formula_flops_per_token(model, block: int) -> tuple[float, float]:
    """The hand formula, kept as a cross-check: ``(6(N + V d) + 12 L d T, 6 N)`` per token (see ``MFU_FORMULA``)."""
    config = model.config
    n = model.num_parameters(exclude_embeddings=True)
    head = config.vocab_size * config.hidden_size
    attention = 12 * config.num_hidden_layers * config.hidden_size * block
    return 6.0 * (n + head) + attention, 6.0 * n


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation, None without a peak."""
    return tokens_per_s * flops_per_token / peak if peak else None
