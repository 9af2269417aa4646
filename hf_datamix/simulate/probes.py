"""``lora_probes``: OP-Mix's simulator as a :class:`~hf_datamix.simulate.base.Simulator`.

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
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..mixture import Mixture
from .base import Simulation, Simulator, data_mixtures
from .branches import TrainerBranches
from .lora_probes import LoRAProbeSimulator, ProbeConfig

logger = logging.getLogger(__name__)

OLD = "op_mix:old"
ENCODINGS = ("spread", "old")


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


def encode(mixture: np.ndarray, old: np.ndarray, share: float, encoding: str) -> np.ndarray:
    """Probe weights ``[w_old, w_1..w_k]`` whose data mixture ``w_old·old + Σ w_d (share·e_d + (1−share)·old)``
    is ``mixture`` (see the module docstring); raises if ``mixture`` is outside what the probes span."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}; use one of {list(ENCODINGS)}.")
    # p = c·old + share·w with c = w_old + (1 − share)(1 − w_old): c ranges over [1 − share, min_d p_d / old_d].
    positive = old > 0
    highest = min(1.0, float(np.min(mixture[positive] / old[positive]))) if positive.any() else 1.0
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


class LoRAProbes(Simulator):
    """OP-Mix's LoRA-probe simulator (pretraining design; see the module docstring).

    Args:
        config: op_mix's settings (:class:`~hf_datamix.strategies.op_mix.OpMixConfig`): the ``probe_*``
            fields, ``domain_probe_share``, ``num_candidates``, ``dirichlet_alpha``, ``eval_blocks``,
            ``eval_batch_size``, ``score``, ``seed``, ``save_probe_adapters``.
        encoding: how given data mixtures are encoded as probe weights (``"spread"`` or ``"old"``).
        anneal_steps: train a copy of θ this many steps on the mixture in force with the learning rate
            decaying linearly to ``anneal_to`` x its current value before the probes are trained on it
            (the reference code probes from an annealed θ); θ is restored after.  0: probe θ itself.
        anneal_to: the anneal's final learning-rate factor.
        probe_steps: steps per probe (default: ``config.probe_steps``).
    """

    name = "lora_probes"

    def __init__(self, config, encoding: str = "spread", anneal_steps: int = 0, anneal_to: float = 0.1,
                 probe_steps: int | None = None):
        if encoding not in ENCODINGS:
            raise ValueError(f"lora_probes encoding={encoding!r}; use one of {list(ENCODINGS)}.")
        if int(anneal_steps) < 0 or not 0 <= anneal_to <= 1:
            raise ValueError(f"lora_probes anneal_steps={anneal_steps!r} must be >= 0 and anneal_to={anneal_to!r} "
                             "in [0, 1].")
        self.config = config
        self.encoding = encoding
        self.anneal_steps, self.anneal_to = int(anneal_steps), float(anneal_to)
        self.probe_steps = int(probe_steps if probe_steps is not None else config.probe_steps or 0)
        if self.probe_steps < 1:
            raise ValueError(f"lora_probes needs probe_steps >= 1, got {probe_steps!r} (config: {config.probe_steps!r}).")

    # -- the pieces op_mix's continual schedule uses too ----------------------------------------
    @contextlib.contextmanager
    def session(self, context) -> Iterator[LoRAProbeSimulator]:
        """A probe simulator on the trainer's (unwrapped) model; the model is restored on exit."""
        cfg, trainer = self.config, context.trainer
        probe_config = ProbeConfig(
            rank=cfg.probe_rank, alpha=cfg.probe_alpha, dropout=cfg.probe_dropout,
            target_modules=cfg.probe_target_modules, lr_multiplier=cfg.probe_lr_multiplier, steps=self.probe_steps,
            batch_size=self.batch_size(context), bf16=cfg.probe_bf16, seed=cfg.seed,
        )
        with LoRAProbeSimulator(
            trainer.accelerator.unwrap_model(trainer.model), probe_config, base_learning_rate=trainer.args.learning_rate,
            ledger=context.ledger, device=trainer.args.device, collective=probes_run_collectively(trainer),
        ) as simulator:
            yield simulator

    def batch_size(self, context) -> int:
        return self.config.probe_batch_size or context.trainer.args.per_device_train_batch_size

    def train_probes(self, context, simulator: LoRAProbeSimulator, probes: Mapping[str, Mixture]) -> dict[str, Any]:
        """Train one probe per ``{name: data mixture}``; returns what to record about each."""
        results, trainer = {}, context.trainer
        bar = tqdm(
            total=len(probes), desc=f"op_mix probes (stage {context.stage}, step {context.step})",
            disable=trainer.args.disable_tqdm or not trainer.is_world_process_zero(), leave=False,
        )
        for index, (name, mixture) in enumerate(probes.items()):
            seed = self.config.seed * 1000 + 17 * context.step + index
            # Collectively, each process trains the shared probe on its share of one global batch,
            # so the probes (and the decision) do not depend on how many processes there are.
            batches = trainer.probe_batches(mixture, self.batch_size(context), seed=seed,
                                            shard=(simulator.rank, simulator.world_size))
            result = simulator.train_probe(name, batches, steps=self.probe_steps)
            bar.update(1)
            results[name] = {"mixture": mixture.to_dict(), "final_loss": result.final_loss,
                             "diverged": result.diverged, "reason": result.reason}
        bar.close()
        if self.config.save_probe_adapters and simulator.probes:
            folder = os.path.join(trainer.args.output_dir, "probe_adapters", f"stage{context.stage}-step{context.step}")
            if trainer.is_world_process_zero():  # the probes are the same on every process: one writer
                simulator.save_adapters(folder)
            for name in simulator.probes:
                results[name]["adapter"] = os.path.join(folder, name)
        return results

    def scores(self, context, simulator: LoRAProbeSimulator, candidates: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``(C, D)`` decision-split scores of candidates given as probe weights."""
        trainer, cfg = context.trainer, self.config
        metric = trainer.default_score if cfg.score == "auto" else cfg.score
        return np.asarray(trainer.candidate_scores(
            simulator, candidates, metric=metric, limit=cfg.eval_blocks, batch_size=cfg.eval_batch_size,
            progress=not trainer.args.disable_tqdm,
        ))

    # -- Simulator --------------------------------------------------------------------------------
    def simulate(self, context, around: Mixture, candidates: Sequence[Mapping[str, float]] | None = None
                 ) -> Simulation | None:
        cfg, names = self.config, context.domains.names
        share = cfg.domain_probe_share
        probes = {"old": around}
        for i, name in enumerate(names):
            probes[f"d{i}"] = Mixture({n: share * (n == name) + (1 - share) * around[n] for n in names})
        given = data_mixtures(candidates, names) if candidates is not None else None
        record: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:
            if self.anneal_steps:
                branches = stack.enter_context(TrainerBranches(context.trainer))  # θ comes back on exit
                steps, end = self.anneal_steps, self.anneal_to
                losses, tokens = branches.train(around, steps, lr_scale=lambda s: 1 - (1 - end) * (s + 1) / steps)
                record["anneal"] = {"steps": steps, "lr_to": end, "tokens": tokens, "final_loss": losses[-1]}
            return self._simulate_on_model(context, around, given, probes, record)

    def _simulate_on_model(self, context, around, given, probes, record) -> Simulation | None:
        cfg, names, share = self.config, context.domains.names, self.config.domain_probe_share
        with self.session(context) as simulator:
            probe_info = self.train_probes(context, simulator, probes)
            alive = simulator.probes
            if "old" not in alive or len(alive) < 2:
                logger.warning("op_mix: too few probes survived (%s); keeping the current mixture.", alive)
                return None
            # Coordinates [old, surviving domain probes]; X's columns in that order.
            order = [alive.index("old")] + [alive.index(p) for p in alive if p != "old"]
            coordinates = [OLD] + [names[int(p[1:])] for p in alive if p != "old"]
            record["probes"] = probe_info
            if given is None:
                rng = np.random.default_rng([cfg.seed, context.stage, context.step])
                # The log-linear law over len(alive) coordinates has len(alive) + 1 parameters per domain:
                # with many domains, 12 candidates cannot determine it (the fit would refuse after all probes).
                count = max(cfg.num_candidates, len(alive) + 1)
                weights = rng.dirichlet(np.full(len(alive), cfg.dirichlet_alpha), size=count)
                Y = self.scores(context, simulator, [dict(zip(alive, row)) for row in weights])
                X = weights[:, order]
            else:
                if len(alive) < len(probes):
                    logger.warning("lora_probes: probes %s diverged; given candidates cannot be encoded.",
                                   sorted(set(probes) - set(alive)))
                    return None
                old = around.to_array(names)
                encoded = {e: np.array([encode(m.to_array(names), old, share, e) for m in given]) for e in ENCODINGS}
                probe_names = ["old"] + [f"d{i}" for i in range(len(names))]
                ys = {e: self.scores(context, simulator, [dict(zip(probe_names, row)) for row in w])
                      for e, w in encoded.items()}
                record["encodings"] = {e: {"weights": encoded[e].tolist(), "Y": ys[e].tolist()} for e in ENCODINGS}
                # X in data coordinates [old, d1..dk] (probe d carries share·d), so mixtures() gives back the
                # given data mixtures whichever encoding scored them.
                domain_part = share * encoded[self.encoding][:, 1:]
                X, Y = np.column_stack([1 - domain_part.sum(axis=1), domain_part]), ys[self.encoding]
        return Simulation(coordinates, {OLD: around}, list(names), X, Y, list(names), record)
