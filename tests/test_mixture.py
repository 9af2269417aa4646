"""Mixture: validation, normalisation, collapse/expand (virtual domains), JSON I/O, restrict, from_array."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from hf_datamix import Mixture
from hf_datamix.constants import MIXTURE_FILE
from hf_datamix.mixture import check_domain_name, expansion_matrix


LOGGER = "hf_datamix.mixture"


# -- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, -1, -1e-3])
def test_negative_weight_names_domain_and_value(bad):
    with pytest.raises(ValueError, match=r"'b'.*>= 0") as info:
        Mixture({"a": 1.0, "b": bad})
    assert str(bad) in str(info.value) or repr(float(bad)) in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight_names_domain_and_value(bad):
    with pytest.raises(ValueError, match="finite") as info:
        Mixture({"a": 0.5, "weird": bad})
    message = str(info.value)
    assert "'weird'" in message
    assert str(bad) in message  # 'nan', 'inf' or '-inf'


def test_non_numeric_weight_names_domain_and_value():
    with pytest.raises(ValueError, match=r"'a'.*'heavy'.*not a number"):
        Mixture({"a": "heavy"})
    with pytest.raises(ValueError, match=r"'a'.*None.*not a number"):
        Mixture({"a": None})


@pytest.mark.parametrize("empty", [{}, [], ()])
def test_empty_weights(empty):
    with pytest.raises(ValueError, match="empty"):
        Mixture(empty)


def test_duplicate_pair_names():
    with pytest.raises(ValueError, match=r"'a' twice"):
        Mixture([("a", 0.5), ("b", 0.25), ("a", 0.25)])


def test_entry_that_is_not_a_pair():
    with pytest.raises(ValueError, match=r"\('a', 0\.5, 1\).*not a \(domain, weight\) pair"):
        Mixture([("a", 0.5, 1)])
    with pytest.raises(ValueError, match="not a .domain, weight. pair"):
        Mixture(["a"])


def test_unknown_domain_with_domains_given():
    with pytest.raises(ValueError, match=r"unknown domain\(s\) \['zeta'\]") as info:
        Mixture({"a": 0.5, "zeta": 0.5}, domains=["a", "b"])
    assert "['a', 'b']" in str(info.value)  # lists the known domains


def test_domains_fills_missing_with_zero_and_follows_their_order():
    mix = Mixture({"c": 0.75, "a": 0.25}, domains=["a", "b", "c"])
    assert mix.domains == ["a", "b", "c"]
    assert mix.to_dict() == {"a": 0.25, "b": 0.0, "c": 0.75}


@pytest.mark.parametrize("name", ["", "has space", "-lead", "_lead", "semi;colon", "slash/name", "é", 3, None])
def test_invalid_names(name):
    with pytest.raises(ValueError, match="not a valid domain name") as info:
        Mixture({name: 1.0})
    assert repr(name) in str(info.value)
    assert "domain name" in str(info.value)


@pytest.mark.parametrize("name", ["a", "A1", "web:news", "code_python", "v1.2", "c++", "x-y", "0start"])
def test_valid_names(name):
    assert Mixture({name: 1.0})[name] == 1.0
    assert check_domain_name(name) == name


def test_check_domain_name_names_the_field():
    with pytest.raises(ValueError, match=r"^my field 'bad name' is not a valid domain name"):
        check_domain_name("bad name", "my field")


@pytest.mark.parametrize("weights", [{"a": 0.0}, {"a": 0, "b": 0.0}, [("a", 0), ("b", -0.0)]])
def test_all_zero(weights):
    with pytest.raises(ValueError, match="sum to 0") as info:
        Mixture(weights)
    assert "'a'" in str(info.value)


def test_all_zero_after_domains_fill():
    with pytest.raises(ValueError, match="sum to 0"):
        Mixture({"a": 0.0}, domains=["a", "b"])


# -- normalisation ----------------------------------------------------------------------------------


def test_normalises_with_logged_note(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    mix = Mixture({"a": 1.0, "b": 3.0})
    assert mix.to_dict() == {"a": 0.25, "b": 0.75}
    notes = [r for r in caplog.records if r.name == LOGGER and "normalised" in r.getMessage()]
    assert len(notes) == 1
    assert "4" in notes[0].getMessage()  # the sum it found


def test_normalises_just_outside_tolerance_with_note(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    mix = Mixture({"a": 0.5, "b": 0.5 + 2e-6})
    assert math.isclose(sum(mix.values()), 1.0, abs_tol=1e-12)
    assert any("normalised" in r.getMessage() for r in caplog.records if r.name == LOGGER)


@pytest.mark.parametrize("delta", [0.0, 5e-7, -5e-7, 1e-9])
def test_no_note_within_tolerance(caplog, delta):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    mix = Mixture({"a": 0.5, "b": 0.5 + delta})
    assert not [r for r in caplog.records if r.name == LOGGER]
    # still exactly rescaled onto the simplex
    assert math.isclose(sum(mix.values()), 1.0, abs_tol=1e-12)


def test_normalize_false_rejects_off_sum():
    with pytest.raises(ValueError, match=r"sum to 1\.5, not 1 \(normalize=False\)"):
        Mixture({"a": 1.0, "b": 0.5}, normalize=False)
    assert Mixture({"a": 0.25, "b": 0.75}, normalize=False).to_dict() == {"a": 0.25, "b": 0.75}


def test_constructors_uniform_and_proportional():
    assert Mixture.uniform(["a", "b", "c", "d"]).to_dict() == dict.fromkeys("abcd", 0.25)
    prop = Mixture.proportional({"a": 100, "b": 300})
    assert prop.to_dict() == {"a": 0.25, "b": 0.75}


def test_mapping_protocol_eq_hash_repr():
    mix = Mixture([("b", 0.75), ("a", 0.25)])
    assert list(mix) == ["b", "a"] and len(mix) == 2
    assert mix.domains == ["b", "a"]
    assert mix == {"a": 0.25, "b": 0.75}
    assert mix == Mixture({"a": 0.25, "b": 0.75})
    assert mix != Mixture({"a": 0.5, "b": 0.5})
    assert (mix == 3) is False
    assert hash(mix) == hash(Mixture([("b", 0.75), ("a", 0.25)]))
    assert repr(mix) == "Mixture(b=0.7500, a=0.2500)"
    with pytest.raises(KeyError):
        mix["zeta"]
    np.testing.assert_array_equal(mix.to_array(), [0.75, 0.25])
    np.testing.assert_array_equal(mix.to_array(["a", "zeta", "b"]), [0.25, 0.0, 0.75])
    assert mix.allclose({"a": 0.25 + 1e-12, "b": 0.75})
    assert not mix.allclose({"a": 0.25, "b": 0.75, "c": 0.0})
    assert not mix.allclose({"a": 0.3, "b": 0.7})


# -- collapse / expand ------------------------------------------------------------------------------


def test_collapse_hand_worked_example():
    old = Mixture({"a": 0.25, "b": 0.25, "c": 0.5})
    collapsed, internals = old.collapse({"old": ["a", "b", "c"]})
    assert collapsed.to_dict() == {"old": 1.0}
    assert internals["old"].to_dict() == {"a": 0.25, "b": 0.25, "c": 0.5}

    expanded = Mixture({"old": 0.4, "new": 0.6}).expand({"old": internals["old"]})
    assert expanded.domains == ["a", "b", "c", "new"]
    assert expanded.to_dict() == pytest.approx({"a": 0.1, "b": 0.1, "c": 0.2, "new": 0.6}, abs=1e-12)
    assert expanded.allclose({"a": 0.1, "b": 0.1, "c": 0.2, "new": 0.6}, atol=1e-12)


def test_collapse_partial_groups_and_round_trip():
    mix = Mixture({"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.4})
    collapsed, internals = mix.collapse({"ab": ["a", "b"], "cd": ["c", "d"]})
    assert collapsed.to_dict() == pytest.approx({"ab": 0.4, "cd": 0.6})
    assert internals["ab"].to_dict() == pytest.approx({"a": 0.25, "b": 0.75})
    assert internals["cd"].to_dict() == pytest.approx({"c": 1 / 3, "d": 2 / 3})
    assert collapsed.expand(internals).allclose(mix, atol=1e-12)

    # ungrouped domains pass through, keeping their order relative to the group's first member
    collapsed, internals = mix.collapse({"bd": ["b", "d"]})
    assert collapsed.domains == ["a", "bd", "c"]
    assert collapsed.to_dict() == pytest.approx({"a": 0.1, "bd": 0.7, "c": 0.2})
    assert collapsed.expand(internals).allclose(mix, atol=1e-12)


def test_collapse_virtual_name_may_reuse_a_member_name():
    mix = Mixture({"web": 0.5, "web2": 0.25, "code": 0.25})
    collapsed, internals = mix.collapse({"web": ["web", "web2"]})
    assert collapsed.to_dict() == pytest.approx({"web": 0.75, "code": 0.25})
    assert internals["web"].to_dict() == pytest.approx({"web": 2 / 3, "web2": 1 / 3})


def test_collapse_all_zero_group_gets_uniform_internals():
    mix = Mixture({"a": 0.0, "b": 0.0, "c": 1.0})
    collapsed, internals = mix.collapse({"old": ["a", "b"]})
    assert collapsed.to_dict() == {"old": 0.0, "c": 1.0}
    assert internals["old"].to_dict() == {"a": 0.5, "b": 0.5}
    # giving the group weight later splits it evenly
    assert Mixture({"old": 0.5, "c": 0.5}).expand(internals).to_dict() == pytest.approx(
        {"a": 0.25, "b": 0.25, "c": 0.5}
    )
    assert collapsed.expand(internals).to_dict() == {"a": 0.0, "b": 0.0, "c": 1.0}


def test_collapse_errors():
    mix = Mixture({"a": 0.25, "b": 0.25, "c": 0.5})
    with pytest.raises(ValueError, match=r"group 'g' has no members"):
        mix.collapse({"g": []})
    with pytest.raises(ValueError, match=r"group 'g' names 'zeta', which is not in this mixture"):
        mix.collapse({"g": ["a", "zeta"]})
    with pytest.raises(ValueError, match=r"'a' is in groups 'g1' and 'g2'"):
        mix.collapse({"g1": ["a", "b"], "g2": ["a", "c"]})
    with pytest.raises(ValueError, match=r"virtual name 'c' clashes with an existing domain"):
        mix.collapse({"c": ["a", "b"]})
    with pytest.raises(ValueError, match=r"virtual domain name 'bad name' is not a valid domain name"):
        mix.collapse({"bad name": ["a", "b"]})


def test_expand_normalises_internals_and_adds_shared_members():
    # internal ratios given unnormalised (2:6) are normalised
    expanded = Mixture({"v": 0.5, "c": 0.5}).expand({"v": {"a": 2.0, "b": 6.0}})
    assert expanded.to_dict() == pytest.approx({"a": 0.125, "b": 0.375, "c": 0.5})
    # a member also named directly gets both shares
    expanded = Mixture({"v": 0.5, "a": 0.5}).expand({"v": {"a": 0.5, "b": 0.5}})
    assert expanded.to_dict() == pytest.approx({"a": 0.75, "b": 0.25})


def test_expand_unknown_virtual_domain_error():
    with pytest.raises(ValueError, match=r"virtual domains \['ghost'\] are not in this mixture"):
        Mixture({"a": 1.0}).expand({"ghost": {"x": 1.0}})


def test_expansion_matrix_matches_expand():
    full = Mixture({"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.15, "e": 0.25})
    _, internals = full.collapse({"old": ["a", "b", "c"]})
    target = Mixture({"old": 0.3, "d": 0.5, "e": 0.2})
    full_names = ["e", "d", "c", "b", "a"]  # any order
    matrix = expansion_matrix(target.domains, internals, full_names)
    assert matrix.shape == (5, 3)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0)  # columns are distributions
    np.testing.assert_allclose(matrix @ target.to_array(), target.expand(internals).to_array(full_names), atol=1e-12)
    # ordinary domains map through unit vectors
    np.testing.assert_array_equal(matrix[:, target.domains.index("d")], [0, 1, 0, 0, 0])
    # the hand-worked example, too
    hand = expansion_matrix(["old", "new"], {"old": {"a": 0.25, "b": 0.25, "c": 0.5}}, ["a", "b", "c", "new"])
    np.testing.assert_allclose(hand @ np.array([0.4, 0.6]), [0.1, 0.1, 0.2, 0.6], atol=1e-12)


def test_expansion_matrix_errors():
    with pytest.raises(ValueError, match=r"member 'zeta' of 'v' is not a full domain"):
        expansion_matrix(["v"], {"v": {"a": 0.5, "zeta": 0.5}}, ["a", "b"])
    with pytest.raises(ValueError, match=r"'q' is neither a virtual nor a full domain"):
        expansion_matrix(["q"], {}, ["a", "b"])


# -- JSON -------------------------------------------------------------------------------------------


def test_json_round_trip_with_extra_fields():
    mix = Mixture({"web:news": 0.125, "code_python": 0.375, "c++": 0.5})
    text = mix.to_json(step=7, strategy="uniform")
    data = json.loads(text)
    assert data == {"weights": mix.to_dict(), "step": 7, "strategy": "uniform"}
    back = Mixture.from_json(text)
    assert back == mix and back.domains == mix.domains


def test_from_json_bare_object_and_errors():
    assert Mixture.from_json('{"a": 1, "b": 3}').to_dict() == {"a": 0.25, "b": 0.75}
    with pytest.raises(ValueError, match="must be an object"):
        Mixture.from_json("[0.5, 0.5]")
    with pytest.raises(ValueError, match=r"'b'.*>= 0"):
        Mixture.from_json('{"weights": {"a": 1, "b": -1}}')
    with pytest.raises(json.JSONDecodeError):
        Mixture.from_json("{not json")


def test_save_load_file(tmp_path):
    mix = Mixture({"a": 0.2, "b": 0.8})
    path = tmp_path / "nested" / "deeper" / "mix.json"  # parent folders are created
    mix.save(path, step=3)
    assert json.loads(path.read_text())["step"] == 3
    assert Mixture.load(path) == mix
    assert Mixture.load(str(path)) == mix


def test_save_load_folder(tmp_path):
    mix = Mixture({"a": 0.2, "b": 0.8})
    folder = tmp_path / "run"
    folder.mkdir()
    mix.save(folder)
    assert (folder / MIXTURE_FILE).is_file()
    assert Mixture.load(folder) == mix
    assert Mixture.load(str(folder)).domains == ["a", "b"]


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Mixture.load(tmp_path / "nope.json")


# -- restrict / from_array --------------------------------------------------------------------------


def test_restrict_renormalises():
    mix = Mixture({"a": 0.2, "b": 0.3, "c": 0.5})
    assert mix.restrict(["a", "c"]).to_dict() == pytest.approx({"a": 2 / 7, "c": 5 / 7})
    assert mix.restrict(["c", "a"]).domains == ["c", "a"]
    assert mix.restrict(["b"]).to_dict() == {"b": 1.0}


def test_restrict_errors():
    mix = Mixture({"a": 0.0, "b": 0.3, "c": 0.7})
    with pytest.raises(ValueError, match=r"restrict: domains \['zeta'\] are not in this mixture"):
        mix.restrict(["a", "zeta"])
    with pytest.raises(ValueError, match="sum to 0"):
        mix.restrict(["a"])


def test_from_array_clips_solver_noise():
    mix = Mixture.from_array(["a", "b", "c"], np.array([0.5, -1e-12, 0.5]))
    assert mix["b"] == 0.0 and math.copysign(1.0, mix["b"]) == 1.0  # a true +0.0
    assert mix.to_dict() == {"a": 0.5, "b": 0.0, "c": 0.5}
    # lists, column vectors and ints work too
    assert Mixture.from_array(["a", "b"], [[1], [3]]).to_dict() == {"a": 0.25, "b": 0.75}


def test_from_array_keeps_real_negatives_an_error():
    with pytest.raises(ValueError, match=r"'b'.*>= 0"):
        Mixture.from_array(["a", "b"], [1.0, -1e-3])
    with pytest.raises(ValueError, match=r"'b'.*>= 0"):
        Mixture.from_array(["a", "b"], [1.0, -1e-9])


def test_from_array_length_mismatch():
    with pytest.raises(ValueError, match="3 domains but 2 weights"):
        Mixture.from_array(["a", "b", "c"], [0.5, 0.5])


def test_from_array_duplicate_names():
    with pytest.raises(ValueError, match="'a' twice"):
        Mixture.from_array(["a", "a"], [0.5, 0.5])


# -- regressions of bugs found by these tests ------------------------------------------------------


def test_equal_mixtures_hash_equal():
    m1, m2 = Mixture([("a", 0.25), ("b", 0.75)]), Mixture([("b", 0.75), ("a", 0.25)])
    assert m1 == m2
    assert hash(m1) == hash(m2)
    assert len({m1, m2}) == 1


def test_huge_finite_weights_stay_on_simplex():
    try:
        mix = Mixture({"a": 1e308, "b": 1e308})
    except ValueError:
        return  # rejecting is acceptable too
    assert math.isclose(sum(mix.values()), 1.0)
