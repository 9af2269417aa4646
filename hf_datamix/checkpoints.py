"""The checkpoints a run can resume from: which are complete, which is the newest, what they hold.

Trainer writes a checkpoint folder file by file (model, optimizer, RNG, ``trainer_state.json``);
the mixing callback writes ``datamix_state.json`` last, and only then are older checkpoints
rotated away.  A folder without a readable ``datamix_state.json`` is therefore a save that was cut
short (a crash, a ``kill -9``): it is never taken as the newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re

from .constants import STATE_FILE, TRAINER_STATE_FILE


logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_problem(checkpoint: str) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, in a few words; None when it is complete."""
    if not os.path.isdir(checkpoint):
        return "it does not exist" if not os.path.exists(checkpoint) else "it is not a folder"
    for name in (TRAINER_STATE_FILE, STATE_FILE):
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            return f"it has no {name} (its save was cut short, or another program wrote it)"
        try:
            with open(path, encoding="utf-8") as handle:
                json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return f"its {name} is truncated or corrupt ({error})"
    return None


def list_checkpoints(folder: str) -> list[str]:
    """``folder``'s ``checkpoint-<step>`` folders, oldest first (complete or not)."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := _CHECKPOINT.match(name))]
    return [os.path.join(folder, name) for _, name in sorted(found)]


def last_checkpoint(folder: str) -> str | None:
    """The newest complete checkpoint in ``folder`` (incomplete newer ones are skipped with a warning)."""
    for checkpoint in reversed(list_checkpoints(folder)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        logger.warning("Skipping checkpoint %s: %s; taking the one before it.", checkpoint, problem)
    return None


def wants_last(value) -> bool:
    """True for ``resume_from_checkpoint`` values that mean "the newest checkpoint" (True, "true")."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def resolve_resume(output_dir: str, value) -> str | None:
    """The checkpoint folder a ``resume_from_checkpoint`` value names: a folder, the newest (True), or None.

    Raises ``ValueError`` naming the value and what to do when there is nothing usable to resume from.
    """
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false", "none")):
        return None
    if wants_last(value):
        checkpoint = last_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(
                f"resume_from_checkpoint=true but {output_dir} holds no complete checkpoint"
                f"{' (only incomplete ones)' if list_checkpoints(output_dir) else ''}; "
                "train from the start (leave --resume_from_checkpoint out) or give a checkpoint folder."
            )
        return checkpoint
    checkpoint = os.fspath(value)
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        parent = os.path.dirname(os.path.abspath(checkpoint))
        usable = [c for c in list_checkpoints(parent) if checkpoint_problem(c) is None]
        hint = f"complete checkpoints next to it: {usable}" if usable else "no complete checkpoint is next to it"
        raise ValueError(
            f"resume_from_checkpoint={checkpoint!r} cannot be resumed from: {problem}; {hint}. "
            "Give one of those, or --resume_from_checkpoint true for the newest."
        )
    return checkpoint


def read_state(checkpoint: str) -> dict:
    """The mixing state saved in a checkpoint folder (an error naming the folder and the fix otherwise)."""
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise ValueError(
            f"checkpoint {checkpoint!r} cannot be resumed from: {problem}. Resume from an earlier checkpoint "
            "of the run (--resume_from_checkpoint true takes the newest complete one)."
        )
    with open(os.path.join(checkpoint, STATE_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def saved_step(checkpoint: str) -> int:
    """The optimizer step a checkpoint was saved at (from its ``trainer_state.json``)."""
    with open(os.path.join(checkpoint, TRAINER_STATE_FILE), encoding="utf-8") as handle:
        return int(json.load(handle)["global_step"])


def samples_per_step(args) -> int:
    """Global samples per optimizer step under training arguments ``args`` (before any trainer exists)."""
    processes = 1 if args.accelerator_config.split_batches else args.world_size
    return args.train_batch_size * processes * args.gradient_accumulation_steps


def check_resume(state: dict, strategy: str, samples: int, checkpoint: str) -> None:
    """Refuse, with the setting to change, a resume whose strategy or global batch differs from the checkpoint's."""
    if state["strategy"]["name"] != strategy:
        raise ValueError(
            f"checkpoint {checkpoint} was written by strategy {state['strategy']['name']!r}, this run uses "
            f"{strategy!r}; resume with --strategy {state['strategy']['name']}."
        )
    if state["samples_per_step"] != samples:
        raise ValueError(
            f"checkpoint {checkpoint} used {state['samples_per_step']} samples per optimizer step, this run uses "
            f"{samples}; keep per_device_train_batch_size x gradient_accumulation_steps x processes equal when "
            "resuming."
        )
