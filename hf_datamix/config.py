"""DataMixArguments: TrainingArguments plus the mixing settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from .data.interleaver import EXHAUSTION_ACTIONS


logger = logging.getLogger(__name__)


def launched_processes() -> int:
    """How many processes the launcher started for this job (``WORLD_SIZE``; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def one_job_problem(launched: int, world_size: int, use_cpu: bool) -> str | None:
    """Why processes that were launched together would not train as one job (None when they do)."""
    if launched <= 1 or world_size == launched:
        return None
    fix = (
        "add --use_cpu true (accelerate launch does not hand its config's use_cpu to the processes)"
        if not use_cpu
        else "check that the launch's distributed_type suits this machine"
    )
    return (
        f"the launcher started WORLD_SIZE={launched} processes, but this one trains alone (world_size={world_size}): "
        f"each process would run the whole job and write the same output_dir. To train them as one job, {fix}; "
        "on GPUs, check that every process sees one (CUDA_VISIBLE_DEVICES)."
    )


def strategy_settings(value: Any) -> dict[str, Any]:
    """The strategy's settings as a dict: from a mapping (Python) or nothing; text is refused (flags are the way)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(
        f"strategy_args={value!r}: give the strategy's settings as a mapping from Python; on the command line and "
        "in a --config file each setting is its own flag or key (e.g. --probe_steps 25; "
        "recipes/midtrain.py --strategy op_mix --help lists them)."
    )


@dataclass
class DataMixArguments(TrainingArguments):
    """Arguments of :class:`~hf_datamix.DataMixTrainer`: every ``TrainingArguments`` field plus:

    Parameters:
        strategy: name of the mixing strategy (see ``hf-datamix strategies``).
        strategy_args: the strategy's settings (and its simulator's) as a mapping, from Python; the recipes
            parse them from the strategy's own flags (:func:`hf_datamix.recipe_args.parse_args`).
        block_size: tokens per training block.
        max_repetitions: epochs over a domain's tokens before it runs dry: k of the repetition caps, for the
            interleaver and the strategies' proposals both (0 or None: no cap).
        plan_caps: schedule every mixture so that no domain would exceed its cap before the end of the run
            (:mod:`hf_datamix.horizon`); False trains at the requested weights until a domain runs dry.
        on_exhausted: what happens when a domain runs dry: redistribute its weight, stop, or error.
        segments_per_block: 1 keeps each block inside one domain; more mixes that many domains per block.
        mixing_seed: seed of the domain draws (default: ``seed``).
        max_eval_blocks: cap on eval (test) blocks per domain (None: all).
        decision_blocks: blocks (SFT: examples) of each domain's eval split reserved for decisions, at
            most half of it; evaluation reports on the rest.  0 lets decisions score on the eval split itself.
        init_mixture: a mixture to start from: a ``mixture.json`` file, a folder holding one, or a Hub repo id.
        preprocessing_num_workers: processes for tokenising.
        write_plots: draw ``weights.png``, ``law_fit.png`` and ``candidates.png`` at the end of training.
    """

    strategy: str = field(
        default="uniform", metadata={"help": "Mixing strategy name (hf-datamix strategies lists them)."}
    )
    strategy_args: dict | None = field(
        default=None,
        metadata={
            "help": "The strategy's settings as a mapping, from Python only: on the command line and in "
            "--config files each setting is its own flag (see --strategy NAME --help)."
        },
    )
    block_size: int = field(default=256, metadata={"help": "Tokens per packed training block."})
    max_repetitions: float | None = field(
        default=4.0,
        metadata={
            "help": "Max epochs over each domain's tokens (repetition cap k), for the interleaver "
            "and the strategies' proposals both; 0: no cap."
        },
    )
    on_exhausted: str = field(
        default="redistribute",
        metadata={"help": f"When a domain runs dry: one of {list(EXHAUSTION_ACTIONS)}."},
    )
    segments_per_block: int = field(
        default=1, metadata={"help": "Domains drawn per block; 1 never mixes domains inside a block."}
    )
    mixing_seed: int | None = field(default=None, metadata={"help": "Seed of the domain draws (default: seed)."})
    max_eval_blocks: int | None = field(default=None, metadata={"help": "Cap on eval (test) blocks per domain."})
    decision_blocks: int = field(
        default=64,
        metadata={
            "help": "Blocks (SFT: examples) of each domain's eval split reserved for decisions (probe candidates, "
            "proxies, laws), at most half of it unless the rest still fills max_eval_blocks; evaluation reports "
            "on the rest, so decisions never see the test blocks. A domain with DomainSpec.decision uses that "
            "instead. 0: decisions score on the eval split."
        },
    )
    plan_caps: bool = field(
        default=True,
        metadata={
            "help": "Plan repetition caps over the horizon: a mixture is scheduled with each domain's weight lowered "
            "to what its remaining epochs sustain until the end of the run, the excess shared out over the other "
            "domains, so no domain runs dry part-way and is forgotten. False: train at the requested weights until "
            "a domain runs dry, then on_exhausted applies."
        },
    )
    init_mixture: str | None = field(
        default=None, metadata={"help": "Start from this mixture (mixture.json file, folder, or Hub repo id)."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenising."})
    write_plots: bool = field(
        default=True, metadata={"help": "Draw the weights / law-fit / candidates PNGs at the end (needs matplotlib)."}
    )

    def __post_init__(self):
        launched = launched_processes()
        if launched > 1 and not self.use_cpu and not _has_accelerator():
            # `accelerate launch --config_file accelerate_configs/cpu.yaml` starts the processes but does
            # not pass the config's use_cpu on, and without it each process trains alone.  With no
            # accelerator on the machine the processes can only train together on CPU.
            logger.info("%d processes launched on a machine without an accelerator: training on CPU.", launched)
            self.use_cpu = True
        super().__post_init__()
        problem = one_job_problem(launched, self.world_size, self.use_cpu)
        if problem:
            raise ValueError(problem)
        self.strategy_args = strategy_settings(self.strategy_args)
        if self.block_size < 2:
            raise ValueError(f"block_size={self.block_size}: use at least 2 tokens per block.")
        if self.segments_per_block < 1 or self.block_size % self.segments_per_block:
            raise ValueError(
                f"segments_per_block={self.segments_per_block} must be >= 1 and divide block_size={self.block_size}."
            )
        if self.on_exhausted not in EXHAUSTION_ACTIONS:
            raise ValueError(f"on_exhausted={self.on_exhausted!r}; use one of {list(EXHAUSTION_ACTIONS)}.")
        if self.max_repetitions is not None and not self.max_repetitions >= 0:
            raise ValueError(
                f"max_repetitions={self.max_repetitions}; use a positive number of epochs, or 0 for no cap."
            )
        if self.max_repetitions == 0:
            self.max_repetitions = None  # 0 on the command line means "no cap" (None cannot be typed there)
        if not isinstance(self.decision_blocks, int) or self.decision_blocks < 0:
            raise ValueError(
                f"decision_blocks={self.decision_blocks!r}; use a number of blocks >= 0 (0: decisions score on the "
                "eval split, which then leaks into them)."
            )
        if self.max_eval_blocks is not None and self.max_eval_blocks < 1:
            raise ValueError(f"max_eval_blocks={self.max_eval_blocks}; use a positive number or None.")


def _has_accelerator() -> bool:
    import torch

    return bool(torch.accelerator.is_available())
