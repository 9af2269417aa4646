"""DomainSpec (validation, loading from datasets / local files / Hub-layout folders) and DomainSet updates."""

from __future__ import annotations

import dataclasses
import gzip
import json

import datasets
import pandas as pd
import pytest

from hf_datamix import DomainSet, DomainSpec, DomainUpdate


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory, monkeypatch):
    # Keep datasets' Arrow cache out of the user's home (load_dataset reads this at call time).
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets-cache")))


def docs(prefix: str, n: int) -> list[str]:
    return [f"{prefix} document number {i} with some words" for i in range(n)]


def ds(n: int = 10, prefix: str = "x", column: str = "text") -> datasets.Dataset:
    return datasets.Dataset.from_dict({column: docs(prefix, n)})


def write_jsonl(path, texts, column="text", opener=open):
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({column: text, "meta": len(text)}) + "\n")
    return path


def write_txt(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def spec(name: str, n: int = 4, **kwargs) -> DomainSpec:
    return DomainSpec(name, train=ds(n, name), eval=ds(2, name), **kwargs)


# -- DomainSpec validation --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "bad name", "-x", "a/b", None, 7])
def test_spec_bad_name(name):
    with pytest.raises(ValueError, match=r"DomainSpec\.name .* is not a valid domain name"):
        DomainSpec(name, train=ds(), eval=ds())


def test_spec_train_none():
    with pytest.raises(ValueError, match=r"'a'.*`train` is None"):
        DomainSpec("a", train=None, eval=ds())


def test_spec_missing_eval_without_eval_size():
    with pytest.raises(ValueError, match=r"DomainSpec 'code': no eval split.*`eval=`.*`eval_size=`"):
        DomainSpec("code", train=ds())


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.0, 1.5, -0.1, "10", [1]])
def test_spec_bad_eval_size(bad):
    with pytest.raises(ValueError, match=r"DomainSpec 'code': eval_size=") as info:
        DomainSpec("code", train=ds(), eval_size=bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("good", [1, 5, 0.01, 0.5, 0.99])
def test_spec_good_eval_size(good):
    assert DomainSpec("code", train=ds(), eval_size=good).eval_size == good


def test_spec_group_and_frozen():
    s = DomainSpec("web:news", train=ds(), eval=ds())
    assert s.group == "web"
    assert DomainSpec("code", train=ds(), eval=ds()).group == "code"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"


# -- loading: in-memory datasets ---------------------------------------------------------------------


def test_load_datasets_as_given():
    train, evaluation = ds(6, "t"), ds(2, "e")
    got_train, got_eval = DomainSpec("a", train=train, eval=evaluation).load()
    assert got_train is train and got_eval is evaluation


def test_load_dataset_dict_splits():
    dd = datasets.DatasetDict({"train": ds(6, "t"), "dev": ds(2, "e")})
    train, evaluation = DomainSpec("a", train=dd, eval=dd, eval_split="dev").load()
    assert len(train) == 6 and len(evaluation) == 2
    with pytest.raises(ValueError, match=r"'a': DatasetDict has no split 'validation' \(\['train', 'dev'\]\)"):
        DomainSpec("a", train=dd, eval=dd).load()


def test_missing_text_column_names_the_column():
    s = DomainSpec("a", train=ds(4, column="content"), eval=ds(2, column="content"))
    with pytest.raises(ValueError, match=r"Domain 'a' train data has no column 'text' \(columns: \['content'\]\)"):
        s.load()
    train, _ = DomainSpec(
        "a", train=ds(4, column="content"), eval=ds(2, column="content"), text_field="content"
    ).load()
    assert train.column_names == ["content"]
    # the eval split is checked too
    with pytest.raises(ValueError, match=r"'a' eval data has no column 'text'"):
        DomainSpec("a", train=ds(4), eval=ds(2, column="content")).load()


# -- loading: local files ----------------------------------------------------------------------------


def test_load_txt(tmp_path):
    train = write_txt(tmp_path / "train.txt", docs("t", 7))
    evaluation = write_txt(tmp_path / "eval.txt", docs("e", 3))
    got_train, got_eval = DomainSpec("t", train=str(train), eval=str(evaluation)).load()
    assert isinstance(got_train, datasets.Dataset)
    assert got_train["text"] == docs("t", 7) and len(got_eval) == 3


def test_load_jsonl_and_pathlike(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", docs("t", 5))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", docs("e", 2))
    got_train, got_eval = DomainSpec("j", train=train, eval=evaluation).load()  # os.PathLike accepted
    assert got_train["text"] == docs("t", 5)
    assert set(got_train.column_names) == {"text", "meta"}
    assert got_eval["text"] == docs("e", 2)


def test_load_jsonl_gz(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl.gz", docs("t", 5), opener=gzip.open)
    evaluation = write_jsonl(tmp_path / "eval.jsonl.gz", docs("e", 2), opener=gzip.open)
    got_train, got_eval = DomainSpec("g", train=str(train), eval=str(evaluation)).load()
    assert got_train["text"] == docs("t", 5) and got_eval["text"] == docs("e", 2)


def test_load_parquet(tmp_path):
    train, evaluation = tmp_path / "train.parquet", tmp_path / "eval.parquet"
    pd.DataFrame({"text": docs("t", 6), "id": range(6)}).to_parquet(train)
    ds(2, "e").to_parquet(str(evaluation))
    got_train, got_eval = DomainSpec("p", train=str(train), eval=str(evaluation)).load()
    assert got_train["text"] == docs("t", 6) and got_eval["text"] == docs("e", 2)


def test_load_directory_of_files(tmp_path):
    folder = tmp_path / "shards"
    write_jsonl(folder / "part-0.jsonl", docs("a", 3))
    write_jsonl(folder / "nested" / "part-1.jsonl", docs("b", 4))
    (folder / "notes.md5").write_text("ignored: unsupported extensions are skipped")
    train, _ = DomainSpec("d", train=str(folder), eval_size=1).load()
    evaluation_total = 1
    assert len(train) + evaluation_total == 7


def test_load_glob_and_list(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / f"shard-{i}.jsonl", docs(f"s{i}", 2))
    write_jsonl(tmp_path / "other.jsonl", docs("o", 5))
    train, evaluation = DomainSpec(
        "g", train=str(tmp_path / "shard-*.jsonl"), eval=[str(tmp_path / "other.jsonl")]
    ).load()
    assert len(train) == 6 and len(evaluation) == 5
    assert train["text"][:2] == docs("s0", 2)  # glob results sorted


def test_glob_without_matches(tmp_path):
    with pytest.raises(ValueError, match=r"Domain 'g': train='.*\*.jsonl' matches no file; check the pattern"):
        DomainSpec("g", train=str(tmp_path / "*.jsonl"), eval_size=1).load()


def test_mixed_formats_error(tmp_path):
    folder = tmp_path / "mixed"
    write_jsonl(folder / "a.jsonl", docs("a", 2))
    write_txt(folder / "b.txt", docs("b", 2))
    with pytest.raises(ValueError, match=r"Domain 'm': files .* mix or use unsupported formats"):
        DomainSpec("m", train=str(folder), eval_size=1).load()
    with pytest.raises(ValueError, match="mix or use unsupported formats"):
        DomainSpec("m", train=[str(folder / "a.jsonl"), str(folder / "b.txt")], eval_size=1).load()


def test_unsupported_format_error(tmp_path):
    path = tmp_path / "data.xml"
    path.write_text("<doc/>")
    with pytest.raises(ValueError, match=r"Domain 'x': files .*data\.xml.* mix or use unsupported formats"):
        DomainSpec("x", train=str(path), eval_size=1).load()


def test_file_missing_text_column(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", docs("t", 4), column="body")
    with pytest.raises(ValueError, match=r"Domain 'f' train data has no column 'text' \(columns: .*'body'"):
        DomainSpec("f", train=str(train), eval_size=1).load()
    got, _ = DomainSpec("f", train=str(train), eval_size=1, text_field="body").load()
    assert "body" in got.column_names


# -- eval carving --------------------------------------------------------------------------------


def test_eval_size_int():
    train, evaluation = DomainSpec("a", train=ds(20), eval_size=5).load()
    assert len(train) == 15 and len(evaluation) == 5
    assert not set(train["text"]) & set(evaluation["text"])  # disjoint
    # deterministic (seeded) split
    _, evaluation2 = DomainSpec("a", train=ds(20), eval_size=5).load()
    assert list(evaluation["text"]) == list(evaluation2["text"])


def test_eval_size_fraction():
    train, evaluation = DomainSpec("a", train=ds(20), eval_size=0.25).load()
    assert len(train) == 15 and len(evaluation) == 5
    assert sorted(list(train["text"]) + list(evaluation["text"])) == sorted(docs("x", 20))


# -- streaming ----------------------------------------------------------------------------------


def test_streaming_files_give_iterable_datasets(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", docs("t", 6))
    evaluation = write_jsonl(tmp_path / "eval.jsonl.gz", docs("e", 2), opener=gzip.open)
    got_train, got_eval = DomainSpec("s", train=str(train), eval=str(evaluation), streaming=True).load()
    assert isinstance(got_train, datasets.IterableDataset)
    assert isinstance(got_eval, datasets.IterableDataset)
    assert [row["text"] for row in got_train] == docs("t", 6)
    assert [row["text"] for row in got_eval] == docs("e", 2)


def test_streaming_eval_size_int_takes_and_skips(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", docs("t", 6))
    got_train, got_eval = DomainSpec("s", train=str(train), eval_size=2, streaming=True).load()
    assert isinstance(got_train, datasets.IterableDataset) and isinstance(got_eval, datasets.IterableDataset)
    assert [row["text"] for row in got_eval] == docs("t", 6)[:2]
    assert [row["text"] for row in got_train] == docs("t", 6)[2:]


def test_streaming_eval_size_fraction_error(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", docs("t", 6))
    with pytest.raises(ValueError, match=r"'s': a streaming domain cannot hold out a fraction"):
        DomainSpec("s", train=str(train), eval_size=0.5, streaming=True).load()


def test_iterable_dataset_passed_through():
    iterable = ds(4).to_iterable_dataset()
    train, evaluation = DomainSpec("i", train=iterable, eval_size=1).load()
    assert isinstance(train, datasets.IterableDataset)
    assert len(list(evaluation)) == 1 and len(list(train)) == 3


# -- a local folder laid out like a Hub dataset repo -------------------------------------------------

README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.jsonl
  - split: validation
    path: data/validation-*.jsonl
---
# A tiny dataset laid out like a Hub repo
"""


@pytest.fixture
def hub_folder(tmp_path):
    folder = tmp_path / "hub_repo"
    folder.mkdir()
    (folder / "README.md").write_text(README)
    write_jsonl(folder / "data" / "train-00000-of-00002.jsonl", docs("tr0", 4))
    write_jsonl(folder / "data" / "train-00001-of-00002.jsonl", docs("tr1", 3))
    write_jsonl(folder / "data" / "validation-00000-of-00001.jsonl", docs("va", 2))
    return folder


def test_hub_folder_fixture_is_a_valid_hub_layout(hub_folder):
    # Sanity check of the fixture itself: datasets loads it as a Hub repo with both splits.
    assert len(datasets.load_dataset(str(hub_folder), split="train")) == 7
    assert len(datasets.load_dataset(str(hub_folder), split="validation")) == 2


def test_hub_layout_folder_through_hub_id_path(hub_folder):
    s = DomainSpec("hub", train=str(hub_folder), eval=str(hub_folder), train_split="train", eval_split="validation")
    train, evaluation = s.load()
    assert isinstance(train, datasets.Dataset)
    assert len(train) == 7 and len(evaluation) == 2
    assert evaluation["text"] == docs("va", 2)


def test_hub_layout_folder_streaming(hub_folder):
    s = DomainSpec("hub", train=str(hub_folder), eval=str(hub_folder), eval_split="validation", streaming=True)
    train, evaluation = s.load()
    assert isinstance(train, datasets.IterableDataset) and isinstance(evaluation, datasets.IterableDataset)
    assert len(list(train)) == 7 and [r["text"] for r in evaluation] == docs("va", 2)


def test_hub_layout_folder_is_not_read_as_plain_files(hub_folder):
    # Whatever the loader does with it, it must not silently mix train and validation files together.
    s = DomainSpec("hub", train=str(hub_folder), eval=str(hub_folder))
    try:
        train, evaluation = s.load()
    except ValueError:
        return
    assert len(train) == 7 and len(evaluation) == 2


# -- DomainSet ----------------------------------------------------------------------------------


def test_domain_set_basics():
    a, b, c = spec("web:news"), spec("web:blogs"), spec("code")
    dset = DomainSet([a, b, c])
    assert dset.names == ["web:news", "web:blogs", "code"]
    assert len(dset) == 3 and list(dset) == [a, b, c]
    assert "code" in dset and "math" not in dset
    assert dset["code"] is c
    assert dset.groups() == {"web": ["web:news", "web:blogs"], "code": ["code"]}
    assert dset.select(["code", "web:news"]).names == ["code", "web:news"]
    assert DomainSet({"x": a, "y": c}).names == ["web:news", "code"]  # a mapping works too
    with pytest.raises(KeyError, match=r"No domain 'math'.*\['web:news', 'web:blogs', 'code'\]"):
        dset["math"]


def test_domain_set_duplicate_names():
    with pytest.raises(ValueError, match=r"domain 'a' twice"):
        DomainSet([spec("a"), spec("b"), spec("a")])


@pytest.mark.parametrize("empty", [[], (), {}])
def test_domain_set_empty(empty):
    with pytest.raises(ValueError, match="DomainSet is empty"):
        DomainSet(empty)


def test_domain_set_rejects_non_specs():
    with pytest.raises(ValueError, match="DomainSet takes DomainSpec objects, got str"):
        DomainSet([spec("a"), "b"])


@pytest.fixture
def abc():
    return DomainSet([spec("a"), spec("b"), spec("c")])


def test_update_add(abc):
    update = abc.add(spec("d"), spec("e"))
    assert isinstance(update, DomainUpdate) and update.kind == "add"
    assert update.domains.names == ["a", "b", "c", "d", "e"]
    assert update.affected == ("d", "e")
    assert update.removed == ()
    assert update.unaffected == ("a", "b", "c")
    assert update.previous is abc and abc.names == ["a", "b", "c"]  # the old set is unchanged
    assert update.to_dict() == {"kind": "add", "affected": ["d", "e"], "removed": []}


def test_update_add_existing_error(abc):
    with pytest.raises(ValueError, match=r"add: domain 'b' already exists; use revise\(\)"):
        abc.add(spec("d"), spec("b"))


def test_update_remove(abc):
    update = abc.remove("b")
    assert update.kind == "remove"
    assert update.domains.names == ["a", "c"]
    assert update.affected == ()
    assert update.removed == ("b",)
    assert update.unaffected == ("a", "c")
    assert abc.remove("a", "c").domains.names == ["b"]


def test_update_remove_errors(abc):
    with pytest.raises(KeyError, match=r"No domain 'zeta'"):
        abc.remove("zeta")
    with pytest.raises(ValueError, match="would leave no domains"):
        abc.remove("a", "b", "c")


def test_update_partition(abc):
    update = abc.partition("b", [spec("b:x"), spec("b:y"), spec("b:z")])
    assert update.kind == "partition"
    assert update.domains.names == ["a", "b:x", "b:y", "b:z", "c"]  # parts take the old position
    assert update.affected == ("b:x", "b:y", "b:z")
    assert update.removed == ("b",)
    assert update.unaffected == ("a", "c")
    assert update.domains.groups()["b"] == ["b:x", "b:y", "b:z"]
    # a part may reuse the partitioned domain's own name
    assert abc.partition("b", [spec("b"), spec("b2")]).domains.names == ["a", "b", "b2", "c"]


def test_update_partition_errors(abc):
    with pytest.raises(ValueError, match=r"partition: 'b' needs at least two parts, got 1"):
        abc.partition("b", [spec("b:x")])
    with pytest.raises(ValueError, match="got 0"):
        abc.partition("b", [])
    with pytest.raises(KeyError, match="No domain 'zeta'"):
        abc.partition("zeta", [spec("z1"), spec("z2")])
    with pytest.raises(ValueError, match=r"part names \['c'\] already exist"):
        abc.partition("b", [spec("b:x"), spec("c")])
    with pytest.raises(ValueError, match="twice"):
        abc.partition("b", [spec("b:x"), spec("b:x")])


def test_update_revise(abc):
    update = abc.revise("b", num_tokens=1234)
    assert update.kind == "revise"
    assert update.domains.names == ["a", "b", "c"]
    assert update.domains["b"].num_tokens == 1234
    assert update.affected == ("b",) and update.removed == ()
    assert update.unaffected == ("a", "c")
    assert abc["b"].num_tokens is None  # original untouched
    new_b = spec("b", n=9)
    revised = abc.revise("b", new_b)
    assert revised.domains["b"] is new_b and revised.domains.names == ["a", "b", "c"]


def test_update_revise_errors(abc):
    with pytest.raises(ValueError, match=r"revise: the revised spec is named 'bb', expected 'b'"):
        abc.revise("b", spec("bb"))
    with pytest.raises(KeyError, match="No domain 'zeta'"):
        abc.revise("zeta", num_tokens=1)
    with pytest.raises(ValueError, match="eval_size"):
        abc.revise("b", eval=None)  # revision re-validates the spec


def test_chained_updates(abc):
    step1 = abc.add(spec("d"))
    step2 = step1.domains.partition("a", [spec("a1"), spec("a2")])
    step3 = step2.domains.remove("c")
    assert step3.domains.names == ["a1", "a2", "b", "d"]
    assert step3.previous is step2.domains and step2.previous is step1.domains
    assert step2.unaffected == ("b", "c", "d")
