"""benchmarks/interpolation.py at tiny size on CPU: every method timed, every figure recorded, same losses."""

from __future__ import annotations

import importlib.util
import json
import os


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_interpolation_benchmark_records_every_method(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "interpolation", os.path.join(ROOT, "benchmarks", "interpolation.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--tiny", "--cpu", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "interpolation.json").read_text())
    assert "benchmarks/interpolation.py --tiny --cpu" in result["command"]
    assert result["commit"] and result["device"].startswith("CPU") and result["software"]["peft"]
    tiny = result["results"]["tiny"]
    assert tiny["plain_forward_s"] > 0 and tiny["non_embedding_parameters"] > 0
    assert set(tiny["by_candidates"]) == {"4", "12"}
    for record in tiny["by_candidates"].values():
        assert record["fastest"] in bench.METHODS
        assert record["hook"]["over_hook"] == 1.0
        for method in bench.METHODS:
            figures = record[method]
            assert figures["seconds"] > 0 and len(figures["times_s"]) == result["settings"]["reps"]
            # The three are the same candidate: fp32 on CPU, equal up to rounding.
            assert figures["max_abs_loss_difference_vs_hook"] < 1e-4, method
