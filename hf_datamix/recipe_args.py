"""What the recipes share: YAML + command-line parsing, the model/tokenizer and the domains to use."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, LlamaForCausalLM

from .domains import DomainSet, DomainSpec
from .models import PRESETS, llama_config


@dataclass
class RunArguments:
    """Model, tokenizer and domains of a recipe run.

    Parameters:
        model_name_or_path: a Hub id or local folder of a causal LM; None: a random-init Llama.
        model_preset: size of the random-init Llama when no model is given.
        tokenizer_name_or_path: tokenizer (default: the model's, or the embedded one).
        domains: ``{name: DomainSpec fields}`` (train/eval files, Hub ids...); None: the embedded corpus.
        initial_domains: domains of the first stage (comma list).
        added_domains: domains added by later stages: ``a,b;c`` adds a and b in stage 1, c in stage 2.
        pretrain_steps: when no model is given, steps to pretrain it on ``initial_domains`` first.
    """

    config: Optional[str] = field(default=None, metadata={"help": "YAML file with any of these arguments."})
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Hub id or folder of a causal LM."})
    model_preset: str = field(default="tiny", metadata={"help": f"Random-init Llama size: {sorted(PRESETS)}."})
    tokenizer_name_or_path: Optional[str] = field(default=None, metadata={"help": "Tokenizer (default: model's/embedded)."})
    domains: Optional[Union[dict, str]] = field(
        default=None, metadata={"help": "Domains as {name: {train:..., eval:...}} (YAML) or a YAML file; default embedded."}
    )
    initial_domains: Optional[str] = field(default=None, metadata={"help": "Comma list of first-stage domains."})
    added_domains: Optional[str] = field(default=None, metadata={"help": "Domains added per stage: 'a,b;c'."})
    pretrain_steps: int = field(default=0, metadata={"help": "Pretraining steps when no model is given."})
    pretrain_learning_rate: Optional[float] = field(default=None, metadata={"help": "LR of that pretraining."})


def parse_args(dataclass_types: Sequence[type], default_config: str | None = None, argv: Sequence[str] | None = None):
    """Parse ``--config FILE.yaml`` (or ``default_config``) then the command line, which wins."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = default_config
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path.")
        config_path = argv[index + 1]
        del argv[index : index + 2]
    parser = HfArgumentParser(dataclass_types)
    if config_path:
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"--config {config_path}: no such file.")
        with open(config_path, encoding="utf-8") as handle:
            try:
                values = yaml.safe_load(handle) or {}
            except yaml.YAMLError as error:
                raise ValueError(f"--config {config_path}: not valid YAML ({error}).") from None
        if not isinstance(values, dict):
            raise ValueError(f"--config {config_path}: holds a {type(values).__name__}; it must map settings to values.")
        known = {f for dtype in dataclass_types for f in dtype.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            import difflib

            close = {k: difflib.get_close_matches(k, sorted(known), n=1) for k in unknown}
            hints = "; ".join(f"{k}: did you mean {c[0]}?" for k, c in close.items() if c)
            raise ValueError(f"{config_path}: unknown setting(s) {unknown}{' (' + hints + ')' if hints else ''}; "
                             "the settings are the recipe's flags without the leading --.")
        # Structured values (dicts) cannot pass through argparse; they are set after parsing.
        structured = {k: v for k, v in values.items() if isinstance(v, (dict, list))}
        if "--strategy" in argv and argv[argv.index("--strategy") + 1 :][:1] != [values.get("strategy")]:
            # The file's strategy_args belong to the file's strategy, not to one named on the command line.
            structured.pop("strategy_args", None)
            values.pop("strategy_args", None)
        parser.set_defaults(**{k: v for k, v in values.items() if k not in structured})
    else:
        structured = {}
    outputs = parser.parse_args_into_dataclasses(args=argv)
    for obj in outputs:
        for key, value in structured.items():
            if key in obj.__dataclass_fields__ and f"--{key}" not in argv:
                setattr(obj, key, value)
                if hasattr(obj, "__post_init__") and key == "strategy_args":
                    from .config import parse_strategy_args

                    obj.strategy_args = parse_strategy_args(value)
    return outputs


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
