"""Hub I/O: push a mixture or a whole run's mixing artefacts, load a mixture from a repo or a folder.

A pushed repo holds ``mixture.json`` (the final mixture), so ``Mixture.from_pretrained`` reads a Hub
repo id, a local folder laid out like that repo, or a JSON file the same way.  A trainer's
``push_to_hub`` is Trainer's own (one commit of ``output_dir``), with the mixing sections added to
Trainer's card by :func:`add_mixing_to_card`.  ``push_run`` pushes a run without its model, in
**one commit**: ``mixtures.json``, ``compute.json``, ``mixture.json``, ``results.json``, the plots,
the probe adapters and a card of the mixing sections alone.  Pushing only reads ``output_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    ModelCard,
    ModelCardData,
    hf_hub_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
)

from .constants import MIXTURE_FILE, MIXTURES_FILE, RUN_FILES
from .mixture import Mixture
from .plots import PLOT_TITLES
from .report import average_loss, markdown_table, read_run

ADAPTERS_DIR = "probe_adapters"
CARD_FILE = "README.md"

try:  # huggingface_hub >= 1.0 talks HTTP through httpx, whose errors are not OSErrors
    from httpx import HTTPError as _HttpxError
except ImportError:  # pragma: no cover - older huggingface_hub on requests
    _HttpxError = OSError

#: Failures of the network or of authentication: reported as a HubError, never a traceback.
NETWORK_ERRORS = (HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError, OSError, ConnectionError, _HttpxError)


class HubError(RuntimeError):
    """A push or download failed (token, network, repository); the message says how to fix it."""


def _hub_error(action: str, repo_id: str, error: BaseException, untouched: str | None = None) -> HubError:
    kept = f" Nothing in {untouched!r} was changed." if untouched else ""
    return HubError(
        f"could not {action} the Hub repo {repo_id!r}: {type(error).__name__}: {error}. "
        "Log in with `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN to a token with "
        f"write access, and check the repo id and your network.{kept}"
    )


# -- a single mixture ----------------------------------------------------------------------------
def load_mixture(repo_id_or_path: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Mixture:
    """A mixture from a JSON file, a folder holding ``mixture.json``, or a Hub repo holding one."""
    location = os.fspath(repo_id_or_path)
    if os.path.exists(location):
        return Mixture.load(location)
    try:
        path = hf_hub_download(location, MIXTURE_FILE, revision=revision, token=token)
    except HFValidationError:
        raise FileNotFoundError(
            f"mixture {location!r} is neither a local file or folder nor a Hub repo id ('user/name'): "
            "give a mixture.json, a folder holding one, or a repo pushed with Mixture.push_to_hub."
        ) from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base: the Hub was not reached, no cached copy
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        offline = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise FileNotFoundError(
            f"mixture {location!r}: no local file or folder has that name, and the Hub could not be reached{offline} "
            f"to download its {MIXTURE_FILE} (nor is it cached). Check the path, or your network and HF_HUB_OFFLINE."
        ) from None
    except EntryNotFoundError:
        raise FileNotFoundError(
            f"the Hub repo {location!r} has no {MIXTURE_FILE}: push one with Mixture.push_to_hub or hf-datamix push."
        ) from None
    except NETWORK_ERRORS as error:
        raise _hub_error(f"download {MIXTURE_FILE} from", location, error) from error
    return Mixture.load(path)


def push_mixture(
    mixture: Mixture,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload mixture with hf_datamix",
    api: Any = None,
    **extra: Any,
):
    """Upload ``mixture.json`` (plus ``extra`` JSON fields) to ``repo_id`` in one commit; returns the commit info."""
    api = api or HfApi(token=token)
    operation = CommitOperationAdd(MIXTURE_FILE, mixture.to_json(**extra).encode("utf-8"))
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.create_commit(repo_id, [operation], commit_message=commit_message, token=token)
    except NETWORK_ERRORS as error:
        raise _hub_error("push the mixture to", repo_id, error) from error


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


def mixing_sections(run: Mapping[str, Any], repo_id: str, settings: Mapping[str, Any] | None = None, level: int = 2) -> str:
    """Markdown of a run's mixing: final mixture, strategy and settings, per-domain eval, compute, plots.

    ``run`` is :func:`hf_datamix.report.read_run`'s summary; headings are of ``level`` (``##`` by default).
    """
    settings = settings if settings is not None else run["settings"]
    if settings:
        settings_text = markdown_table(["setting", "value"], [[k, f"`{v!r}`"] for k, v in settings.items()])
    else:
        settings_text = "Settings: not recorded in `mixtures.json`." if settings is None else "The strategy has no settings."
    if run["eval_loss"]:
        rows = [[d, f"{run['eval_loss'][d]:.4f}", f"{run['eval_ppl'][d]:.2f}"] for d in run["domains"] if d in run["eval_loss"]]
        eval_table = markdown_table(["domain", "eval loss", "perplexity"], rows) + (
            f"\n\nAverage eval loss: {average_loss(run):.4f}."
        )
    else:
        eval_table = "No evaluation was recorded (set `eval_strategy` to get per-domain eval losses)."
    compute = run["compute"]
    if compute:
        compute_table = markdown_table(
            ["kind", "FLOPs", "share"],
            [[k, f"{v:.4g}", f"{compute['share_by_kind'].get(k, 0.0):.1%}"] for k, v in compute["by_kind"].items()],
        ) + f"\n\nTotal: {compute['total_flops']:.4g} FLOPs. {compute.get('formula', '')}"
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

    Creates the repo if needed (``exist_ok``).  Token and network failures raise :class:`HubError`
    naming the repo and the fix; ``output_dir`` is only read.
    """
    operations = run_operations(output_dir, repo_id, include_probe_adapters, settings)
    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.create_commit(repo_id, operations, commit_message=commit_message, token=token, revision=revision)
    except NETWORK_ERRORS as error:
        raise _hub_error("push the run to", repo_id, error, untouched=os.fspath(output_dir)) from error
