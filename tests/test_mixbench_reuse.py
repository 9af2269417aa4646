"""mixbench reuse at tiny size on the CPU (a fake corpus of the 20 leaves, tiny swarms), and the leaf splits."""

from __future__ import annotations

import json
import os
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_mixbench import mixbench, staged  # noqa: E402


@pytest.mark.timeout(600)
def test_reuse_arms_over_five_updates_resume_and_report(tmp_path):
    common = staged(tmp_path, "leaves", extra=())
    manifest = json.load(open(tmp_path / "data" / "leaves" / "manifest.json"))
    assert len(manifest["domains"]) >= 16 and set(manifest["derived"]) == {"python_stdlib", "wordnet@v1"}
    assert manifest["derived"]["python_stdlib"]["train"]["tokens"] == sum(
        manifest["domains"][p]["train"]["tokens"]
        for p in ("stdlib_test", "stdlib_modules", "stdlib_packages", "stdlib_tools")
    )
    store = tmp_path / "store" / "reuse-leaves-tiny.json"
    run = ["reuse", *common, "--swarm-size", "0", "--store", str(store)]  # swarms of coordinates + 1
    out = mixbench(*run, "--procs", "2", "--work", str(tmp_path / "w1"))
    assert "proxy rung tiny_0.0003x: no transfer results file" in out
    result = json.load(open(tmp_path / "results" / "olmix_reuse_scale_tiny.json"))
    assert result["status"] == "complete", out
    arms = result["arms"]
    assert set(arms) == {"natural", "recompute", "full", "partial", "auto"}
    for name, arm in arms.items():
        assert len(arm["mean_test_loss"]) == 2 and len(arm["test_by_domain"]) == 19  # the last update: 19 domains
        assert arm["flops_by_kind"]["target_train"] > 0
        assert (arm["proxy_runs"] > 0) == (name != "natural") and (arm["flops_by_kind"]["proxy"] > 0) == (
            name != "natural"
        )
    # recompute runs a swarm over every domain at every update (m + 1 runs here), the removal too; full reuse
    # re-simulates the virtual domain and the affected ones (coordinates + 1), none at the removal
    assert arms["recompute"]["proxy_runs"] == sum(m + 1 for m in (12, 14, 17, 17, 16, 19))
    assert arms["full"]["proxy_runs"] <= 13 + 4 + 6 + 3 + 0 + 5
    entry = result["domain_sets"]["leaves"]
    stages = entry["stages"]
    assert [s["update"]["kind"] for s in stages[1:]] == ["add", "partition", "revise", "remove", "add"]
    assert stages[4]["arms"]["full"]["reuse_plan"]["no_runs"] and stages[4]["arms"]["full"]["proxy_runs"] == 0
    assert stages[1]["arms"]["partial"]["reuse_plan"]["compute"] == ["man_en", "man_de", "man_fr", "man_es"]
    assert set(stages[2]["arms"]["full"]["reuse_plan"]["compute"]) == {
        "stdlib_test",
        "stdlib_modules",
        "stdlib_packages",
        "stdlib_tools",
    }
    assert (
        entry["kept_fraction"]["full"]["recompute_gain"] is not None
        and len(entry["kept_fraction"]["full"]["seeds"]) == 2
    )
    assert entry["proxy_runs_ratio"]["full"] == pytest.approx(arms["full"]["proxy_runs"] / 101)
    verdicts = entry["verdicts"]
    assert {"recompute_beats_natural", "full_keeps_gain", "auto_at_least_full", "protocol"} <= set(verdicts)
    assert verdicts["recompute_beats_natural"]["verdict"] in ("met", "missed") and verdicts["full_keeps_gain"]["rule"]
    assert verdicts["protocol"]["full"]["verdict"] == "not judged"
    assert not entry["auto_vs_single_reopen"]["ran"] and "not run" in entry["auto_vs_single_reopen"]["why"]
    assert entry["rung"]["used"][0] == "tiny_0.0003x"
    assert (tmp_path / "results" / "olmix_reuse_scale_tiny.png").stat().st_size > 5000
    # Run again: nothing is trained, the store is unchanged.
    before = store.read_text()
    again = mixbench(*run, "--work", str(tmp_path / "w2"))
    assert " 0 pending" in again and "loss" not in again.split("pending", 1)[1].split("wrote")[0]
    assert json.loads(store.read_text())["units"] == json.loads(before)["units"]


def test_leaf_splits_are_deterministic_partitions():
    from hf_datamix.data import corpus_build as cb

    keys = {
        "python_stdlib": [
            "stdlib/os.py",
            "stdlib/test/test_os.py",
            "stdlib/asyncio/tasks.py",
            "stdlib/ctypes/test/test_x.py",
            "stdlib/idlelib/idle_test/t.py",
            "stdlib/idlelib/run.py",
            "stdlib/email/mime/text.py",
        ],
        "python_docs": [
            "python-docs/library/os.html",
            "python-docs/whatsnew/3.11.html",
            "python-docs/c-api/x.html",
            "python-docs/tutorial/index.html",
            "python-docs/index.html",
        ],
        "scripture": ["kjv/Genesis 1", "kjv/John 3", "kjv/1 John 2", "kjv/Revelation 22", "kjv/Malachi 4"],
        "computing": ["dictd-jargon/000001", "dictd-foldoc/000002"],
    }
    expected = {
        "stdlib/os.py": "stdlib_modules",
        "stdlib/test/test_os.py": "stdlib_test",
        "stdlib/asyncio/tasks.py": "stdlib_packages",
        "stdlib/ctypes/test/test_x.py": "stdlib_test",
        "stdlib/idlelib/idle_test/t.py": "stdlib_test",
        "stdlib/idlelib/run.py": "stdlib_tools",
        "stdlib/email/mime/text.py": "stdlib_packages",
        "python-docs/library/os.html": "docs_library",
        "python-docs/whatsnew/3.11.html": "docs_whatsnew",
        "python-docs/c-api/x.html": "docs_capi",
        "python-docs/tutorial/index.html": "docs_guides",
        "python-docs/index.html": "docs_guides",
        "kjv/Genesis 1": "kjv_ot",
        "kjv/John 3": "kjv_nt",
        "kjv/1 John 2": "kjv_nt",
        "kjv/Revelation 22": "kjv_nt",
        "kjv/Malachi 4": "kjv_ot",
        "dictd-jargon/000001": "jargon",
        "dictd-foldoc/000002": "foldoc",
    }
    for source, names in keys.items():
        first = [cb.leaf_of(source, k) for k in names]
        assert first == [cb.leaf_of(source, k) for k in names]  # same input, same leaves
        assert all(expected[k] == leaf for k, leaf in zip(names, first))
        leaves = {leaf for leaf, _ in cb.LEAF_RULES[source]}
        assert all(cb.DOMAINS[leaf].default is False for leaf in leaves)  # built only when named
    # A leaf's items are its source's items with that leaf, in the source's order: the leaves partition it.
    fake = [(k, lambda: "x") for k in keys["python_stdlib"]]
    original = cb.DOMAINS["python_stdlib"]
    cb.DOMAINS["python_stdlib"] = cb.SourceDomain("python_stdlib", (), "", "", lambda seed: fake, False)
    try:
        parts = [
            [k for k, _ in cb._leaf_items("python_stdlib", leaf, 0)] for leaf, _ in cb.LEAF_RULES["python_stdlib"]
        ]
    finally:
        cb.DOMAINS["python_stdlib"] = original
    assert sorted(k for p in parts for k in p) == sorted(keys["python_stdlib"]) and sum(map(len, parts)) == len(fake)


def test_update_sequence_data_and_derived_domains():
    from mixbench import updates
    from mixbench.common import SETS

    names = updates.stage_names("leaves")
    assert len(names) == 6 and len(names[-1]) >= 16 and len(SETS["leaves"]) >= 16
    updates.check("leaves")
    assert updates.interleave([["a1", "a2", "a3"], ["b1"]]) == ["a1", "b1", "a2", "a3"]
    assert updates.first_version(["d1", "d2", "d3", "d4", "d5"]) == ["d1", "d2"]
    texts = {("stdlib_test", "train"): ["t1", "t2"], ("stdlib_modules", "train"): ["m1"]}
    derived = updates.derived_texts("leaves", lambda leaf, split: texts.get((leaf, split), [f"{leaf}-{split}"]))
    assert derived == updates.derived_texts(
        "leaves", lambda leaf, split: texts.get((leaf, split), [f"{leaf}-{split}"])
    )
    assert derived["python_stdlib"]["train"] == ["t1", "m1", "stdlib_packages-train", "stdlib_tools-train", "t2"]
    assert derived["wordnet@v1"]["eval"] == ["wordnet-eval"]


def test_rung_is_the_cheapest_with_spearman_at_least_08():
    from mixbench.reuse import DEFAULT_RUNGS, choose_rung

    def rung(name, spearman, fraction):
        return {
            "name": name,
            "preset": "5m",
            "chinchilla_multiple": 1.0,
            "spearman": spearman,
            "compute_fraction": fraction,
        }

    ladder = {"domain_sets": {"even": {"rungs": [rung("a", 0.95, 0.3), rung("b", 0.81, 0.05), rung("c", 0.6, 0.01)]}}}
    assert choose_rung(ladder, "leaves", "gpu")[0][0] == "b"  # another set's ladder when this set has none
    assert choose_rung(None, "leaves", "gpu") == (DEFAULT_RUNGS["gpu"], choose_rung(None, "leaves", "gpu")[1])
    low = {"domain_sets": {"leaves": {"rungs": [rung("c", 0.6, 0.01)]}}}
    assert (
        choose_rung(low, "leaves", "gpu")[0] == DEFAULT_RUNGS["gpu"]
        and "no rung" in choose_rung(low, "leaves", "gpu")[1]
    )
