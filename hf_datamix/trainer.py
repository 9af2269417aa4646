"""DataMixTrainer: a ``transformers.Trainer`` whose training data come from a mixing interleaver.

It overrides as little as possible: the training dataset is the :class:`Interleaver`, the eval
dataset a dict of per-domain block sets (so Trainer reports ``eval_<domain>_loss``), and the mixing
itself (decisions, records, output files, the mixing state in checkpoints) is done by
:class:`~hf_datamix.callbacks.MixingController`.  Overrides: ``get_train_dataloader``
(to tell the interleaver how batches are cut across ranks and workers), ``evaluate`` (aggregate
losses and the ledger), ``log`` (``mix/<domain>`` weights), ``train`` (restore the mixing state
before the dataloader starts), ``create_model_card`` (Trainer's card plus the mixing sections).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from accelerate.data_loader import DataLoaderDispatcher
from transformers import Trainer, default_data_collator
from transformers.trainer_utils import TrainOutput

from .callbacks import MixingController
from .checkpoints import read_state, resolve_resume, saved_step
from .compute import ComputeLedger, non_embedding_parameters
from .config import DataMixArguments
from .constants import MIXTURES_FILE, TRAINER_STATE_FILE
from .data.blocks import BlockDataset, pack_domains
from .data.interleaver import Interleaver
from .domains import DomainSet, DomainUpdate
from .mixture import Mixture
from .simulate.scoring import BlockLossScorer
from .strategies.base import Strategy
from .strategies.registry import create_strategy


logger = logging.getLogger(__name__)


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
        # Let gloo's run loops release the work they have finished (an exiting peer ends the last one) before
        # the backend is destroyed: each release drops tensors and needs the GIL, and the destructor below runs
        # under the GIL and waits for those threads, so a release caught in between deadlocked (seen once in a
        # 2-process CPU test: main thread in ~ProcessGroupGloo, pt_gloo_runloop in ~AsyncAllgatherWork waiting
        # for the GIL).  A sleep releases the GIL.
        time.sleep(0.25)
        # The backend (and its threads) lives on in the trainer's DDP model, which a reference cycle
        # (trainer <-> callback) keeps until the interpreter's own last collection: collect it now.
        import gc

        gc.collect()

    atexit.register(destroy)
    _EXIT_HOOK.append(destroy)


class DataMixMixin:
    """What :class:`DataMixTrainer` and :class:`~hf_datamix.sft.DataMixSFTTrainer` share: the mixing stream,
    its batch geometry, the data and scoring handed to strategies and simulators, evaluation, logging,
    and the :class:`~hf_datamix.callbacks.MixingController` (``self.mixing``) that runs the strategy.

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
        if not isinstance(strategy, Strategy):
            name = strategy or args.strategy
            # args.strategy_args belong to args.strategy, not to another strategy named here.
            strategy = create_strategy(name, args.strategy_args if name == args.strategy else None)
        # Every setting that can be wrong fails here, before any domain is read or packed.
        strategy.check(domains)
        domains.check()
        init_mixture = self.check_init_mixture(args.init_mixture, domains) if args.init_mixture else None
        self.domains = domains
        self.num_params = non_embedding_parameters(model) if model is not None else 0
        self.mixing = MixingController(
            self,
            args,
            strategy,
            stage=stage,
            update=update,
            previous_mixture=previous_mixture,
            history=history,
            ledger=ledger,
            step_offset=step_offset,
            init_mixture=init_mixture,
            save_total_limit=self.save_total_limit,
        )

    # The mixing state lives in the controller; these are the trainer's views of it.
    strategy = property(lambda self: self.mixing.strategy, doc="The running :class:`~hf_datamix.Strategy`.")
    history = property(lambda self: self.mixing.history, doc="The decision records (``mixtures.json``).")
    ledger = property(lambda self: self.mixing.ledger, doc="The run's :class:`~hf_datamix.ComputeLedger`.")
    stage = property(lambda self: self.mixing.stage, doc="Index of the stage in a continual run.")

    def _make_interleaver(self, args, sources: Mapping[str, Any]) -> Interleaver:
        """The training stream over ``sources``, starting from the init mixture or the strategy's."""
        self.sources = dict(sources)
        self.token_counts = {name: source.num_tokens for name, source in self.sources.items()}
        self.interleaver = Interleaver(
            self.sources,
            self.mixing.initial_mixture(self.domains),
            seed=args.seed if args.mixing_seed is None else args.mixing_seed,
            max_repetitions=args.max_repetitions,
            on_exhausted=args.on_exhausted,
            segments_per_block=args.segments_per_block,
        )
        self.interleaver.log_exhaustion = False
        return self.interleaver

    def _attach_mixing_callback(self) -> None:
        """After ``Trainer.__init__``: the mixing controller, the log levels and the model's Hub tags."""
        self.add_callback(self.mixing)
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

    # -- data and scoring handed to strategies and simulators -----------------------------------
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

    def branch_stream(
        self, mixture: Mixture, start_sample: int | None = None, from_sample: int | None = None
    ) -> Interleaver:
        """The run's own stream continued on ``mixture`` (for branches), read from global sample ``start_sample``.

        The stream is the training interleaver's — its seed, weight schedule and per-domain positions —
        up to ``start_sample`` (default: the first sample after the optimizer steps done), with ``mixture``
        from global sample ``from_sample`` on (default: ``start_sample``): what training would read had it
        decided ``mixture`` there.  A decision taken after optimizer step ``t`` applies from the first sample
        of step ``t + 2`` (:mod:`hf_datamix.callbacks`): ``from_sample = (t + 1) * samples_per_step``.
        """
        start = self.state.global_step * self.samples_per_step if start_sample is None else int(start_sample)
        switch = start if from_sample is None else int(from_sample)
        if switch < start:
            raise ValueError(
                f"from_sample={switch} is before the branch's first sample {start}: a branch cannot change "
                "the mixture of samples it does not read; give from_sample >= start_sample."
            )
        main = self.interleaver
        state = main.state_dict()
        # Changes already scheduled past the branch point do not belong to the branch's stream.
        state["schedule"] = [entry for entry in state["schedule"] if entry[0] <= start * main.segments_per_block]
        stream = Interleaver(
            self.sources,
            main.weights_at(start),
            seed=main.seed,
            max_repetitions=main.max_repetitions,
            on_exhausted=main.on_exhausted,
            segments_per_block=main.segments_per_block,
            shuffle=main.shuffle,
        )
        stream.load_state_dict(state)
        stream.set_weights(Mixture(mixture, domains=self.domains.names), from_sample=switch)
        stream.start_sample, stream.chunk_size, stream.log_exhaustion = start, self.global_micro_batch, False
        return stream

    def branch_batches(self, mixture: Mixture, start_sample: int | None = None, from_sample: int | None = None):
        """This process's micro-batches of :meth:`branch_stream` (same arguments). Every process reads each
        global micro-batch and keeps its slice, as training does."""
        stream = self.branch_stream(mixture, start_sample, from_sample)
        per_process, rank = self._train_batch_size, self.args.process_index
        if self.args.accelerator_config.split_batches:
            per_process = self._train_batch_size // self.args.world_size
        rows = iter(stream)
        while True:
            batch = [row for _, row in zip(range(self.global_micro_batch), rows)]
            if len(batch) < self.global_micro_batch:
                return  # every domain ran dry
            yield self.data_collator(batch[rank * per_process : (rank + 1) * per_process])

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
            self.mixing.restore(read_state(checkpoint), checkpoint)
            if saved_step(checkpoint) >= self.args.max_steps:
                return self._finished_at(checkpoint)
        return super().train(checkpoint, *args, **kwargs)

    def _finished_at(self, checkpoint: str) -> TrainOutput:
        # Trainer would start another epoch and train one step past max_steps before stopping.
        from transformers.trainer_callback import TrainerState

        self.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_FILE))
        self._load_from_checkpoint(checkpoint)
        logger.warning(
            "%s was saved at step %d of max_steps=%d: nothing is left to train; its model is loaded.",
            checkpoint,
            self.state.global_step,
            self.args.max_steps,
        )
        if self.is_world_process_zero():
            self.mixing.write_outputs(final=True)
        losses = [log["loss"] for log in self.state.log_history if "loss" in log]
        return TrainOutput(self.state.global_step, float(np.mean(losses)) if losses else float("nan"), {})

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
                self.ledger.save(self.mixing.records_dir)  # also counts an evaluation run after training ended
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
            from .card import add_mixing_to_card

            repo_id = self.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
            if add_mixing_to_card(self.args.output_dir, repo_id, settings=self.strategy.settings()) is None:
                logger.warning(
                    "%s holds no %s yet (train first): the model card has no mixing section.",
                    self.args.output_dir,
                    MIXTURES_FILE,
                )

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
            model,
            args,
            domains,
            strategy,
            processing_class,
            stage,
            update,
            previous_mixture,
            history,
            ledger,
            step_offset,
            kwargs,
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

    def decision_scorer(
        self,
        metric: str = "loss",
        limit: int | None = None,
        batch_size: int = 16,
        collective: bool = False,
        bf16: bool = False,
    ) -> BlockLossScorer:
        """The held-out loss of the first ``limit`` decision blocks per domain (never the eval blocks).

        ``collective``: every process calls it together on a shared or sharded model.  Counted in the ledger.
        """
        if metric != "loss":
            raise ValueError(f"DataMixTrainer scores decisions by 'loss' only, got score={metric!r}.")
        blocks = {name: self.decision_blocks[name][:limit] for name in self.domains.names}
        return BlockLossScorer(
            blocks,
            batch_size,
            self.args.device,
            bf16=bf16,
            collective=collective,
            ledger=self.ledger,
            num_parameters=self.num_params,
        )
