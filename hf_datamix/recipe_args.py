"""What the recipes share: YAML + command-line parsing, the model/tokenizer and the domains to use.

One configuration path: :func:`parse_args` (on TRL's ``TrlParser``, an ``HfArgumentParser``) turns
``--config FILE.yaml`` and the command line into the recipe's dataclasses, with the chosen strategy's
settings (and its simulator's) as flags of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
from trl import TrlParser

from .domains import DomainSet, DomainSpec
from .models import PRESETS, llama_config


@dataclass
class RunArguments:
    """Model, tokenizer and domains of a recipe run (``--config FILE.yaml`` gives any flag of the recipe).

    Parameters:
        model_name_or_path: a Hub id or local folder of a causal LM; None: a random-init Llama.
        model_preset: size of the random-init Llama when no model is given.
        tokenizer_name_or_path: tokenizer (default: the model's, or the embedded one).
        domains: ``{name: DomainSpec fields}`` (train/eval files, Hub ids...); None: the embedded corpus.
        initial_domains: domains of the first stage (comma list).
        added_domains: domains added by later stages: ``a,b;c`` adds a and b in stage 1, c in stage 2.
        pretrain_steps: when no model is given, steps to pretrain it on ``initial_domains`` first.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "Hub id or folder of a causal LM."})
    model_preset: str = field(default="tiny", metadata={"help": f"Random-init Llama size: {sorted(PRESETS)}."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: model's/embedded)."}
    )
    domains: dict | str | None = field(
        default=None,
        metadata={"help": "Domains as {name: {train:..., eval:...}} (YAML) or a YAML file; default embedded."},
    )
    initial_domains: str | None = field(default=None, metadata={"help": "Comma list of first-stage domains."})
    added_domains: str | None = field(default=None, metadata={"help": "Domains added per stage: 'a,b;c'."})
    pretrain_steps: int = field(default=0, metadata={"help": "Pretraining steps when no model is given."})
    pretrain_learning_rate: float | None = field(default=None, metadata={"help": "LR of that pretraining."})


class RecipeParser(TrlParser):
    """TRL's parser (dataclasses as flags, a ``--config`` YAML whose values the command line overrides) with
    errors that name the flag, its value and its help (which states the allowed values), raised as
    ``ValueError`` so a recipe prints them as one line (:func:`run_recipe`).

    ``null``/``none`` give None to an optional setting; a mapping setting takes a JSON object.
    """

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, **kwargs)
        self._helps = {f.name: f.metadata.get("help", "") for dtype in self.dataclass_types for f in fields(dtype)}
        optional = {f.name for dtype in self.dataclass_types for f in fields(dtype) if _is_optional(f.type)}
        for action in self._actions:
            if action.help:  # a setting's help may say "10 % of the run": argparse would read "% o" as a format
                action.help = re.sub(r"%(?!\()", "%%", action.help)
            if action.dest == "strategy_args":
                action.type = _refuse_strategy_args
            elif action.type is dict:
                action.type = _json_object
            elif action.dest in optional and action.type in (int, float, str):
                action.type = _nullable(action.type)

    def error(self, message: str):
        flag = re.search(r"argument (--\w+)", message)
        about = self._helps.get(flag.group(1)[2:], "") if flag else ""
        raise ValueError(message + (f" ({flag.group(1)}: {about})" if about else ""))


def _is_optional(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "None" in text or "Optional" in text


def _nullable(kind):
    def convert(text: str):
        return None if text.strip().lower() in ("null", "none") else kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its message ("invalid int value")
    return convert


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return value


def _refuse_strategy_args(text: str):
    raise argparse.ArgumentTypeError(
        f"{text!r}: the strategy's settings are flags of their own now (e.g. --probe_steps 25 instead of "
        "--strategy_args probe_steps=25); --strategy NAME --help lists them"
    )


def _flag(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name`` on the command line (``--name X`` or ``--name=X``), last one winning."""
    found = None
    for i, item in enumerate(argv):
        if item == f"--{name}" and i + 1 < len(argv):
            found = argv[i + 1]
        elif item.startswith(f"--{name}="):
            found = item.split("=", 1)[1]
    return found


def read_config(path: str) -> dict[str, Any]:
    """The settings of a ``--config`` YAML file (a mapping), with errors naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path}: no such file.")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path}: not valid YAML ({error}).") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: holds a {type(values).__name__}; it must map settings to values.")
    if "strategy_args" in values:
        raise ValueError(
            f"{path}: strategy_args: put the strategy's settings at the top level of the file "
            "(probe_steps: 25), as on the command line (--probe_steps 25)."
        )
    return values


def strategy_settings_classes(strategy: str, simulator: str | None = None) -> list[type]:
    """The dataclasses of ``strategy``'s settings (and its simulator's), named groups of ``--help``."""
    from .strategies.registry import get_strategy_class

    strategy_class = get_strategy_class(strategy)
    classes = strategy_class.settings_classes(simulator)
    titles = [f"{strategy} settings"]
    if len(classes) > 1:  # a strategy composed with a simulator
        titles.append(f"{simulator or strategy_class.default_simulator()} simulator settings")
    for cls, title in zip(classes, titles):
        cls._argument_group_name = title  # HfArgumentParser's name of the group of these flags in --help
    return classes


def parse_args(dataclass_types: Sequence[type], default_config: str | None = None, argv: Sequence[str] | None = None):
    """Parse ``--config FILE.yaml`` (or ``default_config``) then the command line, which wins.

    In two passes: the strategy (``--strategy``, else the file's, else the default) and its simulator are
    read first, then their settings dataclasses join ``dataclass_types`` as flags (so ``--strategy op_mix
    --help`` lists op_mix's and the simulator's settings, and the file's keys are checked against them).
    The parsed settings land in ``DataMixArguments.strategy_args``; a file's settings of another strategy
    than the command line's are dropped.  Returns one object per ``dataclass_types``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = default_config
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path.")
        config_path = argv[index + 1]
        del argv[index : index + 2]
    values = read_config(config_path) if config_path else {}
    from .config import DataMixArguments

    mixing = [i for i, dtype in enumerate(dataclass_types) if issubclass(dtype, DataMixArguments)]
    extra: list[type] = []
    if mixing:
        default = dataclass_types[mixing[0]].__dataclass_fields__["strategy"].default
        in_file = values.get("strategy", default)
        strategy, simulator = _flag(argv, "strategy") or in_file, _flag(argv, "simulator")
        if strategy != in_file or (simulator and simulator != values.get("simulator")):
            # The file's settings belong to the file's strategy (and simulator), not to the ones named here.
            own = strategy_settings_classes(in_file, values.get("simulator"))
            for cls in own if strategy != in_file else own[1:]:
                for name in cls.__dataclass_fields__:
                    values.pop(name, None)
        extra = strategy_settings_classes(strategy, simulator or values.get("simulator"))
        _check_clashes(dataclass_types, extra)
    parser = RecipeParser([*dataclass_types, *extra])
    known = sorted(action.dest for action in parser._actions if action.dest != "help")
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = "; ".join(
            f"{k}: did you mean {c[0]}?" for k in unknown if (c := difflib.get_close_matches(k, known, n=1))
        )
        raise ValueError(
            f"{config_path}: unknown setting(s) {unknown}{' (' + hints + ')' if hints else ''}; "
            "the settings are the recipe's flags without the leading -- (--help lists them)."
        )
    parser.set_defaults_with_config(**values)
    *outputs, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        flags = [item for item in remaining if item.startswith("--")] or remaining
        hints = "; ".join(
            f"{f}: did you mean --{c[0]}?"
            for f in flags
            if (c := difflib.get_close_matches(f.lstrip("-").split("=")[0], known, n=1))
        )
        raise ValueError(
            f"unknown flag(s) {flags}{' (' + hints + ')' if hints else ''}; --help lists the flags "
            "(with --strategy NAME, that strategy's settings too)."
        )
    base = outputs[: len(dataclass_types)]
    if mixing:
        settings = {k: v for obj in outputs[len(dataclass_types) :] for k, v in dataclasses.asdict(obj).items()}
        base[mixing[0]].strategy_args = settings
    return base


def _check_clashes(dataclass_types: Sequence[type], extra: Sequence[type]) -> None:
    """A strategy's or simulator's setting named like a flag of the recipe cannot be parsed: say which."""
    taken = {name: dtype.__name__ for dtype in dataclass_types for name in dtype.__dataclass_fields__}
    for cls in extra:
        clash = sorted(set(cls.__dataclass_fields__) & set(taken))
        if clash:
            raise ValueError(
                f"{cls.__name__}'s setting(s) {clash} are named like flags of "
                f"{sorted({taken[n] for n in clash})}; rename them (settings are flags of the recipes)."
            )
        taken.update(dict.fromkeys(cls.__dataclass_fields__, cls.__name__))


def setup_logging() -> None:
    """Warnings of every library, plus hf_datamix's INFO lines: one per decision (the new mixture and its cost)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_datamix").setLevel(logging.INFO)


def run_recipe(main: Callable[[], Any]) -> None:
    """Run a recipe's ``main``; a problem with its input is printed once, as one line, with exit status 2.

    Input problems are the ``ValueError``/``FileNotFoundError`` the library raises with the field, the
    value and the fix, a Hub failure, and domains running dry with ``on_exhausted=error``: their
    tracebacks would only bury the message (``accelerate launch`` adds its own; ``-q`` leaves it out).
    Every process checks the same input, so the main process's message is everyone's and the others
    stay silent.  ``HF_DATAMIX_TRACEBACK=1`` keeps the tracebacks.
    """
    from .data.interleaver import DomainsExhausted
    from .hub import HubError

    try:
        main()
    except (ValueError, FileNotFoundError, HubError, DomainsExhausted) as error:
        if os.environ.get("HF_DATAMIX_TRACEBACK", "").lower() in ("1", "true", "yes"):
            raise
        if os.environ.get("RANK", "0") == "0":
            print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def stage_groups(text: str | None) -> list[list[str]]:
    """``'a,b;c'`` -> ``[['a', 'b'], ['c']]``."""
    return [split_list(group) for group in (text or "").split(";") if split_list(group)]


def load_domains(run: RunArguments) -> DomainSet:
    """The DomainSet of the run: the user's domains, or the embedded corpus."""
    spec = run.domains
    if isinstance(spec, str):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"--domains {spec}: no such file; give a YAML file of {{name: {{train: ...}}}}.")
        with open(spec, encoding="utf-8") as handle:
            try:
                spec = yaml.safe_load(handle)
            except yaml.YAMLError as error:
                raise ValueError(f"--domains {run.domains}: not valid YAML ({error}).") from None
        if isinstance(spec, dict) and list(spec) == ["domains"]:
            spec = spec["domains"]  # the same file as a --config `domains:` block (the README's example)
    if spec:
        if not isinstance(spec, dict):
            raise ValueError(f"domains must map names to DomainSpec fields, got {type(spec).__name__}.")
        specs = []
        for name, fields in spec.items():
            if not isinstance(fields, (str, dict)):
                raise ValueError(f"domains.{name}: {fields!r}; give a path or Hub id, or {{train: ..., eval: ...}}.")
            fields = {"train": fields} if isinstance(fields, str) else dict(fields)
            try:
                specs.append(DomainSpec(name=name, **fields))
            except TypeError as error:
                raise ValueError(f"domains.{name}: {error}") from None
        return DomainSet(specs)
    from .data.embedded import embedded_corpus_files

    return DomainSet(
        [DomainSpec(name, train=files["train"], eval=files["eval"]) for name, files in embedded_corpus_files().items()]
    )


def load_tokenizer(run: RunArguments):
    """The run's tokenizer: given, the model's, or the embedded one (which needs no download)."""
    name = run.tokenizer_name_or_path or run.model_name_or_path
    if name:
        tokenizer = AutoTokenizer.from_pretrained(name)
    else:
        from .data.embedded import load_embedded_tokenizer

        tokenizer = load_embedded_tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(run: RunArguments, tokenizer, seed: int = 0, **config_overrides: Any):
    """The given causal LM, or a random-init Llama of ``model_preset`` sized for the tokenizer."""
    if run.model_name_or_path:
        return AutoModelForCausalLM.from_pretrained(run.model_name_or_path)
    import torch

    torch.manual_seed(seed)
    config = llama_config(
        run.model_preset,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **config_overrides,
    )
    return LlamaForCausalLM(config)
