"""Hub I/O: find a mixture file (local, or downloaded from a Hub repo), upload one, and the errors of both.

A pushed repo holds ``mixture.json`` (the final mixture), so ``Mixture.from_pretrained`` reads a Hub
repo id, a local folder laid out like that repo, or a JSON file the same way.  Model cards and the
push of a whole run are :mod:`hf_datamix.card`'s.  This module knows nothing of mixtures or runs, so
:mod:`hf_datamix.mixture` can use it without an import cycle.
"""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
)

from .constants import MIXTURE_FILE


try:  # huggingface_hub >= 1.0 talks HTTP through httpx, whose errors are not OSErrors
    from httpx import HTTPError as _HttpxError
except ImportError:  # pragma: no cover - older huggingface_hub on requests
    _HttpxError = OSError

#: Failures of the network or of authentication: reported as a HubError, never a traceback.
NETWORK_ERRORS = (
    HfHubHTTPError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
    OSError,
    ConnectionError,
    _HttpxError,
)


class HubError(RuntimeError):
    """A push or download failed (token, network, repository); the message says how to fix it."""


def hub_error(action: str, repo_id: str, error: BaseException, untouched: str | None = None) -> HubError:
    kept = f" Nothing in {untouched!r} was changed." if untouched else ""
    return HubError(
        f"could not {action} the Hub repo {repo_id!r}: {type(error).__name__}: {error}. "
        "Log in with `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN to a token with "
        f"write access, and check the repo id and your network.{kept}"
    )


# -- a single mixture ----------------------------------------------------------------------------
def mixture_file(repo_id_or_path: str | os.PathLike, revision: str | None = None, token: str | None = None) -> str:
    """The local path of a mixture: a JSON file or a folder as given, else a Hub repo's ``mixture.json``
    (downloaded, or from the cache)."""
    location = os.fspath(repo_id_or_path)
    if os.path.exists(location):
        return location
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
        raise hub_error(f"download {MIXTURE_FILE} from", location, error) from error
    return path


def push_mixture(
    mixture_json: str,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload mixture with hf_datamix",
    api: Any = None,
):
    """Upload ``mixture_json`` as ``mixture.json`` to ``repo_id`` in one commit; returns the commit info."""
    api = api or HfApi(token=token)
    operation = CommitOperationAdd(MIXTURE_FILE, mixture_json.encode("utf-8"))
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.create_commit(repo_id, [operation], commit_message=commit_message, token=token)
    except NETWORK_ERRORS as error:
        raise hub_error("push the mixture to", repo_id, error) from error
