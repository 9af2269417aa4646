"""Hub I/O offline: the exact commit a push sends, the model card of a real run, loading it back, errors,
and a trainer's push (Trainer's one upload of output_dir, Trainer's card plus the mixing)."""

from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

import httpx
import pytest
from conftest import datamix_args, make_domain_set, tiny_llama
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from huggingface_hub.utils import filter_repo_objects

from hf_datamix import DataMixTrainer, Mixture, card, hub
from hf_datamix.cli import main as cli_main


REPO = "someone/tiny-mix"
ADAPTER_FILES = {
    "probe_adapters/old/adapter_config.json": b'{"r": 16}',
    "probe_adapters/old/adapter_model.safetensors": b"\x00\x01weights",
}


class FakeApi:
    """Records what would reach the Hub; ``fail`` makes the named call raise."""

    def __init__(self, fail: dict | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail = fail or {}

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        if "create_repo" in self.fail:
            raise self.fail["create_repo"]
        return SimpleNamespace(repo_id=args[0])

    def create_commit(self, *args, **kwargs):
        self.calls.append(("create_commit", args, kwargs))
        if "create_commit" in self.fail:
            raise self.fail["create_commit"]
        return SimpleNamespace(commit_url=f"https://huggingface.co/{args[0]}/commit/abc")

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def content(operation) -> bytes:
    source = operation.path_or_fileobj
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as handle:
        return handle.read()


def snapshot(directory) -> dict[str, tuple[str, float]]:
    """Every file's content hash and mtime: equal snapshots mean nothing was touched."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, directory)] = (
                    hashlib.sha256(handle.read()).hexdigest(),
                    os.path.getmtime(path),
                )
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tokenizer):
    """A real 3-step uniform run with one evaluation, plus a probe_adapters/ folder."""
    out = tmp_path_factory.mktemp("run")
    args = datamix_args(out, max_steps=3, strategy="uniform", eval_strategy="steps", eval_steps=3, max_eval_blocks=2)
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)), args=args, domains=make_domain_set(), processing_class=tokenizer
    )
    trainer.train()
    for path, data in ADAPTER_FILES.items():
        os.makedirs(os.path.dirname(out / path), exist_ok=True)
        (out / path).write_bytes(data)
    return out, trainer


def test_push_run_sends_one_commit_with_exact_operations(tiny_run):
    out, _ = tiny_run
    api = FakeApi()
    info = card.push_run(out, REPO, api=api)
    assert info.commit_url.endswith("/commit/abc")
    assert [c[0] for c in api.calls] == ["create_repo", "create_commit"]
    assert api.named("create_repo")[0][2]["exist_ok"] is True
    ((_, args, _kwargs),) = api.named("create_commit")
    assert args[0] == REPO
    operations = {op.path_in_repo: content(op) for op in args[1]}
    assert set(operations) == {
        "mixtures.json",
        "compute.json",
        "weights.png",
        "mixture.json",
        "README.md",
        *ADAPTER_FILES,
    }
    for path in ("mixtures.json", "compute.json", "weights.png", *ADAPTER_FILES):
        assert operations[path] == (out / path).read_bytes(), path
    history = json.loads((out / "mixtures.json").read_text())
    assert Mixture.from_json(operations["mixture.json"].decode()) == history[-1]["weights"]
    assert json.loads(operations["mixture.json"])["strategy"] == "uniform"

    api = FakeApi()
    card.push_run(out, REPO, api=api, include_probe_adapters=False)
    paths = {op.path_in_repo for op in api.named("create_commit")[0][1][1]}
    assert not any(p.startswith("probe_adapters/") for p in paths)


def test_model_card_states_the_real_run(tiny_run):
    out, trainer = tiny_run
    api = FakeApi()
    card.push_run(out, REPO, api=api, settings=trainer.strategy.settings())
    ops = {op.path_in_repo: content(op) for op in api.named("create_commit")[0][1][1]}
    pushed = ModelCard(ops["README.md"].decode())
    assert pushed.data.library_name == "hf_datamix" and "uniform" in pushed.data.tags
    text = pushed.text
    evals = {
        k: v
        for entry in trainer.state.log_history
        for k, v in entry.items()
        if k.startswith("eval_") and k.endswith("_loss")
    }
    compute = json.loads((out / "compute.json").read_text())
    for name in ("alpha", "beta", "gamma"):
        assert f"| {name} | 0.3333 |" in text
        assert f"| {name} | {evals[f'eval_{name}_loss']:.4f} |" in text
    for kind, flops in compute["by_kind"].items():
        assert f"| {kind} | {flops:.4g} | {compute['share_by_kind'][kind]:.1%} |" in text
    assert f"Total: {compute['total_flops']:.4g} FLOPs" in text
    assert "`uniform`" in text and "The strategy has no settings." in text
    assert f'Mixture.from_pretrained("{REPO}")' in text


def test_from_pretrained_reads_the_pushed_layout(tiny_run, tmp_path):
    out, _ = tiny_run
    api = FakeApi()
    card.push_run(out, REPO, api=api)
    repo = tmp_path / "repo"
    for op in api.named("create_commit")[0][1][1]:
        target = repo / op.path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content(op))
    pushed = json.loads((out / "mixtures.json").read_text())[-1]["weights"]
    assert Mixture.from_pretrained(repo) == pushed
    assert Mixture.from_pretrained(str(repo / "mixture.json")) == pushed


def test_from_pretrained_downloads_from_hub_cache(tmp_path, monkeypatch):
    mixture = Mixture({"alpha": 0.2, "beta": 0.8})
    snapshot_dir = tmp_path / "hub" / "models--someone--tiny-mix" / "snapshots" / "0123abcd"
    snapshot_dir.mkdir(parents=True)
    mixture.save(snapshot_dir / "mixture.json")
    calls = []

    def fake_download(repo_id, filename, revision=None, token=None, **kwargs):
        calls.append((repo_id, filename, revision, token))
        return str(snapshot_dir / filename)

    # A missing local path is not sent to the Hub: it fails as a path, before any download.
    with pytest.raises(FileNotFoundError, match="neither a local file or folder nor a Hub repo id"):
        Mixture.from_pretrained(str(tmp_path / "missing" / "mix.json"))
    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    assert Mixture.from_pretrained(REPO, revision="v1", token="tok") == mixture
    assert calls == [(REPO, "mixture.json", "v1", "tok")]


def test_init_mixture_accepts_a_hub_repo(tmp_path, monkeypatch, tokenizer):
    seed = tmp_path / "seed"
    Mixture({"alpha": 0.5, "beta": 0.5, "gamma": 0.0}).save(seed)  # not yet a folder: writes the file "seed"
    monkeypatch.setattr(hub, "hf_hub_download", lambda repo_id, filename, **kw: str(seed))
    args = datamix_args(tmp_path / "out", max_steps=2, init_mixture=REPO)
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)), args=args, domains=make_domain_set(), processing_class=tokenizer
    )
    assert trainer.interleaver.weights_at(0).to_dict() == {"alpha": 0.5, "beta": 0.5, "gamma": 0.0}


def test_mixture_push_to_hub_one_file():
    api = FakeApi()
    mixture = Mixture({"alpha": 0.25, "beta": 0.75})
    mixture.push_to_hub(REPO, private=True, api=api)
    assert api.named("create_repo")[0][2]["private"] is True
    ((_, args, _kwargs),) = api.named("create_commit")
    assert [op.path_in_repo for op in args[1]] == ["mixture.json"]
    assert Mixture.from_json(content(args[1][0]).decode()) == mixture


@pytest.mark.parametrize(
    "failure",
    [
        {
            "create_commit": HfHubHTTPError(
                "401 Client Error: Unauthorized",
                response=httpx.Response(401, request=httpx.Request("POST", "https://huggingface.co")),
            )
        },
        {"create_repo": LocalTokenNotFoundError("Token is required but no token found")},
        {"create_commit": ConnectionError("network unreachable")},
    ],
)
def test_push_errors_are_clear_and_leave_output_untouched(tiny_run, failure, monkeypatch, capsys):
    out, _ = tiny_run
    before = snapshot(out)
    with pytest.raises(hub.HubError) as caught:
        card.push_run(out, REPO, api=FakeApi(fail=failure))
    message = str(caught.value)
    assert REPO in message and "huggingface-cli login" in message and "HF_TOKEN" in message and "Nothing in" in message
    monkeypatch.setattr(hub, "HfApi", lambda token=None: FakeApi(fail=failure))
    assert cli_main(["push", str(out), REPO]) == 2
    assert "huggingface-cli login" in capsys.readouterr().err
    assert snapshot(out) == before


class FakeHfApi(FakeApi):
    """Trainer's side of the Hub: ``upload_folder`` lays the folder out as the Hub repo would hold it."""

    def __init__(self, repo_dir):
        super().__init__()
        self.repo_dir = repo_dir

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        self.calls.append(("upload_folder", (repo_id, folder_path), kwargs))
        for root, _, files in os.walk(folder_path):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), folder_path).replace(os.sep, "/")
                if not list(filter_repo_objects([relative], ignore_patterns=ignore_patterns)):
                    continue
                target = self.repo_dir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(open(os.path.join(root, name), "rb").read())
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/def")


def test_trainer_push_is_one_commit_with_trainers_card_and_the_mixing(tiny_run, tmp_path, monkeypatch):
    out, trainer = tiny_run
    repo = tmp_path / "repo"
    api = FakeHfApi(repo)
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: api)
    monkeypatch.setattr(trainer.args, "hub_model_id", REPO)
    info = trainer.push_to_hub("End of training", token="tok")
    assert info.commit_url.endswith("/commit/def")
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]  # one commit, nothing pushed after it
    card = ModelCard.load(repo / "README.md")
    # Trainer's card is kept: its metadata and its sections ...
    assert card.data.library_name == "transformers" and card.data.model_name == "tiny-mix"
    for section in ("## Training procedure", "### Training hyperparameters", "### Framework versions"):
        assert section in card.text, section
    # ... and the mixing is added, with the tags (the model's own tags reach the card through Trainer).
    assert {"generated_from_trainer", "hf_datamix", "data-mixing", "uniform"} <= set(card.data.tags)
    assert {"hf_datamix", "data-mixing"} <= set(trainer.model.model_tags)
    text = card.text
    assert text.count("## Data mixing (hf_datamix)") == 1
    for name in ("alpha", "beta", "gamma"):
        assert f"| {name} | 0.3333 |" in text
    assert "### Compute" in text and "### Evaluation" in text and "The strategy has no settings." in text
    assert "![Mixture over training](weights.png)" in text and (repo / "weights.png").is_file()
    assert f'Mixture.from_pretrained("{REPO}")' in text
    assert Mixture.from_pretrained(repo) == json.loads((out / "mixtures.json").read_text())[-1]["weights"]
    assert {"mixtures.json", "compute.json", "model.safetensors"} <= {p.name for p in repo.iterdir()}
    assert not any(p.name.startswith("checkpoint-") for p in repo.iterdir())
    # A second card for the same folder replaces the mixing part instead of repeating it.
    trainer.create_model_card(model_name="tiny-mix")
    assert ModelCard.load(out / "README.md").text.count("## Data mixing (hf_datamix)") == 1
