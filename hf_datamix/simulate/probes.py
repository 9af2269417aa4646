"""``lora_probes``: OP-Mix's simulator, a :class:`~hf_datamix.simulate.base.Simulator`.

Probes "old" (the mixture in force) and one per domain *d* on ``share·d + (1−share)·old`` are LoRA
adapters trained on the *current* model (:class:`~hf_datamix.simulate.lora_probes.LoRAProbeSimulator`);
a candidate ``w`` over the probes is the model ``θ + Σ_c w_c ΔW_c``, scored on the decision split.
Its coordinates are ``[op_mix:old, d1, ..., dk]``: its own (Dirichlet) candidate ``w`` over the probes
stands for the data mixture ``w_old·old + Σ_d w_d·d`` (the published map from probe weights to data
shares, not calibrated: probe *d* trained on ``share·d + (1−share)·old``).

Given data mixtures to score, each is encoded as probe weights in one of two ways, which are the
same data mixture but need not simulate the same (the published design does not say which):

* ``"spread"``: no weight on "old": ``w_d = (p_d − 0.1·old_d)/0.9`` (with the published share 0.9);
* ``"old"``: as much weight on "old" as the mixture allows (all of it for ``p = old``).

Both are scored; ``Simulation.Y`` holds the configured one and ``record["encodings"]`` both (probe
weights and scores); ``Simulation.X`` then holds the data mixtures in the coordinates above.

:meth:`LoRAProbes.interpolate` is op_mix's continual design: one probe per end ("old", "new"),
candidates interpolate the two probes' weight deltas.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..mixture import Mixture
from ..settings import check_ranges
from .base import DESIGNS, Simulation, Simulator, SimulatorConfig, covering_size, data_mixtures, reference_mixtures
from .branches import TrainerBranches
from .lora_probes import LoRAProbeSimulator, ProbeConfig


logger = logging.getLogger(__name__)

OLD = "op_mix:old"
ENCODINGS = ("spread", "old")
#: ``canonical`` (beyond the paper): draws are data mixtures, each scored at its one preimage (``encoding``).
PROBE_DESIGNS = (*DESIGNS, "canonical")


def probes_run_collectively(trainer) -> bool:
    """True when several processes train: they then train and score the probes together.

    Each process trains every probe on its share of one global batch with the probe gradients
    averaged, and scores a share of the eval blocks.  FSDP needs it (a sharded model's forward pass
    takes every process); under DDP it puts every GPU to work on the decision instead of one.  At
    equal global batch the probes see the same samples at any process count.
    DeepSpeed ZeRO-3 partitions weights in a way PEFT's in-place LoRA layers cannot wrap: refused.
    """
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
        if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
            raise ValueError(
                "op_mix cannot train LoRA probes on a DeepSpeed ZeRO-3 model; use ZeRO-2 "
                "(accelerate_configs/deepspeed_zero2.yaml) or FSDP (accelerate_configs/fsdp.yaml)."
            )
    return trainer.args.world_size > 1


def _lowest_ratio(mixture: np.ndarray, old: np.ndarray) -> float:
    """``min_d mixture_d / old_d`` over the domains ``old`` holds (1 when it holds none): the probes span
    ``mixture`` when this is at least ``1 − share``."""
    positive = old > 0
    return float(np.min(mixture[positive] / old[positive])) if positive.any() else 1.0


def encode(mixture: np.ndarray, old: np.ndarray, share: float, encoding: str) -> np.ndarray:
    """Probe weights ``[w_old, w_1..w_k]`` whose data mixture ``w_old·old + Σ w_d (share·e_d + (1−share)·old)``
    is ``mixture`` (see the module docstring); raises if ``mixture`` is outside what the probes span."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}; use one of {list(ENCODINGS)}.")
    # p = c·old + share·w with c = w_old + (1 − share)(1 − w_old): c ranges over [1 − share, min_d p_d / old_d].
    highest = min(1.0, _lowest_ratio(mixture, old))
    low = 1.0 - share
    if highest < low - 1e-9:
        raise ValueError(
            f"mixture {np.round(mixture, 4).tolist()} gives some domain less than {low:.3g} x its share of the "
            f"'old' probe's mixture {np.round(old, 4).tolist()}: the probes cannot represent it."
        )
    c = low if encoding == "spread" else max(low, highest)
    w_old = (c - low) / share if share < 1 else c
    w = np.clip((mixture - c * old) / share, 0.0, None)
    weights = np.concatenate([[w_old], w])
    return weights / weights.sum()


def into_span(mixture: np.ndarray, old: np.ndarray, share: float) -> tuple[np.ndarray, float]:
    """The nearest mixture on the segment from ``mixture`` to ``old`` that the probes span, and how far along it.

    Every probe trains on at least ``(1 − share)·old``, so a mixture giving some domain less than ``1 − share``
    times its share of ``old`` (a natural mixture's smallest domain after a uniform warm-up, say) cannot be
    encoded.  Moving toward ``old`` by the least ``t`` that lifts every domain to that floor keeps the
    mixture's direction; ``t = 0`` when it is already spanned.
    """
    low, lowest = 1.0 - share, _lowest_ratio(mixture, old)
    if lowest >= low - 1e-12:
        return mixture, 0.0
    t = (low - lowest) / (1.0 - lowest)
    return (1 - t) * mixture + t * old, float(t)


@dataclass
class LoRAProbesConfig(SimulatorConfig):
    """Settings of the ``lora_probes`` simulator (OP-Mix's published values where the paper gives them)."""

    probe_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps per probe, >= 1; null: scaled to the run as in the paper's code, 10 % of "
            "a pretraining run (at most 5000) or 25 % of a continual stage (at most 2500)."
        },
    )
    probe_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Probe batch per process (default: the per-device train batch); processes train probes together."
        },
    )
    probe_rank: int = field(default=16, metadata={"help": "LoRA rank of the probes."})
    probe_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha of the probes."})
    probe_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout of the probes."})
    probe_target_modules: list[str] | None = field(
        default=None, metadata={"help": "LoRA targets (default: attention+MLP)."}
    )
    probe_lr_multiplier: float = field(default=2.0, metadata={"help": "Probe LR = base LR x this."})
    probe_bf16: bool | None = field(
        default=None,
        metadata={"help": "Train/evaluate probes under bf16 autocast; null: when the run trains in bf16 on a GPU."},
    )
    # null by default since the H200 measured it (benchmarks/results/perf_speed_20m.json): compiled probes
    # train 1.08 M tokens/s against 0.51 M eager on the 20M model, after a one-off ~50 s compilation
    probe_compile: bool | None = field(
        default=None,
        metadata={
            "help": "torch.compile the probes' forward + backward, once (every probe trains in one adapter slot; "
            "later decisions reuse it); null: when the run itself is compiled (torch_compile) on a GPU."
        },
    )
    domain_probe_share: float = field(
        default=0.9, metadata={"help": "Probe d trains on share*d + (1-share)*old, in (0, 1]."}
    )
    num_candidates: int = field(default=12, metadata={"help": "Dirichlet candidates over {old, d1..dk}, >= 2."})
    dirichlet_alpha: float = field(default=1.0, metadata={"help": "Concentration of the candidate Dirichlet."})
    candidate_design: str = field(
        default="dirichlet",
        metadata={
            "help": "Own candidates: dirichlet (num_candidates draws over the probes, as published), covering (also "
            "every probe alone, uniform and natural, and at least 5 x (probes + 1) in all) or canonical (covering's "
            "size and fixed mixtures, its draws made over the data mixtures the probes span, every candidate scored "
            "at its one preimage under `encoding`: the score then depends on the data mixture only)."
        },
    )
    eval_blocks: int | None = field(
        default=64, metadata={"help": "Decision blocks (SFT: decision examples) per domain used to score candidates."}
    )
    score: str = field(
        default="auto",
        metadata={
            "help": "Candidate score: loss, task_error (generation, SFT only), answer_logprob (the gold answer's "
            "NLL given the prompt, per answer, SFT only) or auto (task_error under SFT)."
        },
    )
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size of candidate scoring."})
    save_probe_adapters: bool = field(
        default=False, metadata={"help": "Keep every decision's probes in output_dir/probe_adapters/ (PEFT format)."}
    )
    encoding: str = field(
        default="spread",
        metadata={
            "help": "How given data mixtures are encoded as probe weights: spread or old (see hf_datamix.simulate.probes)."
        },
    )
    anneal_steps: int = field(
        default=0,
        metadata={
            "help": "Train a copy of the model this many steps with a decaying learning rate before probing it (>= 0; "
            "the reference code probes an annealed model); the model is restored after."
        },
    )
    anneal_to: float = field(default=0.1, metadata={"help": "The anneal's final learning-rate factor, in [0, 1]."})

    def __post_init__(self):
        check_ranges("lora_probes", self, self.probe_checks())

    def probe_checks(self) -> dict[str, tuple[bool, str]]:
        """Range checks of these settings, ``{setting: (in range, the range)}``, for the owner's message."""
        return {
            "probe_steps": (self.probe_steps is None or self.probe_steps >= 1, ">= 1, or null: scaled to the run"),
            "domain_probe_share": (0 < self.domain_probe_share <= 1, "in (0, 1]"),
            "num_candidates": (self.num_candidates >= 2, ">= 2"),
            "candidate_design": (self.candidate_design in PROBE_DESIGNS, ", ".join(PROBE_DESIGNS)),
            "score": (
                self.score in ("auto", "loss", "task_error", "answer_logprob"),
                "auto, loss, task_error or answer_logprob",
            ),
            "encoding": (self.encoding in ENCODINGS, " or ".join(ENCODINGS)),
            "anneal_steps": (self.anneal_steps >= 0, ">= 0"),
            "anneal_to": (0 <= self.anneal_to <= 1, "in [0, 1]"),
        }


class LoRAProbes(Simulator):
    """OP-Mix's LoRA-probe simulator (see the module docstring); settings: :class:`LoRAProbesConfig`."""

    name = "lora_probes"
    description = "LoRA probes trained on the current model; candidates interpolate their weight deltas exactly."
    config_class = LoRAProbesConfig
    # What candidates are drawn and how they are scored: the probes do not depend on these.
    design_settings = ("candidate_design", "num_candidates", "dirichlet_alpha", "encoding", "eval_blocks", "score")

    def probe_steps(self, context) -> int:
        """Steps per probe: ``probe_steps``, or scaled to the run when it is None (see its help)."""
        if self.config.probe_steps is not None:
            return self.config.probe_steps
        # The reference code's probes see about 10 % of a pretraining run's sequences (5000 of 50k
        # steps) and a quarter of a continual stage's (2500 of 10k): a fixed 2500 would make a
        # 40-step run sit in its probes for minutes.
        new, old = context.new_and_old()
        share, most = (0.25, 2500) if new and old else (0.1, 5000)
        return max(1, min(most, round(share * context.max_steps)))

    def runs_on_every_process(self, trainer) -> bool:
        return probes_run_collectively(trainer)

    # -- the pieces ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, context, steps: int) -> Iterator[LoRAProbeSimulator]:
        """A probe simulator on the trainer's (unwrapped) model; the model is restored on exit."""
        cfg, trainer = self.config, context.trainer
        probe_config = ProbeConfig(
            rank=cfg.probe_rank,
            alpha=cfg.probe_alpha,
            dropout=cfg.probe_dropout,
            target_modules=cfg.probe_target_modules,
            lr_multiplier=cfg.probe_lr_multiplier,
            steps=steps,
            batch_size=self.batch_size(context),
            bf16=self.bf16(trainer),
            compile=self.compile(trainer),
            seed=self.seed,
        )
        with LoRAProbeSimulator(
            trainer.accelerator.unwrap_model(trainer.model),
            probe_config,
            base_learning_rate=trainer.args.learning_rate,
            ledger=context.ledger,
            device=trainer.args.device,
            collective=probes_run_collectively(trainer),
        ) as simulator:
            yield simulator

    def bf16(self, trainer) -> bool:
        """``probe_bf16``, or (null) whether the run trains in bf16 on a GPU (CPU runs keep fp32 probes)."""
        if self.config.probe_bf16 is not None:
            return bool(self.config.probe_bf16)
        return bool(trainer.args.bf16) and trainer.args.device.type == "cuda"

    def compile(self, trainer) -> bool:
        """``probe_compile``, or (null) whether the run is compiled on a GPU (compiling pays off there only)."""
        if self.config.probe_compile is not None:
            return bool(self.config.probe_compile)
        return bool(trainer.args.torch_compile) and trainer.args.device.type == "cuda"

    def batch_size(self, context) -> int:
        return self.config.probe_batch_size or context.trainer.args.per_device_train_batch_size

    def train_probes(
        self, context, simulator: LoRAProbeSimulator, probes: Mapping[str, Mixture], steps: int
    ) -> dict[str, Any]:
        """Train one probe per ``{name: data mixture}``; returns what to record about each."""
        results, trainer = {}, context.trainer
        bar = tqdm(
            total=len(probes),
            desc=f"op_mix probes (stage {context.stage}, step {context.step})",
            disable=trainer.args.disable_tqdm or not trainer.is_world_process_zero(),
            leave=False,
        )
        for index, (name, mixture) in enumerate(probes.items()):
            seed = self.seed * 1000 + 17 * context.step + index
            # Collectively, each process trains the shared probe on its share of one global batch,
            # so the probes (and the decision) do not depend on how many processes there are.
            batches = trainer.probe_batches(
                mixture, self.batch_size(context), seed=seed, shard=(simulator.rank, simulator.world_size)
            )
            result = simulator.train_probe(name, batches, steps=steps)
            bar.update(1)
            results[name] = {
                "mixture": mixture.to_dict(),
                "final_loss": result.final_loss,
                "diverged": result.diverged,
                "reason": result.reason,
            }
        bar.close()
        if self.config.save_probe_adapters and simulator.probes:
            folder = os.path.join(
                trainer.args.output_dir, "probe_adapters", f"stage{context.stage}-step{context.step}"
            )
            if trainer.is_world_process_zero():  # the probes are the same on every process: one writer
                simulator.save_adapters(folder)
            for name in simulator.probes:
                results[name]["adapter"] = os.path.join(folder, name)
        return results

    def metric(self, trainer) -> str:
        """What candidates are scored by: ``score``, or the trainer's ``default_score`` for ``auto``."""
        return trainer.default_score if self.config.score == "auto" else self.config.score

    def scores(self, context, simulator: LoRAProbeSimulator, candidates: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``(C, D)`` decision-split scores of candidates given as probe weights, with the trainer's scorer."""
        trainer, cfg = context.trainer, self.config
        scorer = trainer.decision_scorer(
            self.metric(trainer),
            cfg.eval_blocks,
            cfg.eval_batch_size,
            collective=simulator.collective,
            bf16=simulator.config.bf16,
        )
        progress = not trainer.args.disable_tqdm and trainer.is_world_process_zero()
        return np.asarray(simulator.score_candidates(candidates, scorer, progress=progress))

    # -- Simulator --------------------------------------------------------------------------------
    def interpolate(
        self, context, ends: Mapping[str, Mixture], weights: Sequence[Mapping[str, float]]
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """One probe per end; a blend is the model ``θ + Σ_e w_e ΔW_e`` (op_mix's continual design)."""
        steps = self.probe_steps(context)
        with self.session(context, steps) as simulator:
            probe_info = self.train_probes(context, simulator, ends, steps)
            if set(simulator.probes) != set(ends):
                logger.warning(
                    "lora_probes: a probe was dropped (%s); the mixture is kept.",
                    sorted(set(ends) - set(simulator.probes)),
                )
                return None
            Y = self.scores(context, simulator, weights)
        return Y, {"probes": probe_info, "probe_steps": steps}

    def simulate(
        self,
        context,
        around: Mixture,
        candidates: Sequence[Mapping[str, float]] | None = None,
        groups: Mapping[str, Mixture] | None = None,
    ) -> Simulation | None:
        self.refuse_groups(groups)
        if candidates is not None:
            data_mixtures(candidates, context.domains.names)  # a bad candidate fails before any probe trains
        with self.shared(context, around) as simulate:
            return simulate(candidates)

    @contextlib.contextmanager
    def shared(self, context, around: Mixture) -> Iterator[Callable[..., Simulation | None]]:
        """The probes around ``around`` trained once (from an annealed copy with ``anneal_steps``); each
        ``simulate(candidates=None, **design)`` scores its candidates on them, as :meth:`simulate` with those
        :attr:`design_settings` would (the probes do not depend on them).  The model is restored on exit."""
        cfg, names = self.config, context.domains.names
        share = cfg.domain_probe_share
        probes = {"old": around}
        for i, name in enumerate(names):
            probes[f"d{i}"] = Mixture({n: share * (n == name) + (1 - share) * around[n] for n in names})
        record: dict[str, Any] = {"probe_steps": self.probe_steps(context)}
        phases: dict[str, float] = {}  # seconds by phase (the decision's cost, where it goes)
        with contextlib.ExitStack() as stack:
            if cfg.anneal_steps:
                started = time.perf_counter()
                branches = stack.enter_context(TrainerBranches(context.trainer))  # θ comes back on exit
                steps, end = cfg.anneal_steps, cfg.anneal_to
                losses, tokens = branches.train(around, steps, lr_scale=lambda s: 1 - (1 - end) * (s + 1) / steps)
                record["anneal"] = {"steps": steps, "lr_to": end, "tokens": tokens, "final_loss": losses[-1]}
                phases["anneal"] = time.perf_counter() - started
            started = time.perf_counter()
            simulator = stack.enter_context(self.session(context, record["probe_steps"]))
            record["probes"] = self.train_probes(context, simulator, probes, record["probe_steps"])
            phases["probes"] = time.perf_counter() - started

            def simulate(candidates: Sequence[Mapping[str, float]] | None = None, **design: Any) -> Simulation | None:
                given = data_mixtures(candidates, names) if candidates is not None else None
                chosen = self.with_design(**design) if design else self
                started = time.perf_counter()
                own = {**record, "phase_seconds": dict(phases)}
                simulation = chosen._score_probes(context, around, given, probes, simulator, own)
                own["phase_seconds"]["scoring"] = time.perf_counter() - started
                return simulation

            yield simulate

    def _score_probes(self, context, around, given, probes, simulator, record) -> Simulation | None:
        """The simulation of the trained ``probes``: this simulator's own candidates, or the ``given`` data mixtures."""
        cfg, names, share = self.config, context.domains.names, self.config.domain_probe_share
        alive = simulator.probes
        if "old" not in alive or len(alive) < 2:
            logger.warning("op_mix: too few probes survived (%s); keeping the current mixture.", alive)
            return None
        # Coordinates [old, surviving domain probes]; X's columns in that order.
        order = [alive.index("old")] + [alive.index(p) for p in alive if p != "old"]
        coordinates = [OLD] + [names[int(p[1:])] for p in alive if p != "old"]
        if given is None:
            weights = self.design(context, around, alive)
            Y = self.scores(context, simulator, [dict(zip(alive, row)) for row in weights])
            X = weights[:, order]
            record["candidate_design"] = cfg.candidate_design
        else:
            if len(alive) < len(probes):
                logger.warning(
                    "lora_probes: probes %s diverged; given candidates cannot be encoded.",
                    sorted(set(probes) - set(alive)),
                )
                return None
            old = around.to_array(names)
            spanned = [into_span(m.to_array(names), old, share) for m in given]
            moved = {i: t for i, (_, t) in enumerate(spanned) if t > 0}
            if moved:
                logger.warning(
                    "lora_probes: candidates %s give a domain less than %.3g x its share of the current "
                    "mixture, which no probe spans; each is scored at the nearest spanned mixture toward the "
                    "current one (fractions of the way recorded under 'moved_into_span').",
                    sorted(moved),
                    1 - share,
                )
                record["moved_into_span"] = {str(i): t for i, t in moved.items()}
            encoded = {e: np.array([encode(p, old, share, e) for p, _ in spanned]) for e in ENCODINGS}
            probe_names = ["old"] + [f"d{i}" for i in range(len(names))]
            ys = {
                e: self.scores(context, simulator, [dict(zip(probe_names, row)) for row in w])
                for e, w in encoded.items()
            }
            record["encodings"] = {e: {"weights": encoded[e].tolist(), "Y": ys[e].tolist()} for e in ENCODINGS}
            # X in data coordinates [old, d1..dk] (probe d carries share·d), so mixtures() gives back the
            # given data mixtures whichever encoding scored them.
            domain_part = share * encoded[cfg.encoding][:, 1:]
            X, Y = np.column_stack([1 - domain_part.sum(axis=1), domain_part]), ys[cfg.encoding]
        # The data each candidate was simulated on: probe d trained on share·d + (1 − share)·old.
        old = around.to_array(names)
        probe_data = np.array(
            [old] + [share * np.eye(len(names))[names.index(c)] + (1 - share) * old for c in coordinates[1:]]
        )
        data = X @ probe_data if given is None else np.array([p for p, _ in spanned])
        # The reference code's KL prior over the probes: half on "old", the rest split equally.
        prior = {OLD: 0.5, **{c: 0.5 / (len(coordinates) - 1) for c in coordinates[1:]}}
        return Simulation(coordinates, {OLD: around}, list(names), X, Y, list(names), record, data=data, prior=prior)

    def design(self, context, around: Mixture, alive: Sequence[str]) -> np.ndarray:
        """Own candidates as probe weights over ``alive`` (rows on the simplex): ``num_candidates`` Dirichlet
        draws, or (``candidate_design="covering"``) every probe alone, uniform and natural encoded as probe
        weights (when every probe survived; one the probes do not span by its nearest spanned mixture), then draws up to
        :func:`~hf_datamix.simulate.base.covering_size`; ``"canonical"``: each probe's own data mixture, uniform
        and natural, then Dirichlet draws over the data mixtures the probes span, every one of them encoded under
        ``encoding`` (so a row is a function of its data mixture).

        Why ``canonical``: one data mixture has many probe weightings, and the more probes a weighting spreads
        over, the worse it scores (mixbench_fidelity.json's ``encoding_gap``), so draws over the probes make the
        score depend on the weighting as well as on the data.  A design that needs every probe falls back to
        draws over the probes when one diverged (logged)."""
        cfg, names = self.config, context.domains.names
        rng = np.random.default_rng([self.seed, context.stage, context.step])
        # The log-linear law over len(alive) coordinates has len(alive) + 1 parameters per domain:
        # with many domains, 12 candidates cannot determine it (the fit would refuse after all probes).
        count = max(cfg.num_candidates, len(alive) + 1)
        fixed = np.zeros((0, len(alive)))
        probe_names = ["old"] + [f"d{i}" for i in range(len(names))]
        complete = sorted(alive) == sorted(probe_names)
        if cfg.candidate_design in ("covering", "canonical"):
            count = covering_size(len(alive), cfg.num_candidates)
            old, share = around.to_array(names), cfg.domain_probe_share

            def encoded(mixture: np.ndarray) -> np.ndarray:
                by_name = dict(zip(probe_names, encode(mixture, old, share, cfg.encoding)))
                return np.array([by_name[p] for p in alive])

            canonical = cfg.candidate_design == "canonical" and complete
            rows = list(np.eye(len(alive)))
            if canonical:  # each probe's own data mixture, at its canonical preimage ("old" alone is not, for spread)
                rows = [encoded(old)] + [
                    encoded(share * np.eye(len(names))[i] + (1 - share) * old) for i in range(len(names))
                ]
            if complete:
                for mixture in reference_mixtures(names, context.token_counts).values():
                    # natural after a uniform warm-up may give a small domain less than the probes span: the
                    # nearest spanned mixture stands for it (the candidates' data mixtures record which)
                    row = encoded(into_span(mixture.to_array(names), old, share)[0])
                    if not (canonical and any(np.allclose(row, kept) for kept in rows)):  # uniform = old, say
                        rows.append(row)
            fixed = np.array(rows)
            if canonical:
                # Every spanned mixture is (1 − share)·old + share·w for one w on the simplex.
                w = rng.dirichlet(np.full(len(names), cfg.dirichlet_alpha), size=max(0, count - len(fixed)))
                drawn = [encoded((1 - share) * old + share * row) for row in w]
                return np.vstack([fixed, *drawn]) if drawn else fixed
            if cfg.candidate_design == "canonical":
                logger.warning(
                    "lora_probes: a probe diverged, so canonical candidates fall back to draws over %s.", alive
                )
        draws = rng.dirichlet(np.full(len(alive), cfg.dirichlet_alpha), size=max(0, count - len(fixed)))
        return np.vstack([fixed, draws])
