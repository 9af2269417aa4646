"""Branches: real full-parameter continuations of the current model on other mixtures.

:class:`TrainerBranches` snapshots a running trainer's state — model weights and buffers, optimizer
state and hyperparameters, LR schedule, random generators — trains a copy on a given mixture with
the trainer's own training step, optimizer and schedule, scores it, and restores the state exactly,
on the device (no copy to the host).  A branch continues the run's own data stream: the interleaver's
schedule and positions up to the branch point, with the branch's mixture from there on, so a branch
trained to the end of the run *is* the run that decided that mixture at this point (the oracle of
``benchmarks/mixbench``).

:class:`Branches` is the ``branches`` :class:`~hf_datamix.simulate.base.Simulator`: short
continuations on candidate mixtures, scored on the decision split.  Branch training is counted in the
ledger as ``branch`` (6·N per token).  Several processes train each branch together, as they train
the run (each on its share of every global batch).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..mixture import Mixture
from ..settings import check_ranges
from .base import DESIGNS, Simulation, Simulator, SimulatorConfig, covering_size, data_mixtures, reference_mixtures


@dataclass
class BranchResult:
    """One branch: its mixture, the steps it trained, its mean training loss per step and its scores."""

    mixture: dict[str, float]
    steps: int
    tokens: int
    losses: list[float]
    scores: dict[str, list[float]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """What a simulation records about the branch: everything but its scores (those are its ``Y``)."""
        return {k: v for k, v in self.to_dict().items() if k != "scores"}


class TrainerBranches:
    """Train copies of a running trainer's model on other mixtures and restore it exactly (see the module docstring).

    Use as a context manager, inside training (a strategy's ``decide`` or a callback), on every process::

        with TrainerBranches(trainer) as branches:
            results = branches.run([mixture_a, mixture_b], steps=100, scorers={"decision": scorer})

    Args:
        trainer: a :class:`~hf_datamix.DataMixTrainer` (or SFT trainer) that is training.
        kind: the ledger kind the branches' training is counted under.
    """

    def __init__(self, trainer, kind: str = "branch"):
        if getattr(trainer, "is_deepspeed_enabled", False):
            raise ValueError(
                "branches cannot snapshot a DeepSpeed engine's optimizer; use DDP or FSDP "
                "(accelerate_configs/ddp.yaml, accelerate_configs/fsdp.yaml)."
            )
        if getattr(trainer, "optimizer", None) is None or getattr(trainer, "lr_scheduler", None) is None:
            raise RuntimeError("branches need a trainer that is training (its optimizer and LR schedule exist).")
        self.trainer, self.kind = trainer, kind
        self._saved: dict[str, Any] | None = None
        self._rng: contextlib.ExitStack | None = None

    # -- snapshot -------------------------------------------------------------------------------
    def __enter__(self) -> TrainerBranches:
        trainer = self.trainer
        model, optimizer = trainer.model, _torch_optimizer(trainer.optimizer)
        with torch.no_grad():
            self._saved = {
                "params": [p.detach().clone() for p in model.parameters()],
                "buffers": [b.detach().clone() for b in model.buffers()],
                "state": {p: _clone(s) for p, s in optimizer.state.items()},
                "groups": [
                    {k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
                ],
                "schedule": copy.deepcopy(trainer.lr_scheduler.state_dict()),
                "modes": [(m, m.training) for m in model.modules()],
            }
        # The branches' randomness must not move the run's random stream (exact resume, seeds).
        self._rng = contextlib.ExitStack()
        devices = [trainer.args.device.index or 0] if trainer.args.device.type == "cuda" else []
        self._rng.enter_context(torch.random.fork_rng(devices=devices))
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.restore()
        finally:
            self._rng.close()
            self._saved = None

    def restore(self) -> None:
        """Put the model, optimizer, schedule and module modes back as they were at the snapshot."""
        saved, trainer = self._require(), self.trainer
        model, optimizer = trainer.model, _torch_optimizer(trainer.optimizer)
        with torch.no_grad():
            for param, value in zip(model.parameters(), saved["params"]):
                param.copy_(value)
            for buffer, value in zip(model.buffers(), saved["buffers"]):
                buffer.copy_(value)
            for param in [p for p in optimizer.state if p not in saved["state"]]:
                del optimizer.state[param]  # state a branch created (a parameter not stepped before)
            for param, values in saved["state"].items():
                live = optimizer.state[param]
                for key in [k for k in live if k not in values]:
                    del live[key]
                for key, value in values.items():
                    if torch.is_tensor(value) and torch.is_tensor(live.get(key)) and live[key].shape == value.shape:
                        live[key].copy_(value)  # in place: fused / foreach optimizers keep their tensors
                    else:
                        live[key] = value.clone() if torch.is_tensor(value) else copy.deepcopy(value)
        for group, values in zip(optimizer.param_groups, saved["groups"]):
            group.update(copy.deepcopy(values))
        trainer.lr_scheduler.load_state_dict(copy.deepcopy(saved["schedule"]))
        model.zero_grad(set_to_none=True)
        for module, mode in saved["modes"]:
            module.training = mode

    # -- branches -------------------------------------------------------------------------------
    def train(
        self,
        mixture: Mapping[str, float],
        steps: int,
        lr_scale: Callable[[int], float] | None = None,
        from_sample: int | None = None,
    ) -> tuple[list[float], int]:
        """Train the model in its current state for ``steps`` optimizer steps on ``mixture``.

        The data continue the run's stream from its current position, with ``mixture`` from global sample
        ``from_sample`` on (default: the branch's first sample; ``(step + 1) * samples_per_step`` is where a
        decision taken now would apply: :meth:`~hf_datamix.DataMixTrainer.branch_stream`).  ``lr_scale(step)``,
        if given, sets the learning rate to the snapshot's times that factor instead of following the schedule
        (e.g. an anneal).  Returns the mean training loss of each step and the tokens trained (all processes).
        """
        saved, trainer = self._require(), self.trainer
        if int(steps) < 0:
            raise ValueError(f"branch steps must be >= 0, got {steps!r}.")
        args, model = trainer.args, trainer.model_wrapped
        optimizer = trainer.optimizer
        batches = trainer.branch_batches(
            Mixture(dict(mixture), domains=trainer.domains.names), from_sample=from_sample
        )
        base_lrs = [g["lr"] for g in saved["groups"]]
        losses, tokens = [], 0
        accumulation = args.gradient_accumulation_steps
        gradient_state = getattr(trainer.accelerator, "gradient_state", None)
        for step in range(int(steps)):
            micro, items = trainer.get_batch_samples(batches, accumulation, args.device)
            trainer.current_gradient_accumulation_steps = len(micro)
            total = None
            for inputs in micro:
                tokens += int(inputs["input_ids"].numel())
                loss = trainer.training_step(model, inputs, items)
                total = loss if total is None else total + loss
            if args.max_grad_norm and args.max_grad_norm > 0:
                trainer.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            if lr_scale is not None:
                for group, lr in zip(_torch_optimizer(optimizer).param_groups, base_lrs):
                    group["lr"] = lr * float(lr_scale(step))
            if gradient_state is not None:
                gradient_state._set_sync_gradients(True)  # the accelerated optimizer only steps on a sync step
            optimizer.step()
            if lr_scale is None:
                trainer.lr_scheduler.step()
            model.zero_grad(set_to_none=True)
            losses.append(total.detach())
        tokens *= args.world_size  # every process trained its share
        if trainer.ledger is not None and tokens:
            trainer.ledger.add_training(self.kind, trainer.num_params, tokens)
        return [float(v) for v in torch.stack(losses).float().cpu()] if losses else [], tokens

    def run(
        self,
        mixtures: Sequence[Mapping[str, float]],
        steps: int,
        scorers: Mapping[str, Callable[[torch.nn.Module], np.ndarray]],
    ) -> list[BranchResult]:
        """One branch per mixture, each from the snapshot: train ``steps`` steps, score with every scorer.

        The state is restored before each branch and after the last.
        """
        results = []
        for mixture in mixtures:
            self.restore()
            started = time.perf_counter()
            losses, tokens = self.train(mixture, steps)
            scores = self.score(scorers)
            results.append(
                BranchResult(dict(mixture), int(steps), tokens, losses, scores, time.perf_counter() - started)
            )
        self.restore()
        return results

    def score(self, scorers: Mapping[str, Callable[[torch.nn.Module], np.ndarray]]) -> dict[str, list[float]]:
        """Every scorer on the model as it is now (eval mode, no gradients)."""
        model = self.trainer.model
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return {name: np.asarray(scorer(model), dtype=float).tolist() for name, scorer in scorers.items()}
        finally:
            for module, mode in modes:
                module.training = mode

    def _require(self) -> dict[str, Any]:
        if self._saved is None:
            raise RuntimeError("TrainerBranches is used outside its `with` block (no snapshot to branch from).")
        return self._saved


def _torch_optimizer(optimizer):
    """The torch optimizer under accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _clone(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in state.items()}


@dataclass
class BranchesConfig(SimulatorConfig):
    """Settings of the ``branches`` simulator."""

    branch_steps: int = field(
        default=50, metadata={"help": "Optimizer steps of each branch (at the run's batch), >= 1."}
    )
    num_candidates: int = field(
        default=12, metadata={"help": "Candidates when none are given: the mixture in force + Dirichlet draws, >= 2."}
    )
    dirichlet_alpha: float = field(default=1.0, metadata={"help": "Concentration of the candidate Dirichlet, > 0."})
    candidate_design: str = field(
        default="dirichlet",
        metadata={
            "help": "Candidates when none are given: dirichlet (the mixture in force + draws) or covering (also every "
            "single domain, uniform and natural, and at least 5 x (domains + 1) in all)."
        },
    )
    eval_blocks: int | None = field(
        default=64, metadata={"help": "Decision blocks per domain scoring a branch, >= 1."}
    )
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size of branch scoring, >= 1."})

    def __post_init__(self):
        check_ranges(
            "branches",
            self,
            {
                "branch_steps": (self.branch_steps >= 1, ">= 1"),
                "num_candidates": (self.num_candidates >= 2, ">= 2"),
                "dirichlet_alpha": (self.dirichlet_alpha > 0, "> 0"),
                "eval_batch_size": (self.eval_batch_size >= 1, ">= 1"),
                "candidate_design": (self.candidate_design in DESIGNS, " or ".join(DESIGNS)),
                "eval_blocks": (self.eval_blocks is None or self.eval_blocks >= 1, ">= 1, or null: all"),
            },
        )


class Branches(Simulator):
    """``branches``: each candidate is a real continuation of the current model, scored on the decision split."""

    name = "branches"
    description = "Short real continuations of the current model and optimizer on each candidate mixture."
    config_class = BranchesConfig

    def runs_on_every_process(self, trainer) -> bool:
        return trainer.args.world_size > 1  # every process trains each branch on its share, as in training

    def design(self, context, around: Mixture) -> list[Mixture]:
        """The candidates of :attr:`BranchesConfig.candidate_design`: the mixture in force first, then (covering)
        every single domain, uniform and natural, then Dirichlet draws up to the design's size."""
        cfg, names = self.config, context.domains.names
        fixed = [around]
        count = cfg.num_candidates
        if cfg.candidate_design == "covering":
            fixed += [Mixture({n: float(n == name) for n in names}) for name in names]
            fixed += list(reference_mixtures(names, context.token_counts).values())
            count = covering_size(len(names), count)
        rng = np.random.default_rng([self.seed, context.stage, context.step])
        draws = rng.dirichlet(np.full(len(names), cfg.dirichlet_alpha), size=max(0, count - len(fixed)))
        return fixed + [Mixture.from_array(names, row) for row in draws]

    def simulate(
        self,
        context,
        around: Mixture,
        candidates: Sequence[Mapping[str, float]] | None = None,
        groups: Mapping[str, Mixture] | None = None,
    ) -> Simulation:
        self.refuse_groups(groups)
        cfg, names = self.config, context.domains.names
        if candidates is None:
            candidates = self.design(context, around)
        mixtures = data_mixtures(candidates, names)
        Y, targets, results = self.branch(context, mixtures)
        X = np.array([m.to_array(names) for m in mixtures])
        record = {"simulator": self.name, "settings": asdict(cfg), "branches": [r.summary() for r in results]}
        return Simulation(list(names), {}, list(names), X, Y, targets, record)

    def branch(
        self, context, mixtures: Sequence[Mapping[str, float]], metric: str | None = None
    ) -> tuple[np.ndarray, list[str], list[BranchResult]]:
        """One branch per mixture from the current state (restored after), scored on the decision split.

        ``metric`` is the score (default: the trainer's ``default_score``).  Returns the ``(C, T)``
        scores, the targets (their columns) and the branches.
        """
        cfg, trainer = self.config, context.trainer
        scorer = trainer.decision_scorer(
            metric or trainer.default_score,
            limit=cfg.eval_blocks,
            batch_size=cfg.eval_batch_size,
            collective=trainer.args.world_size > 1,
        )
        with TrainerBranches(trainer) as branches:
            results = branches.run(mixtures, cfg.branch_steps, {"decision": scorer})
        return np.array([r.scores["decision"] for r in results]), list(scorer.targets), results
