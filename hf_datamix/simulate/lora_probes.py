"""OP-Mix's simulator: LoRA probes trained on the current model, candidate mixtures scored exactly.

A candidate is ``θ(w) = θ + Σ_c w_c·ΔW_c`` with ``ΔW_c = (alpha/rank)·B_c·A_c``: a weighted sum of the
probes' *weight deltas* (not of their A and B factors).  While a candidate is scored the PEFT
adapters are switched off and each adapted layer adds one stacked low-rank product
``[w_1 s B_1 | ... | w_K s B_K] · [A_1; ...; A_K] x`` (``s = alpha/rank``), which is that sum exactly.

Every probe trains in the same PEFT adapter (one *slot*, re-initialised per probe); a trained probe's
factors are kept aside and the slot's ``B`` zeroed, so between probes the model computes θ.  The
adapted modules therefore never change while probes train, and a compiled probe step
(``ProbeConfig.compile``) is compiled once for all probes instead of once per probe (a new PEFT
adapter changes the modules torch.compile guards on); a later decision's slot, alike, reuses it.
:meth:`LoRAProbeSimulator.as_peft_adapters` gives the probes as PEFT adapters of their own names, for
PEFT's multi-adapter methods.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer

from ..compute import ComputeLedger, non_embedding_parameters
from .scoring import BlockLossScorer


logger = logging.getLogger(__name__)

# Smoothing of the running loss watched for divergence: one noisy batch must not drop a probe,
# a loss that keeps climbing must.
_RUNNING_LOSS_DECAY = 0.9
# Probe losses are read back from the device this often (each read stalls the GPU queue).
_SYNC_EVERY = 16
# Only these batch entries reach the model, so interleaver metadata (domain ids, ...) cannot break forward().
_MODEL_INPUTS = ("input_ids", "labels", "attention_mask", "position_ids")
# The PEFT adapter every probe trains in (a reserved probe name).
SLOT = "hf_datamix_probe_slot"


@dataclass
class ProbeConfig:
    """Settings of OP-Mix's LoRA probes; defaults are the published ones where the paper gives them."""

    rank: int = field(default=16, metadata={"help": "LoRA rank r of every probe, >= 1 (OP-Mix: 16)."})
    alpha: float = field(default=32.0, metadata={"help": "LoRA alpha > 0; delta = (alpha/rank)*B*A (OP-Mix: 32)."})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout in [0, 1) while training (OP-Mix: 0.05)."})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt; None: every nn.Linear but the LM head (attention + MLP)."}
    )
    lr_multiplier: float = field(default=2.0, metadata={"help": "Probe LR = base LR x this, > 0 (OP-Mix: 2)."})
    steps: int = field(default=5000, metadata={"help": "Steps per probe (OP-Mix: 5000 pretraining, 2500 continual)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per probe step; callers build batches this size."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share in [0, 1] of steps with linear LR warm-up."})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient-norm clip of probe parameters (<= 0: none)."}
    )
    divergence_factor: float = field(
        default=3.0, metadata={"help": "Drop a probe whose running loss is NaN/inf or > its first loss x this (> 0)."}
    )
    bf16: bool = field(default=False, metadata={"help": "Train probes and score candidates under bf16 autocast."})
    compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the probes' forward + backward (once: every probe trains in the same adapter "
            "slot and a later simulator's slot on the same model reuses it; pays off on a GPU)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of probe init and dropout (the global RNG is untouched)."})

    def __post_init__(self):
        checks = {"rank": self.rank >= 1, "steps": self.steps >= 1, "batch_size": self.batch_size >= 1}
        checks |= {"alpha": self.alpha > 0, "lr_multiplier": self.lr_multiplier > 0, "dropout": 0 <= self.dropout < 1}
        checks |= {"divergence_factor": self.divergence_factor > 0, "warmup_ratio": 0 <= self.warmup_ratio <= 1}
        helps = {f.name: f.metadata["help"] for f in fields(self)}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ProbeConfig.{name}={getattr(self, name)!r} is out of range. {name}: {helps[name]}")
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]


@dataclass
class ProbeResult:
    """Outcome of one probe: per-step losses, the mean of the last 10 (``final_loss``), divergence."""

    name: str
    steps: int
    losses: list[float]
    final_loss: float
    diverged: bool = False
    reason: str = ""


def default_target_modules(model: torch.nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers a probe adapts: all of them except the LM head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    kept = [n for n, m in linears if m is not head and n.rsplit(".", 1)[-1] != "lm_head"]
    if not kept:
        raise ValueError(
            "No nn.Linear layer besides the LM head was found; set ProbeConfig.target_modules explicitly."
        )
    suffixes, kept_set = {n.rsplit(".", 1)[-1] for n in kept}, set(kept)
    excluded = {n.rsplit(".", 1)[-1] for n, _ in linears if n not in kept_set}
    # Suffixes (q_proj, ...) keep the saved adapter config short; full paths only when a suffix is
    # shared with the head and would drag it in.
    return sorted(kept) if suffixes & excluded else sorted(suffixes)


class LoRAProbeSimulator:
    """Trains LoRA probes on ``model`` in place and scores candidate mixtures θ + Σ w_c ΔW_c.

    ``model`` is the unwrapped model (``accelerator.unwrap_model``); it is never copied and its base
    weights stay bit-identical.  :meth:`close` removes every adapter and returns the restored model.
    ``base_learning_rate`` is a public attribute (probe LR = it x ``lr_multiplier``).

    By default the work is local to this process, and so are the ledger entries.  With
    ``collective=True`` every process of the initialised ``torch.distributed`` group makes the same
    calls together, as an FSDP-sharded model needs (each of its forward passes is a collective):
    each process trains a probe on the batches it is given (its share of a global batch, see
    ``DataMixTrainer.probe_batches(shard=...)``) with the probe gradients and
    losses averaged over processes, and scores its share of the eval blocks, with the sums
    all-reduced, so every process ends with the same probes and the same scores.  The ledger then
    counts the tokens of all processes.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: ProbeConfig | None,
        base_learning_rate: float,
        ledger: ComputeLedger | None = None,
        device: torch.device | str | None = None,
        collective: bool = False,
    ):
        if collective and not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "collective=True needs an initialised torch.distributed process group (accelerate launch)."
            )
        self.collective = bool(collective)
        self.world_size = dist.get_world_size() if self.collective else 1
        self.rank = dist.get_rank() if self.collective else 0
        if not base_learning_rate > 0:
            raise ValueError(f"base_learning_rate must be > 0, got {base_learning_rate!r}.")
        if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
            raise ValueError(
                "The model already holds PEFT adapters; LoRAProbeSimulator needs a plain model (merge first)."
            )
        self.model = model
        self.config = config if config is not None else ProbeConfig()
        self.base_learning_rate = float(base_learning_rate)
        self.ledger = ledger
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.num_parameters = non_embedding_parameters(model)  # N of the FLOPs formula, without adapters
        # Resolved now: once LoRA layers are in, their own Linear modules would be found too.
        self.target_modules = list(self.config.target_modules or default_target_modules(model))
        self.results: dict[str, ProbeResult] = {}
        self._probes: list[str] = []
        # Each surviving probe's factors, {probe: {adapted module name: (A, B, scaling)}}: ΔW = scaling·B·A.
        self._factors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]] = {}
        self._peft = None
        self._slot_parameters: list[torch.nn.Parameter] = []
        self._snapshot: dict | None = None
        self._closed = False

    @property
    def probes(self) -> list[str]:
        """Names of the surviving (not diverged) probes, in training order."""
        return list(self._probes)

    def train_probe(
        self, name: str, batches: Iterable[Mapping[str, torch.Tensor]], steps: int | None = None
    ) -> ProbeResult:
        """Train a new probe ``name`` on θ alone, for ``steps`` batches holding ``input_ids`` and ``labels``.

        A probe that diverges is deleted, logged and reported with ``diverged=True``.
        """
        self._check_open()
        self._check_name(name)
        steps = int(self.config.steps if steps is None else steps)
        if steps < 1:
            raise ValueError(f"train_probe({name!r}): steps must be >= 1, got {steps}.")
        self._ensure_slot()
        with self._rng(name), self._modes(train=True):
            self._reset_slot()  # under the probe's own seed: its init depends on its name only
            try:
                losses, tokens, reason = self._optimize(name, iter(batches), steps)
            except BaseException:
                self._clear_slot()  # a half-trained probe must never become a candidate
                raise
        if self.ledger is not None and tokens:
            self.ledger.add_frozen_training("probe", self.num_parameters, tokens * self.world_size)
        final = float(np.mean(losses[-10:])) if losses else float("nan")
        result = self.results[name] = ProbeResult(name, len(losses), losses, final, bool(reason), reason)
        if reason:
            logger.warning("Probe %r diverged (%s); it is dropped from the candidates.", name, reason)
        else:
            self._factors[name] = {
                module: (
                    layer.lora_A[SLOT].weight.detach().clone(),
                    layer.lora_B[SLOT].weight.detach().clone(),
                    float(layer.scaling[SLOT]),
                )
                for module, layer in self._lora_layers()
            }
            self._probes.append(name)
        self._clear_slot()
        return result

    def lora_factors(self, name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """Probe ``name``'s ``{adapted module name: (A, B, scaling)}``, its weight delta being ``scaling·B·A``."""
        self._check_open()
        if name not in self._factors:
            raise ValueError(f"Probe {name!r} is not a surviving probe; surviving probes: {self._probes}.")
        return dict(self._factors[name])

    @contextlib.contextmanager
    def as_peft_adapters(self) -> Iterator[torch.nn.Module]:
        """Inside the block the surviving probes are also PEFT adapters named after them, frozen, none active;
        yields the ``PeftModel`` (for PEFT's own multi-adapter methods: ``set_adapter([...])``, ``set_scale``,
        ``add_weighted_adapter``).  They are deleted on exit; scoring does not need them."""
        self._check_open()
        if self._peft is None:
            raise ValueError("No probe has been trained yet (or none survived): there is no adapter to give.")
        added = []
        try:
            for name in self._probes:
                self._peft.add_adapter(name, self._lora_config())
                added.append(name)
                for module, layer in self._lora_layers():
                    down, up, _ = self._factors[name][module]
                    layer.lora_A[name].weight.data = down.clone()
                    layer.lora_B[name].weight.data = up.clone()
            self._peft.base_model.set_adapter([], inference_mode=True)
            yield self._peft
        finally:
            # The slot active (frozen) first: deleting the active adapter would make PEFT pick one and train it.
            self._peft.base_model.set_adapter([SLOT], inference_mode=True)
            for name in added:
                self._peft.delete_adapter(name)
            self._peft.base_model.set_adapter([], inference_mode=True)

    @contextlib.contextmanager
    def interpolated(self, weights: Mapping[str, float]) -> Iterator[torch.nn.Module]:
        """Inside the block ``self.model`` computes θ + Σ_c weights[c]·ΔW_c, in eval mode (dropout off).

        For callers that score candidates their own way (e.g. by generation); not counted in the ledger.
        """
        self._check_open()
        weights = self._check_weights(weights)
        # Zero-weight probes are left out rather than scaled by 0: same result, less compute.
        active = [n for n in self._probes if weights.get(n, 0.0) != 0.0]
        handles = []
        with self._modes(train=False):
            try:
                if self._peft is not None:
                    # PEFT would run each active probe as its own pair of small matmuls (2K per layer);
                    # the probes are switched off and their deltas added as ONE low-rank product per
                    # layer instead: Σ_c w_c s B_c A_c x = [w_1 s B_1 | ... | w_K s B_K] · [A_1; ...; A_K] x.
                    self._peft.base_model.set_adapter([], inference_mode=True)
                    for module, layer in self._lora_layers() if active else []:
                        down, up = self._stacked_delta(module, active, weights)
                        handles.append(layer.register_forward_hook(_LowRankDelta(down, up)))
                yield self.model
            finally:
                for handle in handles:
                    handle.remove()

    def evaluate_candidates(
        self,
        candidates: Sequence[Mapping[str, float]],
        eval_sets: Mapping[str, torch.Tensor],
        batch_size: int,
        progress: bool = False,
    ) -> np.ndarray:
        """Loss (C, D) of each candidate (probe name -> weight >= 0) on each eval set (domain -> (n, L) LongTensor).

        An entry is the token-weighted mean next-token cross-entropy over the domain's blocks (each
        block predicts L-1 tokens); columns follow ``eval_sets``' key order; ``{}`` scores θ itself.
        ``progress`` shows a tqdm bar over the candidates.
        """
        # Checked (the blocks by the scorer) before any compute is spent; moved to the device once.
        scorer = BlockLossScorer(
            eval_sets,
            batch_size,
            self.device,
            bf16=self.config.bf16,
            collective=self.collective,
            ledger=self.ledger,
            num_parameters=self.num_parameters,
        )
        for candidate in candidates:
            self._check_weights(candidate)
        return self.score_candidates(candidates, scorer, progress=progress)

    def score_candidates(
        self, candidates: Sequence[Mapping[str, float]], scorer, progress: bool = False
    ) -> np.ndarray:
        """``(C, T)``: ``scorer(model)`` (see :mod:`hf_datamix.simulate.scoring`) of each interpolated candidate.

        The scorer counts its own forward passes in the ledger.
        """
        from tqdm.auto import tqdm

        rows = []
        for candidate in tqdm(candidates, desc="op_mix candidates", disable=not progress, leave=False):
            with self.interpolated(candidate):
                rows.append(scorer(self.model))
        return np.asarray(rows, dtype=float).reshape(len(candidates), -1)

    def save_adapters(self, directory: str) -> dict[str, str]:
        """Save each surviving probe with PEFT's ``save_pretrained`` in ``directory/<name>``; returns the paths."""
        self._check_open()
        if not self._probes:
            return {}
        with self.as_peft_adapters() as peft_model:
            for name in self._probes:
                # PEFT writes an adapter named "default" at the root, others in a sub-folder: make it uniform.
                target = os.path.join(directory, name) if name == "default" else directory
                peft_model.save_pretrained(target, selected_adapters=[name])
        return {name: os.path.join(directory, name) for name in self._probes}

    def close(self) -> torch.nn.Module:
        """Remove every probe, restore the model (modules, modes, ``requires_grad``) and return it."""
        if not self._closed:
            if self._peft is not None:
                self._unwrap()
            self._probes.clear()
            self._factors.clear()
            self._closed = True
        return self.model

    def __enter__(self) -> LoRAProbeSimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _optimize(self, name: str, iterator: Iterator[Mapping[str, torch.Tensor]], steps: int):
        """AdamW on probe ``name``'s parameters; returns (losses, tokens forwarded, divergence reason or "")."""
        config, params = self.config, self._slot_parameters
        # No weight decay: it would pull the probe's delta towards 0, i.e. towards θ, not towards its data.
        # Fused on CUDA: one kernel for all adapter tensors instead of several per tensor.
        optimizer = torch.optim.AdamW(
            params,
            lr=self.base_learning_rate * config.lr_multiplier,
            weight_decay=0.0,
            fused=True if self.device.type == "cuda" else None,
        )
        forward = self._loss_function()
        warmup = math.ceil(config.warmup_ratio * steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1)))
        watch = _DivergenceWatch(config.divergence_factor)
        pending: list[torch.Tensor] = []  # losses still on the device: read back every few steps, not every step
        tokens = 0
        try:
            for step in range(steps):
                batch = next(iterator, None)
                if batch is None:
                    logger.warning("Probe %r: batches ran out after %d of %d steps.", name, step, steps)
                    break
                if "input_ids" not in batch or "labels" not in batch:
                    raise ValueError(
                        f"Probe {name!r}: batches need 'input_ids' and 'labels', got keys {sorted(batch)}."
                    )
                inputs = {k: batch[k].to(self.device, non_blocking=True) for k in _MODEL_INPUTS if k in batch}
                loss = forward(inputs)
                tokens += inputs["input_ids"].numel()
                loss.backward()
                if self.collective:
                    self._average_gradients(params)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                pending.append(loss.detach())
                if len(pending) == _SYNC_EVERY:
                    # A divergence is seen up to _SYNC_EVERY - 1 steps late; the probe is dropped all the same.
                    if watch.add(self._mean_over_processes(pending)):
                        return watch.losses, tokens, watch.reason
                    pending = []
            if pending and watch.add(self._mean_over_processes(pending)):
                return watch.losses, tokens, watch.reason
            return watch.losses, tokens, ""
        finally:
            for param in params:  # trained probes are frozen: candidates only read them
                param.requires_grad_(False)
                param.grad = None

    def _loss_function(self):
        """``inputs -> loss`` of the model as it is (the slot active), under the probe's autocast; compiled
        when ``config.compile``.  Dynamo caches the compilation on this function's code, so a probe's fresh
        wrapper reuses it while the slot's modules keep their structure (every probe, every later slot)."""

        def loss(inputs):
            with self._autocast():
                return self.model(**inputs, use_cache=False).loss

        return torch.compile(loss, dynamic=False) if self.config.compile else loss

    def _average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average the probe's gradients over processes, in one all-reduce (collective mode)."""
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def _mean_over_processes(self, losses: list[torch.Tensor]) -> list[float]:
        """The pending losses as floats, averaged over processes in collective mode, so that every
        process takes the same divergence decision."""
        values = torch.stack(losses).float()
        if self.collective:
            dist.all_reduce(values)
            values /= self.world_size
        return values.tolist()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This LoRAProbeSimulator is closed; create a new one to train or score probes.")

    def _check_name(self, name: str) -> None:
        # PEFT keys parameters by adapter name after "lora_": a dot or a piece of that prefix breaks loading.
        if not isinstance(name, str) or not name or "." in name or name in "lora_" or name == SLOT:
            raise ValueError(
                f"Probe name {name!r} is invalid: use a string without '.' that is not part of 'lora_' "
                f"and is not {SLOT!r} (the adapter probes train in)."
            )
        if name in self.results:
            raise ValueError(f"Probe name {name!r} is already used; used names: {sorted(self.results)}.")

    def _check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        checked = {}
        for name, value in weights.items():
            value = float(value)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Weight of probe {name!r} is {value}; candidate weights must be finite and >= 0.")
            if name in self._probes:
                checked[name] = value
            elif value != 0:
                why = f"was dropped ({self.results[name].reason})" if name in self.results else "does not exist"
                raise ValueError(
                    f"Probe {name!r} {why}; surviving probes: {self._probes}. Give it weight 0 or leave it out."
                )
        return checked

    def _lora_config(self) -> LoraConfig:
        return LoraConfig(
            r=int(self.config.rank),
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
            use_rslora=False,
            use_dora=False,  # plain LoRA: delta = (alpha / r) B A, which the stacked candidate delta relies on
        )

    def _ensure_slot(self) -> None:
        """Wrap the model with PEFT and its one training adapter (the slot), once; the global RNG is untouched."""
        if self._peft is not None:
            return
        self._fix_sharded_gradient_dtypes()
        self._snapshot = {
            "requires_grad": [(p, p.requires_grad) for p in self.model.parameters()],
            "pretraining_tp": getattr(getattr(self.model, "config", None), "pretraining_tp", None),
            "input_hooks": bool(getattr(self.model, "_require_grads_hooks", None)),
        }
        with self._forked_rng():
            # In place: LoRA layers wrap the existing Linear modules, whose parameters stay the same objects.
            self._peft = get_peft_model(self.model, self._lora_config(), adapter_name=SLOT)
        self._slot_parameters = [
            p
            for _, layer in self._lora_layers()
            for p in (*layer.lora_A[SLOT].parameters(), *layer.lora_B[SLOT].parameters())
        ]
        for param in self._slot_parameters:
            param.data = param.data.float()  # fp32 probes on bf16/fp16 models, for stable AdamW updates

    def _reset_slot(self) -> None:
        """A fresh probe in the slot (PEFT's init: A Kaiming-uniform, B = 0), active and trainable alone, on θ."""
        with torch.no_grad():
            for _, layer in self._lora_layers():
                layer.reset_lora_parameters(SLOT, init_lora_weights=True)
        self._peft.base_model.set_adapter([SLOT])
        for param in self._slot_parameters:
            param.requires_grad_(True)

    def _clear_slot(self) -> None:
        """Zero the slot's delta (the model computes θ again), or unwrap the model when no probe survives:
        the caller then gets the untouched model back at once."""
        if not self._probes:
            self._unwrap()
            return
        with torch.no_grad():
            for _, layer in self._lora_layers():
                layer.lora_B[SLOT].weight.zero_()

    def _fix_sharded_gradient_dtypes(self) -> None:
        """One no-grad forward of an FSDP2-sharded model while θ is still trainable.

        FSDP2 fixes the gradient dtypes of its parameter groups at the model's first forward, from the
        parameters that are trainable then.  Probes freeze θ, so were theirs the first forward (a trainer
        whose first step is a decision), θ's later gradients would stay in the bf16 of mixed precision
        against fp32 weights and the trainer's first backward would fail.  Collective, like the probes.
        """
        from torch.distributed.fsdp import FSDPModule

        if isinstance(self.model, FSDPModule):
            with torch.no_grad():
                self.model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=self.device))

    def _lora_layers(self) -> list[tuple[str, LoraLayer]]:
        """The adapted modules, ``(name in the model, layer)``, in module order."""
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, LoraLayer)]

    def _unwrap(self) -> None:
        model = self._peft.unload()  # puts the original Linear modules back, without merging
        if model is not self.model:
            raise RuntimeError("PEFT unload() returned another model object; the simulator cannot restore the model.")
        self._peft = None
        self._slot_parameters = []
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        snapshot, self._snapshot = self._snapshot, None
        for param, flag in snapshot["requires_grad"]:
            param.requires_grad_(flag)
        if snapshot["pretraining_tp"] is not None:
            self.model.config.pretraining_tp = snapshot["pretraining_tp"]
        if not snapshot["input_hooks"] and getattr(self.model, "_require_grads_hooks", None):
            self.model.disable_input_require_grads()  # PEFT added it because of gradient checkpointing

    @contextlib.contextmanager
    def _modes(self, train: bool) -> Iterator[None]:
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.train(train)
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode

    @contextlib.contextmanager
    def _forked_rng(self) -> Iterator[int | None]:
        """The global CPU (and this device's CUDA) RNG forked for the block; yields the CUDA device index."""
        cuda = self.device.type == "cuda"
        index = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if cuda else None
        with torch.random.fork_rng(devices=[index] if cuda else []):
            yield index

    @contextlib.contextmanager
    def _rng(self, name: str) -> Iterator[None]:
        # A forked RNG keeps the main run's random stream (and so exact resume) independent of probing;
        # seeding by name makes a probe identical on every rank and across reruns.
        with self._forked_rng() as index:
            seed = int(self.config.seed) + zlib.crc32(name.encode())
            torch.default_generator.manual_seed(seed)
            if index is not None:
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            yield

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bool(self.config.bf16))

    def _stacked_delta(self, module: str, active: list[str], weights: Mapping[str, float]):
        """``(A, B)`` with ``B @ A = Σ_c weights[c]·scaling_c·B_c A_c`` for the active probes of ``module``."""
        factors = [self._factors[n][module] for n in active]
        down = torch.cat([a for a, _, _ in factors])
        up = torch.cat([b * (weights[n] * scaling) for n, (_, b, scaling) in zip(active, factors)], dim=1)
        return down, up


class _DivergenceWatch:
    """Per-step probe losses with the divergence rule: a non-finite loss, or a running loss (EMA)
    above ``factor`` x the first loss.  The losses up to the offending step are kept."""

    def __init__(self, factor: float):
        self.factor, self.losses, self.running, self.reason = factor, [], 0.0, ""

    def add(self, values: list[float]) -> bool:
        """Take the next steps' losses; True (and ``reason`` set) once the probe has diverged."""
        for value in values:
            step = len(self.losses)
            if not math.isfinite(value):
                self.reason = f"loss became {value} at step {step}"
                return True
            self.losses.append(value)
            decay = _RUNNING_LOSS_DECAY
            self.running = value if step == 0 else decay * self.running + (1 - decay) * value
            if self.running > self.losses[0] * self.factor:
                first = self.losses[0]
                self.reason = (
                    f"running loss {self.running:.4g} > {self.factor} x first loss {first:.4g} at step {step}"
                )
                return True
        return False


class _LowRankDelta:
    """Forward hook adding ``x A^T B^T`` to a LoRA-wrapped layer's output, the way PEFT adds its probes."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor):
        self.down, self.up = down, up

    def __call__(self, module, inputs, output):
        x = inputs[0]
        delta = F.linear(F.linear(x.to(self.down.dtype), self.down), self.up)
        return output + delta.to(output.dtype)
