"""The model card of a run and the push of a whole run to the Hub.

A trainer's ``push_to_hub`` is Trainer's own (one commit of ``output_dir``), with the mixing sections
added to Trainer's card by :func:`add_mixing_to_card`.  :func:`push_run` pushes a run without its
model, in **one commit**: ``mixtures.json``, ``compute.json``, ``mixture.json``, ``results.json``,
the plots, the probe adapters and a card of the mixing sections alone.  Pushing only reads
``output_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import CommitOperationAdd, ModelCard, ModelCardData

from . import hub
from .constants import MIXTURE_FILE, MIXTURES_FILE, RUN_FILES
from .mixture import Mixture
from .plots import PLOT_TITLES
from .report import average_loss, markdown_table, read_run


ADAPTERS_DIR = "probe_adapters"
CARD_FILE = "README.md"


# -- a whole run ---------------------------------------------------------------------------------
#: Tags of every card that carries a run's mixing sections (plus the strategy's name).
CARD_TAGS = ("hf_datamix", "data-mixing")
MIXING_HEADING = "Data mixing (hf_datamix)"

SECTIONS_TEMPLATE = """
Load the final mixture to seed another run:

```python
from hf_datamix import Mixture
mixture = Mixture.from_pretrained("{repo_id}")
```

or `--init_mixture {repo_id}` on a recipe.

{h} Domains

{domains}

{h} Final mixture

{mixture_table}

{h} Strategy

`{strategy}`; {decisions} decision record(s) in `mixtures.json`.

{settings}

{h} Evaluation

{eval_table}

{h} Compute

{compute_table}
{plots}
{files}
"""


def mixing_sections(
    run: Mapping[str, Any], repo_id: str, settings: Mapping[str, Any] | None = None, level: int = 2
) -> str:
    """Markdown of a run's mixing: final mixture, strategy and settings, per-domain eval, compute, plots.

    ``run`` is :func:`hf_datamix.report.read_run`'s summary; headings are of ``level`` (``##`` by default).
    """
    settings = settings if settings is not None else run["settings"]
    if settings:
        settings_text = markdown_table(["setting", "value"], [[k, f"`{v!r}`"] for k, v in settings.items()])
    else:
        settings_text = (
            "Settings: not recorded in `mixtures.json`." if settings is None else "The strategy has no settings."
        )
    if run["eval_loss"]:
        rows = [
            [d, f"{run['eval_loss'][d]:.4f}", f"{run['eval_ppl'][d]:.2f}"]
            for d in run["domains"]
            if d in run["eval_loss"]
        ]
        eval_table = markdown_table(["domain", "eval loss", "perplexity"], rows) + (
            f"\n\nAverage eval loss: {average_loss(run):.4f}."
        )
    else:
        eval_table = "No evaluation was recorded (set `eval_strategy` to get per-domain eval losses)."
    compute = run["compute"]
    if compute:
        compute_table = (
            markdown_table(
                ["kind", "FLOPs", "share"],
                [
                    [k, f"{v:.4g}", f"{compute['share_by_kind'].get(k, 0.0):.1%}"]
                    for k, v in compute["by_kind"].items()
                ],
            )
            + f"\n\nTotal: {compute['total_flops']:.4g} FLOPs. {compute.get('formula', '')}"
        )
    else:
        compute_table = "No `compute.json` was written."
    h = "#" * level
    present = [name for name in PLOT_TITLES if os.path.isfile(os.path.join(run["output_dir"], name))]
    plots = "".join(f"\n{h} {PLOT_TITLES[name]}\n\n![{PLOT_TITLES[name]}]({name})\n" for name in present)
    return SECTIONS_TEMPLATE.format(
        h=h,
        repo_id=repo_id,
        strategy=run["strategy"],
        domains=", ".join(f"`{d}`" for d in run["domains"]),
        mixture_table=markdown_table(["domain", "weight"], [[d, f"{w:.4f}"] for d, w in run["final_mixture"].items()]),
        decisions=len(run["history"]),
        settings=settings_text,
        eval_table=eval_table,
        compute_table=compute_table,
        plots=plots,
        files="Files: `mixture.json` (final mixture), `mixtures.json` (every decision), `compute.json` (FLOPs ledger).",
    )


def model_card(run: Mapping[str, Any], repo_id: str, settings: Mapping[str, Any] | None = None) -> ModelCard:
    """The card of a run pushed without a model (:func:`push_run`): the mixing sections alone."""
    content = f"\n# Data mixture: {run['name']}\n\nData-mixing artefacts of an `hf_datamix` run (`{run['strategy']}` strategy).\n"
    content += mixing_sections(run, repo_id, settings)
    data = ModelCardData(library_name="hf_datamix", tags=[*CARD_TAGS, run["strategy"]])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{content}")


def add_mixing_to_card(
    output_dir: str | os.PathLike, repo_id: str, settings: Mapping[str, Any] | None = None
) -> ModelCard | None:
    """Append the run's mixing sections and tags to the card (``README.md``) Trainer wrote in ``output_dir``.

    The card's metadata (``library_name``, base model, ...) and sections are kept; run again, the
    mixing part is replaced rather than repeated.  Returns the card, or None when ``output_dir``
    holds no ``mixtures.json`` (nothing trained yet: the card is left as it is).
    """
    output_dir = os.fspath(output_dir)
    if not os.path.isfile(os.path.join(output_dir, MIXTURES_FILE)):
        return None
    run = read_run(output_dir)
    path = os.path.join(output_dir, CARD_FILE)
    card = ModelCard.load(path) if os.path.isfile(path) else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
    tags = list(card.data.tags or [])
    card.data.tags = tags + [t for t in (*CARD_TAGS, run["strategy"]) if t not in tags]
    heading = f"\n## {MIXING_HEADING}\n"
    text = card.text.split(heading)[0].rstrip("\n")
    card.text = f"{text}\n{heading}{mixing_sections(run, repo_id, settings, level=3)}"
    card.save(path)
    return card


def run_operations(
    output_dir: str | os.PathLike,
    repo_id: str,
    include_probe_adapters: bool = True,
    settings: Mapping[str, Any] | None = None,
) -> list[CommitOperationAdd]:
    """The commit operations that :func:`push_run` sends (local files are read, never written)."""
    output_dir = os.fspath(output_dir)
    run = read_run(output_dir)
    operations = [
        CommitOperationAdd(name, os.path.join(output_dir, name))
        for name in RUN_FILES
        if os.path.isfile(os.path.join(output_dir, name))
    ]
    final = Mixture(run["final_mixture"])
    operations.append(CommitOperationAdd(MIXTURE_FILE, final.to_json(strategy=run["strategy"]).encode("utf-8")))
    for name in sorted(os.listdir(output_dir)):
        if name.endswith(".png") and os.path.isfile(os.path.join(output_dir, name)):
            operations.append(CommitOperationAdd(name, os.path.join(output_dir, name)))
    adapters = os.path.join(output_dir, ADAPTERS_DIR)
    if include_probe_adapters and os.path.isdir(adapters):
        for root, dirs, files in os.walk(adapters):
            dirs.sort()
            for name in sorted(files):
                local = os.path.join(root, name)
                in_repo = os.path.relpath(local, output_dir).replace(os.sep, "/")
                operations.append(CommitOperationAdd(in_repo, local))
    card = model_card(run, repo_id, settings)
    operations.append(CommitOperationAdd(CARD_FILE, str(card).encode("utf-8")))
    return operations


def push_run(
    output_dir: str | os.PathLike,
    repo_id: str,
    api: Any = None,
    token: str | None = None,
    include_probe_adapters: bool = True,
    private: bool | None = None,
    commit_message: str = "Upload data-mixing artefacts with hf_datamix",
    settings: Mapping[str, Any] | None = None,
    revision: str | None = None,
):
    """Push a run's mixing artefacts and model card to ``repo_id`` in one commit; returns the commit info.

    Creates the repo if needed (``exist_ok``).  Token and network failures raise :class:`~hf_datamix.hub.HubError`
    naming the repo and the fix; ``output_dir`` is only read.
    """
    operations = run_operations(output_dir, repo_id, include_probe_adapters, settings)
    api = api or hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.create_commit(repo_id, operations, commit_message=commit_message, token=token, revision=revision)
    except hub.NETWORK_ERRORS as error:
        raise hub.hub_error("push the run to", repo_id, error, untouched=os.fspath(output_dir)) from error
