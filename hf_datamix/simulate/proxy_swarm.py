"""``proxy_swarm``: Olmix's simulator, a swarm of small proxy models, one per mixture, trained from scratch.

:class:`ProxySwarm` is the :class:`~hf_datamix.simulate.base.Simulator`: it samples the swarm's
mixtures (Dirichlet around the mixture it is given, under the decision's repetition caps, in the
coordinates of any reuse groups) and has :class:`ProxyRuns` train and score one proxy per mixture.

Each member is a random-init model from a config, trained by :class:`~hf_datamix.DataMixTrainer`
(the same interleaver and Trainer as real runs) on a fixed mixture, then scored by its per-domain loss
on the decision split.  A member's result is written to ``output_dir/member-<i>/result.json`` as soon as it is done,
so an interrupted swarm resumes without training a finished member twice.  Members are spread over
processes: process ``r`` of ``P`` trains members ``i ≡ r (mod P)`` and the results are gathered from
the shared output folder (``recipes/swarm.py`` runs one independent process per GPU this way).
Compute goes to the ledger as ``proxy``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..compute import ComputeLedger, write_json_atomic
from ..config import DataMixArguments
from ..constants import MEMBER_RESULT_FILE
from ..domains import DomainSet
from ..horizon import decision_caps
from ..mixture import Mixture
from ..settings import check_ranges
from .base import Simulation, Simulator, SimulatorConfig, data_mixtures


logger = logging.getLogger(__name__)


@dataclass
class ProxyConfig:
    """How swarm members are trained."""

    preset: str = field(default="tiny", metadata={"help": "Proxy model size (hf_datamix.models.PRESETS)."})
    steps: int = field(default=200, metadata={"help": "Optimizer steps per proxy."})
    batch_size: int = field(default=8, metadata={"help": "Per-device batch size of a proxy."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of a proxy."})
    eval_blocks: int = field(default=32, metadata={"help": "Decision blocks per domain used to score a proxy."})
    seed: int = field(default=0, metadata={"help": "Seed of every proxy's init (the same for all members)."})

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not self.learning_rate > 0 or self.eval_blocks < 1:
            raise ValueError(f"ProxyConfig out of range: {asdict(self)}; steps, batch_size, eval_blocks >= 1, lr > 0.")


@dataclass
class SwarmResult:
    """Mixtures (R runs × m domains) and their per-target losses (R × T)."""

    domains: list[str]
    targets: list[str]
    ratios: np.ndarray
    metrics: np.ndarray
    trained: int = 0
    reused: int = 0

    def to_dict(self) -> dict:
        return {
            "domains": self.domains,
            "targets": self.targets,
            "ratios": self.ratios.tolist(),
            "metrics": self.metrics.tolist(),
            "trained": self.trained,
            "reused": self.reused,
        }


class ProxyRuns:
    """Trains and scores one proxy per mixture (see the module docstring).

    Args:
        domains: the domains the mixtures range over (their train splits feed the proxies).
        tokenizer: tokenizer of the proxies.
        config: :class:`ProxyConfig`.
        output_dir: where member results (and nothing else large) are written.
        base_args: DataMixArguments to copy settings from (block size, bf16, workers...).
        targets: domains whose eval loss is each proxy's score (default: ``domains``).
        ledger: counts proxy FLOPs as kind ``proxy``.
    """

    def __init__(
        self,
        domains: DomainSet,
        tokenizer,
        config: ProxyConfig,
        output_dir: str,
        base_args: DataMixArguments | None = None,
        targets: DomainSet | None = None,
        ledger: ComputeLedger | None = None,
    ):
        self.domains = domains
        self.targets = targets or domains
        self.tokenizer = tokenizer
        self.config = config
        self.output_dir = output_dir
        self.base_args = base_args
        self.ledger = ledger if ledger is not None else ComputeLedger()

    def member_dir(self, index: int) -> str:
        return os.path.join(self.output_dir, f"member-{index:04d}")

    def _args(self, index: int) -> DataMixArguments:
        values = {} if self.base_args is None else copy.deepcopy(self.base_args).to_dict()
        keep = {
            k: values[k]
            for k in (
                "block_size",
                "bf16",
                "fp16",
                "use_cpu",
                "dataloader_num_workers",
                "max_repetitions",
                "on_exhausted",
                "preprocessing_num_workers",
            )
            if k in values
        }
        return DataMixArguments(
            output_dir=self.member_dir(index),
            max_steps=self.config.steps,
            per_device_train_batch_size=self.config.batch_size,
            per_device_eval_batch_size=max(8, self.config.batch_size),
            learning_rate=self.config.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, self.config.steps // 20),
            save_strategy="no",
            eval_strategy="no",
            logging_steps=max(1, self.config.steps),
            report_to=[],
            disable_tqdm=True,
            seed=self.config.seed,
            max_eval_blocks=self.config.eval_blocks,
            # Proxies are scored on decision blocks (0 in the run's arguments: on eval blocks, as asked).
            decision_blocks=0 if values.get("decision_blocks") == 0 else self.config.eval_blocks,
            strategy="fixed",
            write_plots=False,  # hundreds of members: a figure each would cost more than a tiny proxy's training
            **keep,
        )

    def _train_member(self, index: int, mixture: Mixture) -> dict:
        import torch
        from transformers import LlamaForCausalLM
        from transformers.trainer_callback import PrinterCallback

        from ..models import llama_config
        from ..strategies.fixed import FixedStrategy
        from ..trainer import DataMixTrainer

        torch.manual_seed(self.config.seed)
        tok = self.tokenizer
        model = LlamaForCausalLM(
            llama_config(
                self.config.preset,
                vocab_size=len(tok),
                eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        )
        member_ledger = ComputeLedger()
        started = time.perf_counter()
        trainer = DataMixTrainer(
            model=model,
            args=self._args(index),
            domains=self.domains,
            strategy=FixedStrategy(weights=mixture.to_dict()),
            processing_class=tok,
            ledger=member_ledger,
        )
        trainer.remove_callback(PrinterCallback)  # the swarm's own bar reports progress, not every member's logs
        trainer.train()
        losses = {}
        # Scored on the decision split: the proxies and the law fitted on them never see test blocks.
        trainer.eval_dataset, trainer.eval_token_counts = _decision_sets(
            self.targets, tok, trainer.args, trainer if self.targets is self.domains else None
        )
        metrics = trainer.evaluate()
        for name in self.targets.names:
            losses[name] = float(metrics[f"eval_{name}_loss"])
        result = {
            "index": index,
            "weights": mixture.to_dict(),
            "losses": losses,
            "flops": member_ledger.total_flops,
            "tokens": member_ledger.tokens_by_kind.get("train", 0.0),
            "seconds": time.perf_counter() - started,
            "config": asdict(self.config),
        }
        write_json_atomic(os.path.join(self.member_dir(index), MEMBER_RESULT_FILE), result)
        return result

    def _finished(self, index: int, mixture: Mixture) -> dict | None:
        path = os.path.join(self.member_dir(index), MEMBER_RESULT_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        if not Mixture(result["weights"]).allclose(mixture, atol=1e-9) or result.get("config") != asdict(self.config):
            raise ValueError(
                f"{path} holds a member trained on another mixture or config; use a new output_dir for a new swarm."
            )
        return result

    def run(
        self, mixtures: Sequence[Mixture], rank: int = 0, world_size: int = 1, poll_seconds: float = 5.0
    ) -> SwarmResult:
        """Train (or reuse) every member; process ``rank`` of ``world_size`` trains its share, then all gather."""
        mixtures = [Mixture(m, domains=self.domains.names) for m in mixtures]
        trained = reused = 0
        from tqdm.auto import tqdm

        quiet = rank != 0 or (self.base_args is not None and self.base_args.disable_tqdm)
        mine = [i for i in range(len(mixtures)) if i % world_size == rank]
        bar = tqdm(total=len(mine), desc=f"proxy swarm (process {rank + 1}/{world_size})", disable=quiet)
        for index in mine:
            mixture = mixtures[index]
            if self._finished(index, mixture) is not None:
                reused += 1
            else:
                result = self._train_member(index, mixture)
                trained += 1
                # Counted once, by the process that trained the member.
                self.ledger.add("proxy", result["flops"], result["tokens"])
                logger.info("Swarm member %d/%d done: %s", index + 1, len(mixtures), result["losses"])
            bar.update(1)
        bar.close()
        results = [self._wait_for(i, m, poll_seconds) for i, m in enumerate(mixtures)]
        ratios = np.array([m.to_array(self.domains.names) for m in mixtures])
        metrics = np.array([[r["losses"][t] for t in self.targets.names] for r in results])
        return SwarmResult(self.domains.names, self.targets.names, ratios, metrics, trained, reused)

    def _wait_for(self, index: int, mixture: Mixture, poll_seconds: float) -> dict:
        while True:
            result = self._finished(index, mixture)
            if result is not None:
                return result
            time.sleep(poll_seconds)


def _decision_sets(targets: DomainSet, tokenizer, args: DataMixArguments, trainer=None) -> tuple[dict, dict]:
    """Per-target decision blocks as eval sets (those ``trainer`` packed, when its domains are the targets)
    and their token counts."""
    from ..data.blocks import BlockDataset, pack_held_out

    if trainer is not None:
        blocks = trainer.decision_blocks
    else:
        blocks = {spec.name: pack_held_out(spec, spec.load()[1], tokenizer, args)[1] for spec in targets}
    return {n: BlockDataset(b) for n, b in blocks.items()}, {n: int(b.size) for n, b in blocks.items()}


@dataclass
class ProxySwarmConfig(SimulatorConfig):
    """Settings of the ``proxy_swarm`` simulator (Olmix's published values where it gives them)."""

    swarm_size: int | None = field(
        default=None,
        metadata={
            "help": "Proxies per swarm, >= 2 (default Olmix's: 5m for a whole domain set, 3(m+1) for an update's m "
            "re-simulated coordinates)."
        },
    )
    min_weight: float = field(default=0.002, metadata={"help": "Swarm weights below this are zeroed."})
    proxy_preset: str = field(default="tiny", metadata={"help": "Proxy model size (hf_datamix.models.PRESETS)."})
    proxy_steps: int = field(default=100, metadata={"help": "Optimizer steps per proxy, >= 1."})
    proxy_batch_size: int = field(default=8, metadata={"help": "Batch size of a proxy."})
    proxy_learning_rate: float = field(default=3e-3, metadata={"help": "Peak LR of a proxy."})
    proxy_eval_blocks: int = field(default=16, metadata={"help": "Decision blocks per domain scoring a proxy."})

    def __post_init__(self):
        check_ranges(
            "proxy_swarm",
            self,
            {
                "proxy_steps": (self.proxy_steps >= 1, ">= 1"),
                "swarm_size": (
                    self.swarm_size is None or self.swarm_size >= 2,
                    ">= 2, or null for Olmix's default (5m, 3(m+1) at an update)",
                ),
            },
        )


class ProxySwarm(Simulator):
    """Olmix's proxy swarm as a simulator; settings: :class:`ProxySwarmConfig`.

    The swarm is Dirichlet-sampled around ``around`` (collapsed by ``groups``: a reused virtual domain
    counts as one coordinate), capped by the decision's repetition caps; given ``candidates``, those
    data mixtures are trained instead.  Members of stage ``s`` are kept in ``output_dir/swarm-stage<s>``
    (a later decision in the stage: ``...-step<t>``), so an interrupted swarm resumes.
    """

    name = "proxy_swarm"
    description = "A swarm of small proxy models trained from scratch on sampled mixtures (Olmix)."
    config_class = ProxySwarmConfig
    supports_groups = True

    def proxy_config(self) -> ProxyConfig:
        cfg = self.config
        return ProxyConfig(
            cfg.proxy_preset,
            cfg.proxy_steps,
            cfg.proxy_batch_size,
            cfg.proxy_learning_rate,
            cfg.proxy_eval_blocks,
            self.seed,
        )

    def simulate(
        self,
        context,
        around: Mixture,
        candidates: Sequence[Mapping[str, float]] | None = None,
        groups: Mapping[str, Mixture] | None = None,
    ) -> Simulation:
        from ..swarm import default_swarm_size, sample_swarm

        groups = dict(groups or {})
        names = context.domains.names
        grouped = {member for ratios in groups.values() for member in ratios}
        coordinates = list(groups) + [n for n in names if n not in grouped]
        if candidates is not None:
            if groups:
                raise ValueError("proxy_swarm: give candidates or groups, not both.")
            swarm = data_mixtures(candidates, names)
        else:
            centre = around.collapse({v: list(ratios) for v, ratios in groups.items()})[0] if groups else around
            caps = decision_caps(coordinates, groups, context)
            # Olmix's size: 5m for a first swarm over the whole domain set, 3(m+1) when reused domains are
            # held together (an update's re-simulated coordinates).
            size = self.config.swarm_size or default_swarm_size(len(coordinates), initial=not groups)
            swarm = sample_swarm(
                coordinates,
                prior=centre,
                size=size,
                min_weight=self.config.min_weight,
                caps=None if caps is None else dict(zip(coordinates, caps)),
                seed=self.seed + 1000 * context.stage,
            )
        result, record = self.train_members(context, [m.expand(groups) for m in swarm])
        X = np.array([m.to_array(coordinates) for m in swarm])
        return Simulation(coordinates, groups, list(names), X, result.metrics, list(result.targets), record)

    def train_members(self, context, mixtures: Sequence[Mixture]) -> tuple[SwarmResult, dict]:
        """Train and score one proxy per data mixture (:class:`ProxyRuns`, in the run's output folder); returns the
        result and what to record (``proxy_runs``: members trained now).  A subclass may get the members elsewhere."""
        trainer = context.trainer
        folder = f"swarm-stage{context.stage}" + (f"-step{context.step}" if context.step else "")
        runs = ProxyRuns(
            context.domains,
            trainer.processing_class,
            self.proxy_config(),
            os.path.join(trainer.args.output_dir, folder),
            base_args=trainer.args,
            ledger=context.ledger,
        )
        result = runs.run(mixtures)
        return result, {"proxy_runs": result.trained, "proxy": asdict(runs.config)}
