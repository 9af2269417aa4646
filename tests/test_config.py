"""DataMixArguments validation; the strategy's settings travel as a mapping from Python."""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType

import pytest

from hf_datamix import DataMixArguments
from hf_datamix.config import strategy_settings


def make_args(tmp_path, **kwargs) -> DataMixArguments:
    return DataMixArguments(output_dir=str(tmp_path), report_to="none", **kwargs)


# -- DataMixArguments -------------------------------------------------------------------------------


def test_defaults(tmp_path):
    args = make_args(tmp_path)
    assert args.strategy == "uniform"
    assert args.strategy_args == {}
    assert args.block_size == 256 and args.segments_per_block == 1
    assert args.on_exhausted == "redistribute"
    assert args.max_repetitions == 4.0


@pytest.mark.parametrize("block_size", [1, 0, -8])
def test_block_size_too_small(tmp_path, block_size):
    with pytest.raises(ValueError, match=rf"block_size={block_size}: use at least 2 tokens"):
        make_args(tmp_path, block_size=block_size)


def test_block_size_two_is_fine(tmp_path):
    assert make_args(tmp_path, block_size=2).block_size == 2


@pytest.mark.parametrize("block_size, segments", [(256, 3), (256, 0), (256, -1), (10, 4), (8, 16)])
def test_segments_per_block_must_divide(tmp_path, block_size, segments):
    with pytest.raises(
        ValueError, match=rf"segments_per_block={segments} must be >= 1 and divide block_size={block_size}"
    ):
        make_args(tmp_path, block_size=block_size, segments_per_block=segments)


@pytest.mark.parametrize("block_size, segments", [(256, 4), (256, 256), (12, 3), (2, 2)])
def test_segments_per_block_ok(tmp_path, block_size, segments):
    assert make_args(tmp_path, block_size=block_size, segments_per_block=segments).segments_per_block == segments


@pytest.mark.parametrize("action", ["drop", "Redistribute", "", "skip"])
def test_bad_on_exhausted(tmp_path, action):
    with pytest.raises(ValueError, match=rf"on_exhausted={action!r}; use one of \['redistribute', 'stop', 'error'\]"):
        make_args(tmp_path, on_exhausted=action)


@pytest.mark.parametrize("action", ["redistribute", "stop", "error"])
def test_good_on_exhausted(tmp_path, action):
    assert make_args(tmp_path, on_exhausted=action).on_exhausted == action


@pytest.mark.parametrize("reps", [-1, -0.5, float("nan")])
def test_negative_max_repetitions(tmp_path, reps):
    with pytest.raises(ValueError, match=r"max_repetitions=.*use a positive number of epochs, or 0 for no cap"):
        make_args(tmp_path, max_repetitions=reps)


@pytest.mark.parametrize("reps", [0, 0.0])
def test_zero_max_repetitions_means_no_cap(tmp_path, reps):
    assert make_args(tmp_path, max_repetitions=reps).max_repetitions is None


@pytest.mark.parametrize("reps", [None, 0.5, 1, 4.0])
def test_good_max_repetitions(tmp_path, reps):
    assert make_args(tmp_path, max_repetitions=reps).max_repetitions == reps


@pytest.mark.parametrize("blocks", [0, -3])
def test_bad_max_eval_blocks(tmp_path, blocks):
    with pytest.raises(ValueError, match=rf"max_eval_blocks={blocks}"):
        make_args(tmp_path, max_eval_blocks=blocks)


def test_strategy_args_are_a_mapping_from_python(tmp_path):
    assert make_args(tmp_path, strategy_args={"k": 1}).strategy_args == {"k": 1}
    assert make_args(tmp_path, strategy_args=MappingProxyType({"k": [1]})).strategy_args == {"k": [1]}
    for text in ("a=1,b=x", '{"k": 1}'):  # text was a second way in: the flags are the one way
        with pytest.raises(ValueError, match=r"strategy_args=.*mapping from Python.*--probe_steps 25"):
            make_args(tmp_path, strategy_args=text)


def test_training_arguments_fields_still_work(tmp_path):
    args = make_args(tmp_path, learning_rate=1e-3, max_steps=5, strategy="natural", mixing_seed=7)
    assert args.learning_rate == 1e-3 and args.max_steps == 5
    assert args.strategy == "natural" and args.mixing_seed == 7


def test_hf_argument_parser(tmp_path):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DataMixArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--report_to",
            "none",
            "--strategy",
            "natural",
            "--block_size",
            "64",
            "--segments_per_block",
            "2",
            "--max_repetitions",
            "2",
            "--on_exhausted",
            "stop",
        ]
    )
    assert args.strategy == "natural" and args.strategy_args == {}
    assert (args.block_size, args.segments_per_block, args.max_repetitions, args.on_exhausted) == (64, 2, 2.0, "stop")
    (args,) = parser.parse_dict({"output_dir": str(tmp_path), "report_to": "none", "strategy_args": {"k": [1]}})
    assert args.strategy_args == {"k": [1]}
    with pytest.raises(ValueError, match="segments_per_block=3"):
        parser.parse_dict({"output_dir": str(tmp_path), "report_to": "none", "segments_per_block": 3})


def test_strategy_settings_copy_a_mapping():
    source = OrderedDict(a=1)
    parsed = strategy_settings(source)
    assert parsed == {"a": 1} and parsed is not source and strategy_settings(None) == {}
    with pytest.raises(ValueError, match=r"strategy_args=42"):
        strategy_settings(42)


def test_processes_that_would_not_form_one_job_are_refused_with_the_fix():
    from hf_datamix.config import one_job_problem

    assert one_job_problem(1, 1, False) is None and one_job_problem(2, 2, True) is None
    message = one_job_problem(2, 1, False)
    assert "WORLD_SIZE=2" in message and "world_size=1" in message and "--use_cpu true" in message
    assert "distributed_type" in one_job_problem(4, 1, True)
