"""DataMixTrainer: a ``transformers.Trainer`` whose training data come from a mixing interleaver.

It overrides as little as possible: the training dataset is the :class:`Interleaver`, the eval
dataset a dict of per-domain block sets (so Trainer reports ``eval_<domain>_loss``), and the rest
is done by :class:`~hf_datamix.callbacks.MixingCallback`.  Overrides: ``get_train_dataloader``
(to tell the interleaver how batches are cut across ranks and workers), ``evaluate`` (aggregate
losses and the ledger), ``log`` (``mix/<domain>`` weights), ``train`` (restore the mixing state
before the dataloader starts), ``create_model_card`` (Trainer's card plus the mixing sections).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import datasets
import numpy as np
import torch
from accelerate.data_loader import DataLoaderDispatcher
from transformers import Trainer, default_data_collator
from transformers.trainer_utils import TrainOutput

from .callbacks import MixingCallback
from .checkpoints import STATE_FILE, TRAINER_STATE_FILE, check_resume, read_state, resolve_resume, saved_step
from .compute import ComputeLedger, non_embedding_parameters, write_json_atomic
from .config import DataMixArguments
from .data.interleaver import Interleaver
from .data.packing import decision_share, pack_dataset, pack_eval
from .data.streaming import StreamingBlocks
from .domains import DomainSet, DomainUpdate
from .horizon import fit_to_horizon
from .mixture import MIXTURE_FILE, Mixture
from .simulate.scoring import BlockLossScorer
from .strategies.base import Decision, DecisionContext, Strategy
from .strategies.registry import create_strategy
from .tracking import decision_scalars

logger = logging.getLogger(__name__)

MIXTURES_FILE = "mixtures.json"
#: Reads back the decision line each process logs (``--log_level_replica info``) in
#: :meth:`DataMixMixin.run_decision`: rank, processes, stage, step and the mixture's repr.
DECISION_LOG = re.compile(r"Process (\d+)/(\d+), stage (\d+) step (\d+): new mixture (Mixture\(.*?\))")


_EXIT_HOOK: list = []


def _end_process_group_at_exit() -> None:
    """Destroy the default process group at exit while the interpreter is still whole (once per process).

    Trainer never destroys it, and the trainer's DDP model, kept by the trainer <-> callback reference
    cycle, holds its gloo backend: gloo's threads (``pt_gloo_runloop``, ``gloo_tcp_loop``) were still
    running when the interpreter was torn down, and 2-process CPU runs now and then died there with
    SIGABRT ("terminate called without an active exception") after training ended.
    """
    if _EXIT_HOOK or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    import atexit

    def destroy() -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        # The backend (and its threads) lives on in the trainer's DDP model, which a reference cycle
        # (trainer <-> callback) keeps until the interpreter's own last collection: collect it now.
        import gc

        gc.collect()

    atexit.register(destroy)
    _EXIT_HOOK.append(destroy)


class BlockDataset(torch.utils.data.Dataset):
    """Fixed-length token blocks as causal-LM samples (``input_ids`` = ``labels``)."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))
        return {"input_ids": ids, "labels": ids}


class PackedDomains(NamedTuple):
    """Every domain packed: training sources, test (eval) and decision blocks, usable training tokens."""

    sources: dict[str, Any]
    eval_blocks: dict[str, np.ndarray]
    decision_blocks: dict[str, np.ndarray]
    token_counts: dict[str, int]


def pack_domains(domains: DomainSet, tokenizer, args: DataMixArguments) -> PackedDomains:
    """Load and pack every domain: training sources, eval (test) and decision blocks, token counts.

    A domain's decision blocks are its ``DomainSpec.decision`` data, else the first
    ``args.decision_blocks`` blocks of its eval split (at most half); eval keeps the rest
    (``args.decision_blocks=0``: decisions score on the eval blocks themselves).
    """
    segment = args.block_size // args.segments_per_block
    sources: dict[str, Any] = {}
    eval_blocks: dict[str, np.ndarray] = {}
    decision_blocks: dict[str, np.ndarray] = {}
    for spec in domains:
        train, evaluation = spec.load()
        if isinstance(train, datasets.IterableDataset):
            sources[spec.name] = StreamingBlocks(
                train, tokenizer, segment, spec.text_field, spec.name, num_tokens=spec.num_tokens, seed=args.seed
            )
        else:
            sources[spec.name] = pack_dataset(
                train, tokenizer, segment, spec.text_field, spec.name, num_proc=args.preprocessing_num_workers
            )
        eval_blocks[spec.name], decision_blocks[spec.name] = pack_held_out(spec, evaluation, tokenizer, args)
    counts = {name: source.num_tokens for name, source in sources.items()}
    return PackedDomains(sources, eval_blocks, decision_blocks, counts)


def pack_held_out(spec, evaluation, tokenizer, args: DataMixArguments) -> tuple[np.ndarray, np.ndarray]:
    """``(eval blocks, decision blocks)`` of one domain whose loaded eval split is ``evaluation``.

    The decision blocks are ``spec.decision``'s data, else the first ``args.decision_blocks`` blocks of
    the eval split (at most half, :func:`~hf_datamix.data.packing.decision_share`), which eval then
    leaves out; ``args.decision_blocks=0`` scores decisions on the eval blocks themselves.
    """
    explicit = spec.load_decision()
    carve = explicit is None and args.decision_blocks > 0
    # A capped (e.g. streaming) eval split is read only as far as both splits need.
    cap = args.max_eval_blocks + args.decision_blocks if carve and args.max_eval_blocks else args.max_eval_blocks
    held_out = pack_eval(evaluation, tokenizer, args.block_size, spec.text_field, spec.name, cap).blocks
    if explicit is not None:
        decision = pack_eval(explicit, tokenizer, args.block_size, spec.text_field, f"{spec.name} (decision)",
                             args.decision_blocks or None).blocks
    elif carve:
        reserved = decision_share(len(held_out), args.decision_blocks, args.max_eval_blocks)
        if reserved == 0:
            raise ValueError(
                f"Domain {spec.name!r}: its eval split packs into {len(held_out)} block(s) of {args.block_size} "
                "tokens, too few to keep decision blocks apart from test blocks; give it more eval data, "
                "DomainSpec.decision, or set decision_blocks=0."
            )
        decision, held_out = held_out[:reserved], held_out[reserved:]
    else:
        decision = held_out
    if args.max_eval_blocks is not None:
        held_out = held_out[: args.max_eval_blocks]
    return held_out, decision


class DataMixMixin:
    """The mixing machinery shared by :class:`DataMixTrainer` and :class:`~hf_datamix.sft.DataMixSFTTrainer`.

    A subclass sets up its per-domain data in its own ``__init__`` (packed blocks for pretraining,
    TRL-processed examples for SFT) and provides:

    * ``default_score``: what op_mix scores candidates by by default (``"loss"`` or ``"task_error"``);
    * :meth:`decision_scorer`: a scorer (``model -> score per domain``) on the decision split;
    * :meth:`step_train_tokens`: tokens trained on in the last optimizer step (all ranks);
    * ``eval_token_counts``: tokens per domain eval set (weights of the aggregate eval loss);
    * ``tokens_per_sample``: (average) tokens per training sample (for repetition caps).
    """

    default_score = "loss"
    #: Whether every batch has the same shape.  accelerate's batch dispatching (its default for
    #: several processes) concatenates the processes' micro-batches on the main process, which
    #: batches padded to their own longest example (SFT) cannot do; those trainers have every
    #: process read the stream and keep its share instead.
    fixed_shape_batches: bool = True
    #: The arguments class the trainer requires (checked first, before any data are touched).
    args_class: type = DataMixArguments
    eval_token_counts: dict[str, int]
    #: Hub tags of the model and its card (TRL's ``_tag_names``); the card also gets the strategy's name.
    _tag_names: list[str] = ["hf_datamix", "data-mixing"]

    def _setup_mixing(
        self,
        model,
        args,
        domains,
        strategy,
        processing_class,
        stage: int,
        update: DomainUpdate | None,
        previous_mixture: Mixture | None,
        history: list | None,
        ledger: ComputeLedger | None,
        step_offset: int,
        kwargs: dict,
    ) -> None:
        """Check the arguments and set the mixing state (before ``Trainer.__init__``)."""
        owner = type(self).__name__
        if not isinstance(args, self.args_class):
            raise ValueError(
                f"{owner} needs args={self.args_class.__name__}(...), got {type(args).__name__}; "
                f"{self.args_class.__name__} accepts every TrainingArguments field."
            )
        if not isinstance(domains, DomainSet):
            raise ValueError(f"{owner} needs domains=DomainSet([...]), got {type(domains).__name__}.")
        if processing_class is None:
            raise ValueError(f"{owner} needs processing_class=<tokenizer> to tokenise the domains.")
        for key in ("train_dataset", "eval_dataset"):
            if kwargs.get(key) is not None:
                raise ValueError(f"{owner} builds {key} from `domains`; do not pass {key}.")
            kwargs.pop(key, None)
        if args.max_steps is None or args.max_steps <= 0:
            raise ValueError(
                f"max_steps={args.max_steps}: {owner} streams an endless mixture, so it needs a positive max_steps "
                "(e.g. --max_steps 1000)."
            )
        if not args.ignore_data_skip:
            # The interleaver restores its own position from the checkpoint; Trainer's batch replay
            # would skip the same samples a second time.
            args.ignore_data_skip = True
        # Trainer deletes old checkpoints before the mixing state of the new one is written, so a crash
        # in between could leave no complete checkpoint; the mixing callback rotates them afterwards.
        self.save_total_limit = getattr(args, "_datamix_save_total_limit", args.save_total_limit)
        args._datamix_save_total_limit, args.save_total_limit = self.save_total_limit, None
        dispatch = args.accelerator_config.dispatch_batches
        if dispatch and args.world_size > 1 and not self.fixed_shape_batches:
            raise ValueError(
                f"accelerator_config.dispatch_batches=True: {owner} pads each batch to its longest example, "
                "and accelerate cannot concatenate such batches across processes; leave dispatch_batches "
                "unset (every process then reads the stream and keeps its share)."
            )
        if dispatch is None and (args.world_size == 1 or not self.fixed_shape_batches):
            # accelerate dispatches batches of an IterableDataset by default, which on one process
            # only adds a concatenate-and-slice per batch; reading directly is the same stream.
            args.accelerator_config.dispatch_batches = False
        if isinstance(strategy, Strategy):
            self.strategy = strategy
        else:
            name = strategy or args.strategy
            # args.strategy_args belong to args.strategy, not to another strategy named here.
            self.strategy = create_strategy(name, args.strategy_args if name == args.strategy else None)
        # Every setting that can be wrong fails here, before any domain is read or packed.
        self.strategy.check(domains)
        domains.check()
        self.init_mixture = self.check_init_mixture(args.init_mixture, domains) if args.init_mixture else None
        self.domains = domains
        self.stage = stage
        self.update = update
        self.previous_mixture = previous_mixture
        self.history = history if history is not None else []
        self.ledger = ledger if ledger is not None else ComputeLedger()
        self.step_offset = step_offset
        #: Where ``mixtures.json`` and ``compute.json`` are kept up to date (a continual run: its root folder).
        self.records_dir = args.output_dir
        self.num_params = non_embedding_parameters(model) if model is not None else 0

    def _make_interleaver(self, args, sources: Mapping[str, Any]) -> Interleaver:
        """The training stream over ``sources``, starting from the init mixture or the strategy's."""
        self.sources = dict(sources)
        self.token_counts = {name: source.num_tokens for name, source in self.sources.items()}
        context = self._context(step=0, max_steps=args.max_steps, mixture=None)
        mixture = self.init_mixture or self.strategy.initial_mixture(context)
        self.interleaver = Interleaver(
            self.sources,
            Mixture(mixture, domains=self.domains.names),
            seed=args.seed if args.mixing_seed is None else args.mixing_seed,
            max_repetitions=args.max_repetitions,
            on_exhausted=args.on_exhausted,
            segments_per_block=args.segments_per_block,
        )
        self.interleaver.log_exhaustion = False
        return self.interleaver

    def _attach_mixing_callback(self) -> None:
        """After ``Trainer.__init__``: the mixing callback, the log levels and the model's Hub tags."""
        self.mixing_callback = MixingCallback(self)
        self.add_callback(self.mixing_callback)
        self._follow_log_levels()
        if hasattr(self.model, "add_model_tags"):  # TRL's pattern: Trainer's push puts them on the card
            self.model.add_model_tags(self._tag_names)
        _end_process_group_at_exit()

    def _follow_log_levels(self) -> None:
        """hf_datamix's logger takes the level Trainer gives transformers' (``get_process_log_level``)
        when ``--log_level`` / ``--log_level_replica`` (main / other processes) set one.

        Left alone while it is "passive" (the default), so a user's own ``logging`` set-up (the recipes
        log decisions at INFO) still decides.  ``--log_level_replica info`` shows every process's decisions.
        """
        chosen = self.args.log_level if self.args.should_log else self.args.log_level_replica
        if chosen != "passive":
            logging.getLogger("hf_datamix").setLevel(self.args.get_process_log_level())

    @staticmethod
    def check_init_mixture(source: str, domains: DomainSet) -> Mixture:
        """The ``init_mixture`` (a file, folder or Hub repo) over ``domains``: names the run lacks are refused,
        domains it lacks start at 0 (logged)."""
        try:
            loaded = Mixture.from_pretrained(source)
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(f"init_mixture={source!r}: {error}") from None
        unknown = [name for name in loaded if name not in domains]
        if unknown:
            raise ValueError(
                f"init_mixture {source!r} names domains {unknown} that this run does not have ({domains.names}); "
                "edit the mixture or add those domains."
            )
        missing = [name for name in domains.names if name not in loaded]
        if missing:
            logger.warning("init_mixture %r has no weight for %s: they start at 0.", source, missing)
        return Mixture(dict(loaded), domains=domains.names)

    # -- batch geometry -------------------------------------------------------------------------
    @property
    def global_micro_batch(self) -> int:
        """Samples in one micro-batch across all processes."""
        if self.args.accelerator_config.split_batches:
            return self._train_batch_size
        return self._train_batch_size * self.args.world_size

    @property
    def samples_per_step(self) -> int:
        """Global samples per optimizer step."""
        return self.global_micro_batch * self.args.gradient_accumulation_steps

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        # Under accelerate's batch dispatching one process reads micro-batches and scatters them;
        # otherwise each process reads the whole global batch and keeps its slice.  Workers must
        # own whole reads, and chunk_size is that read.
        dispatching = isinstance(loader, DataLoaderDispatcher)
        self.interleaver.chunk_size = self._train_batch_size if dispatching else self.global_micro_batch
        return loader

    # -- decisions ------------------------------------------------------------------------------
    def _context(self, step: int, max_steps: int, mixture: Mixture | None, from_sample: int = 0) -> DecisionContext:
        stream = getattr(self, "interleaver", None)
        drawn = stream.drawn(from_sample) if stream is not None and from_sample else {}
        per_unit = {name: source.num_tokens / max(1, source.num_blocks or 1) for name, source in self.sources.items()
                    if source.num_tokens is not None}
        return DecisionContext(
            drawn_tokens={name: int(drawn.get(name, 0) * per_unit.get(name, 0)) for name in self.sources},
            step=step,
            max_steps=max_steps,
            stage=self.stage,
            domains=self.domains,
            token_counts=dict(self.token_counts),
            mixture=mixture,
            previous_mixture=self.previous_mixture,
            update=self.update,
            history=self.history,
            trainer=self,
            ledger=self.ledger,
        )

    def run_decision(self, step: int, from_sample: int) -> None:
        """Ask the strategy for a decision and schedule it from global sample ``from_sample``."""
        current = self.interleaver.weights_at(from_sample)
        context = self._context(step, self.state.max_steps, current, from_sample)
        started, spent_before = time.perf_counter(), dict(self.ledger.by_kind)
        result = None
        everywhere = self.strategy.runs_on_every_process(self)
        if everywhere or self.args.world_size == 1 or self.is_world_process_zero():
            result = self.strategy.decide(context)
        if self.args.world_size > 1:
            # Also after a decision taken everywhere: the main process's result is the one applied,
            # so the ranks agree even if a solver differed in the last bits.
            from accelerate.utils import broadcast_object_list

            payload = [result]
            broadcast_object_list(payload, from_process=0)
            result = payload[0]
        decision = result if isinstance(result, Decision) or result is None else Decision(Mixture(result))
        seconds = time.perf_counter() - started
        spent = {k: v - spent_before.get(k, 0.0) for k, v in self.ledger.by_kind.items() if v > spent_before.get(k, 0.0)}
        cost = f"took {seconds:.1f} s, {sum(spent.values()):.3g} FLOPs" + (
            f" ({', '.join(f'{k} {v:.3g}' for k, v in sorted(spent.items()))})" if spent else "")
        if decision is None:
            self.record_mixture(current, step, kind="kept", seconds=seconds)
            logger.info("Process %d/%d, stage %d step %d: kept mixture %s (%s)", self.args.process_index,
                        self.args.world_size, self.stage, step, current, cost)
            return
        mixture, lowered = self.plan_mixture(Mixture(decision.mixture, domains=self.domains.names), from_sample)
        self.interleaver.set_weights(mixture, from_sample)
        details = {**decision.details, **({"capped_for_horizon": lowered} if lowered else {})}
        self.record_mixture(mixture, step, kind="decision", seconds=seconds, from_sample=from_sample, **details)
        # One line per decision, the default level of the recipes: what changed and what it cost.
        logger.info("Process %d/%d, stage %d step %d: new mixture %s (%s)", self.args.process_index,
                    self.args.world_size, self.stage, step, mixture, cost)

    def plan_mixture(self, mixture: Mixture, from_sample: int) -> tuple[Mixture, dict[str, float]]:
        """``mixture`` as it is scheduled from global sample ``from_sample`` to the end of the run.

        With ``plan_caps`` (default) each domain's weight is lowered to what its remaining blocks sustain
        until the end, the excess shared out (:func:`hf_datamix.horizon.fit_to_horizon`); returns the
        mixture and ``{domain: requested weight}`` of the lowered domains.
        """
        if not self.args.plan_caps or self.args.max_repetitions is None:
            return mixture, {}
        units = self.interleaver.segments_per_block
        horizon = (self.state.max_steps * self.samples_per_step - from_sample) * units
        return fit_to_horizon(mixture, self.interleaver.units_left(from_sample), horizon)

    def probe_batches(self, mixture: Mixture, batch_size: int, seed: int, shard: tuple[int, int] = (0, 1)):
        """An endless iterator of collated batches drawn from ``mixture`` (for simulators' probes).

        ``shard=(k, n)``: the stream is drawn in global batches of ``n * batch_size`` samples and this
        process gets every n-th sample from the k-th, so probes trained collectively over n processes
        see the batches one process would see at ``n * batch_size`` (same seed, same samples).
        """
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard={shard!r} must be (process index, process count) with 0 <= index < count.")
        probe = Interleaver(
            self.sources,
            Mixture(mixture, domains=self.domains.names),
            seed=seed,
            segments_per_block=self.args.segments_per_block,
        )
        probe.chunk_size = batch_size * count
        iterator = iter(probe)
        while True:
            rows = [next(iterator) for _ in range(batch_size * count)]
            yield self.data_collator(rows[index::count])

    def branch_batches(self, mixture: Mixture, start_sample: int | None = None):
        """This process's micro-batches of the run's own stream continued on ``mixture`` (for branches).

        The stream is the training interleaver's — its seed, weight schedule and per-domain positions —
        up to global sample ``start_sample`` (default: the first sample after the optimizer steps done),
        with ``mixture`` from there on: what training would read had it decided ``mixture`` there.  Every
        process reads each global micro-batch and keeps its slice, as training does.
        """
        start = self.state.global_step * self.samples_per_step if start_sample is None else int(start_sample)
        main = self.interleaver
        state = main.state_dict()
        # Changes already scheduled past the branch point do not belong to the branch's stream.
        state["schedule"] = [entry for entry in state["schedule"] if entry[0] <= start * main.segments_per_block]
        stream = Interleaver(
            self.sources, main.weights_at(start), seed=main.seed, max_repetitions=main.max_repetitions,
            on_exhausted=main.on_exhausted, segments_per_block=main.segments_per_block, shuffle=main.shuffle,
        )
        stream.load_state_dict(state)
        stream.set_weights(Mixture(mixture, domains=self.domains.names), from_sample=start)
        stream.start_sample, stream.chunk_size, stream.log_exhaustion = start, self.global_micro_batch, False
        per_process, rank = self._train_batch_size, self.args.process_index
        if self.args.accelerator_config.split_batches:
            per_process = self._train_batch_size // self.args.world_size
        rows = iter(stream)
        while True:
            batch = [row for _, row in zip(range(self.global_micro_batch), rows)]
            if len(batch) < self.global_micro_batch:
                return  # every domain ran dry
            yield self.data_collator(batch[rank * per_process : (rank + 1) * per_process])

    def candidate_scores(self, simulator, candidates, metric: str | None = None, limit: int | None = 64,
                         batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """``(C, D)`` decision-split scores of the simulator's interpolated candidates, domains in order."""
        scorer = self.decision_scorer(metric or self.default_score, limit, batch_size,
                                      collective=simulator.collective, bf16=simulator.config.bf16)
        progress = progress and self.is_world_process_zero()
        return simulator.score_candidates(candidates, scorer, progress=progress)

    # -- records --------------------------------------------------------------------------------
    def record_mixture(self, mixture: Mixture, step: int, kind: str, **details: Any) -> None:
        """Append a decision record (the ``mixtures.json`` schema), write the file, log a decision's summary."""
        self.history.append(
            {
                "step": self.step_offset + step,
                "stage_step": step,
                "stage": self.stage,
                "strategy": self.strategy.name,
                "kind": kind,
                "weights": mixture.to_dict(),
                **details,
            }
        )
        if self.is_world_process_zero():
            write_json_atomic(os.path.join(self.records_dir, MIXTURES_FILE), self.history)
        if kind in ("decision", "kept"):  # to every report_to tracker, at this step
            # Trainer.log clears control.should_log: a decision logged from on_step_end must not
            # swallow the step's own training log.
            should_log = self.control.should_log
            self.log(decision_scalars(self.history[-1]))
            self.control.should_log = should_log

    def record_event(self, kind: str, step: int, **details: Any) -> None:
        """Record a non-decision event (a domain running dry) in ``mixtures.json``."""
        current = self.interleaver.weights_at((step + 1) * self.samples_per_step)
        self.record_mixture(current, step, kind=kind, **details)

    def state_payload(self, consumed: int) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "consumed_samples": consumed,
            "samples_per_step": self.samples_per_step,
            "interleaver": self.interleaver.state_dict(),
            "strategy": {"name": self.strategy.name, "state": self.strategy.state_dict()},
            "history": self.history,
            "ledger": self.ledger.state_dict(),
        }

    def write_state(self, checkpoint: str, consumed: int) -> None:
        write_json_atomic(os.path.join(checkpoint, STATE_FILE), self.state_payload(consumed))

    def write_outputs(self, final: bool = False) -> None:
        """Write ``mixtures.json`` and ``compute.json`` to ``records_dir`` (and at the end ``mixture.json`` and the
        plots to ``output_dir``)."""
        out = self.args.output_dir
        write_json_atomic(os.path.join(self.records_dir, MIXTURES_FILE), self.history)
        self.ledger.save(self.records_dir)
        if final:
            # The mixture in force at the end, loadable with Mixture.from_pretrained(output_dir).
            self.interleaver.weights_at(self.state.max_steps * self.samples_per_step).save(
                os.path.join(out, MIXTURE_FILE), strategy=self.strategy.name, stage=self.stage
            )
            if not self.args.write_plots:
                return
            try:
                from .plots import plot_candidates, plot_law_fit, plot_weights

                end = self.step_offset + self.state.max_steps
                plot_weights(self.history, os.path.join(out, "weights.png"), end_step=end)
                plot_law_fit(self.history, os.path.join(out, "law_fit.png"))
                plot_candidates(self.history, os.path.join(out, "candidates.png"))
            except ImportError as error:
                logger.warning("No weights plot (%s); pip install matplotlib to get one.", error)

    # -- Models handed on ------------------------------------------------------------------------
    def save_final_model(self, output_dir: str) -> None:
        """Write the model (full weights, loadable with ``from_pretrained``) and tokenizer to ``output_dir``.

        Every process must call it: under FSDP and DeepSpeed gathering the weights is collective.  Unlike
        ``Trainer.save_model``, it also writes the weights when FSDP checkpoints use ``SHARDED_STATE_DICT``
        (``accelerate_configs/fsdp.yaml``), where ``save_model`` writes nothing.
        """
        # Written under another name and renamed when complete: a recipe resumed after a crash reuses a
        # folder that exists (recipes/midtrain.py's pretrained base), so it must never be half written.
        partial = os.path.normpath(output_dir) + ".partial"
        if self.args.should_save and os.path.isdir(partial):
            shutil.rmtree(partial)
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if self.is_fsdp_enabled and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
            state_dict = self.accelerator.get_state_dict(self.model)  # full weights, on the main process
            if self.args.should_save:
                self.accelerator.unwrap_model(self.model).save_pretrained(partial, state_dict=state_dict)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(partial)
        else:
            self.save_model(partial)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            if os.path.isdir(output_dir):
                shutil.rmtree(output_dir)
            os.replace(partial, output_dir)
        self.accelerator.wait_for_everyone()

    def model_for_next_trainer(self, output_dir: str):
        """Save the model to ``output_dir`` and return the model that the next Trainer in this process starts from.

        Every process must call it, after this trainer's last use (continual stages build one trainer per
        stage).  Without FSDP or DeepSpeed that is ``self.model`` itself.  Under them it is a fresh copy
        loaded from ``output_dir``: a model that Accelerators have sharded (FSDP2) or hooked (DeepSpeed)
        before is not reliably prepared again (on 2 GPUs, the third FSDP trainer of one model failed to
        checkpoint its optimizer).  accelerate refuses a second DeepSpeed Accelerator in a process, so
        under DeepSpeed its shared state is reset here (the process group stays).
        """
        self.save_final_model(output_dir)
        if not (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            return self.model
        from transformers import AutoModelForCausalLM

        # In the dtype the trainer held the weights in (FSDP2: fp32 shards under bf16 mixed precision;
        # DeepSpeed: its bf16 module), not the saved config's: on 2 GPUs FSDP's processes otherwise
        # disagreed on the dtype of the loaded weights and the first backward failed.
        dtype = next(self.model.parameters()).dtype
        model = AutoModelForCausalLM.from_pretrained(output_dir, dtype=dtype)
        if self.is_deepspeed_enabled:
            # Not under FSDP: there a reset state comes back without its FSDP plugin.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=False)
        return model

    # -- Trainer overrides ----------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``; ``resume_from_checkpoint`` may also be ``"true"`` (the newest complete checkpoint).

        A checkpoint saved at ``max_steps`` (a finished run, or a stage whose successor never started)
        trains nothing more: its model and state are loaded and the run ends there.
        """
        checkpoint = resolve_resume(self.args.output_dir, resume_from_checkpoint)
        if checkpoint:
            self._restore(read_state(checkpoint), checkpoint)
            if saved_step(checkpoint) >= self.args.max_steps:
                return self._finished_at(checkpoint)
        return super().train(checkpoint, *args, **kwargs)

    def _finished_at(self, checkpoint: str) -> TrainOutput:
        # Trainer would start another epoch and train one step past max_steps before stopping.
        from transformers.trainer_callback import TrainerState

        self.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_FILE))
        self._load_from_checkpoint(checkpoint)
        logger.warning("%s was saved at step %d of max_steps=%d: nothing is left to train; its model is loaded.",
                       checkpoint, self.state.global_step, self.args.max_steps)
        if self.is_world_process_zero():
            self.write_outputs(final=True)
        losses = [log["loss"] for log in self.state.log_history if "loss" in log]
        return TrainOutput(self.state.global_step, float(np.mean(losses)) if losses else float("nan"), {})

    def _restore(self, state: Mapping[str, Any], checkpoint: str | None = None) -> None:
        check_resume(state, self.strategy.name, self.samples_per_step, checkpoint)
        self.interleaver.load_state_dict(state["interleaver"])
        self.strategy.load_state_dict(state["strategy"]["state"])
        self.history[:] = state["history"]
        self.ledger.load_state_dict(state["ledger"])

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if isinstance(eval_dataset, str) and eval_dataset in self.eval_token_counts:
            tokens = self.eval_token_counts[eval_dataset]
            self.ledger.add_forward("eval", self.num_params or non_embedding_parameters(self.model), tokens)
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if eval_dataset is None and isinstance(self.eval_dataset, dict):
            aggregate = self.aggregate_eval(metrics, metric_key_prefix)
            self.log(aggregate)
            metrics.update(aggregate)
            if self.is_world_process_zero():
                self.ledger.save(self.records_dir)  # also counts an evaluation run after training ended
        return metrics

    def aggregate_eval(self, metrics: Mapping[str, float], prefix: str = "eval") -> dict[str, float]:
        """Token-weighted ``<prefix>_loss`` over all domains, the plain average, and perplexities."""
        losses = {name: metrics.get(f"{prefix}_{name}_loss") for name in self.eval_token_counts}
        losses = {name: value for name, value in losses.items() if value is not None}
        if not losses:
            return {}
        # Weights: tokens that carry a loss (SFT: completion tokens; pretraining: every block token).
        weights = getattr(self, "eval_loss_weights", None) or self.eval_token_counts
        tokens = {name: weights[name] for name in losses}
        weighted = sum(losses[n] * tokens[n] for n in losses) / sum(tokens.values())
        out = {f"{prefix}_loss": weighted, f"{prefix}_avg_loss": float(np.mean(list(losses.values())))}
        out[f"{prefix}_avg_ppl"] = float(np.mean([math.exp(min(v, 50.0)) for v in losses.values()]))
        for name, value in losses.items():
            out[f"{prefix}_{name}_ppl"] = math.exp(min(value, 50.0))
        return out

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """Trainer's (or TRL's) model card, then the mixing: final mixture, strategy and settings,
        per-domain eval, compute by kind and the plots, with the ``hf_datamix`` tags.

        ``push_to_hub`` calls it before its one upload of ``output_dir``, so the pushed card keeps
        Trainer's metadata and sections (base model, hyperparameters, framework versions).
        """
        super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            from .hub import add_mixing_to_card

            repo_id = self.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
            if add_mixing_to_card(self.args.output_dir, repo_id, settings=self.strategy.settings()) is None:
                logger.warning("%s holds no %s yet (train first): the model card has no mixing section.",
                               self.args.output_dir, MIXTURES_FILE)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs or "learning_rate" in logs:
            weights = self.interleaver.weights_at(self.state.global_step * self.samples_per_step)
            logs.update({f"mix/{name}": weight for name, weight in weights.items()})
        super().log(logs, *args, **kwargs)


class DataMixTrainer(DataMixMixin, Trainer):
    """A Trainer that trains on a mixture of domains chosen by a strategy.

    Args:
        model: the causal LM to train.
        args: :class:`~hf_datamix.DataMixArguments`.
        domains: the :class:`~hf_datamix.DomainSet` to mix.
        strategy: a :class:`~hf_datamix.Strategy` or a registered name (default: ``args.strategy``).
        processing_class: the tokenizer (needed to pack the domains).
        stage, update, previous_mixture: position in a continual run (see ``recipes/midtrain.py``).
        history, ledger: shared across the stages of a continual run (new ones by default).
        step_offset: steps of earlier stages, so ``mixtures.json`` steps are global.
        **kwargs: passed to ``transformers.Trainer`` (callbacks, optimizers, ...).
    """

    def __init__(
        self,
        model=None,
        args: DataMixArguments | None = None,
        domains: DomainSet | None = None,
        strategy: Strategy | str | None = None,
        processing_class=None,
        *,
        stage: int = 0,
        update: DomainUpdate | None = None,
        previous_mixture: Mixture | None = None,
        history: list | None = None,
        ledger: ComputeLedger | None = None,
        step_offset: int = 0,
        **kwargs: Any,
    ):
        self._setup_mixing(
            model, args, domains, strategy, processing_class, stage, update, previous_mixture, history, ledger,
            step_offset, kwargs,
        )
        if self.strategy.learner(self) is not None:
            raise ValueError(
                f"strategy {self.strategy.name!r} changes how the model learns (a learner), which only "
                "DataMixSFTTrainer supports; use recipes/instruct.py or DataMixSFTTrainer."
            )
        self.block_size = args.block_size
        with args.main_process_first(desc="packing domains"):
            packed = pack_domains(domains, processing_class, args)
        self.eval_blocks, self.decision_blocks = packed.eval_blocks, packed.decision_blocks
        self.eval_token_counts = {name: int(blocks.size) for name, blocks in self.eval_blocks.items()}
        self._make_interleaver(args, packed.sources)
        kwargs.setdefault("data_collator", default_data_collator)
        super().__init__(
            model=model,
            args=args,
            train_dataset=self.interleaver,
            eval_dataset={name: BlockDataset(blocks) for name, blocks in self.eval_blocks.items()},
            processing_class=processing_class,
            **kwargs,
        )
        self._attach_mixing_callback()

    @property
    def tokens_per_sample(self) -> int:
        return self.block_size

    def step_train_tokens(self) -> int:
        """Every sample is one full block."""
        return self.samples_per_step * self.block_size

    def decision_scorer(self, metric: str = "loss", limit: int | None = None, batch_size: int = 16,
                        collective: bool = False, bf16: bool = False) -> BlockLossScorer:
        """The held-out loss of the first ``limit`` decision blocks per domain (never the eval blocks).

        ``collective``: every process calls it together on a shared or sharded model.  Counted in the ledger.
        """
        if metric != "loss":
            raise ValueError(f"DataMixTrainer scores decisions by 'loss' only, got score={metric!r}.")
        blocks = {name: self.decision_blocks[name][:limit] for name in self.domains.names}
        return BlockLossScorer(blocks, batch_size, self.args.device, bf16=bf16, collective=collective,
                               ledger=self.ledger, num_parameters=self.num_params)
