"""The README's performance row, rendered from ``benchmarks/results/perf.json`` (every figure quoted from the file).

    python -m benchmarks.perf.readme            # rewrite the row in README.md from the committed perf.json
    python -m benchmarks.perf.readme --check    # exit 1 when the README row differs from the file

``tests/test_perf_benchmark.py`` checks that the README holds exactly :func:`readme_row` of the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .common import RESULTS_DIR, ROOT


ROW_START = "| Performance"
README = os.path.join(ROOT, "README.md")
PERF_JSON = os.path.join(RESULTS_DIR, "perf.json")


def _mtok(value: float) -> str:
    return f"{value / 1e6:.3g} M"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _speed(part: dict) -> str:
    runs = part.get("runs", {})
    counted = any("flops_per_step_counted" in r for r in runs.values())
    how = (
        "MFU from counted FLOPs / "
        + (
            f"{part['peak_flops'] / 1e12:.1f} TFLOP/s peak"
            if part.get("peak_flops")
            else f"no peak ({part.get('mfu_none_reason', 'unknown device')})"
        )
        if counted
        else "MFU from the hand formula / 989.5 TFLOP/s (file older than counted FLOPs)"
    )
    pieces = []
    for key, run in runs.items():
        if "tokens_per_s" in run:
            pieces.append(f"{key} {_mtok(run['tokens_per_s'])} tok/s ({_pct(run.get('mfu'))})")
        else:
            pieces.append(f"{key} {'skipped' if 'skipped' in run else 'error'}")
    text = f"training speed ({how}): " + ", ".join(pieces) if pieces else "training speed: not run"
    for name in ("probe", "branch"):
        ratio = part.get(f"{name}_vs_train_tokens_per_s")
        text += f"; {name} tokens/s vs training: " + ("not measured" if ratio is None else f"**{ratio:.2f}×**")
    return text


def _scaling(part: dict) -> str:
    series = []
    for kind in ("op_mix_runs", "olmix_reuse_runs"):
        for preset, runs in part.get(kind, {}).items():
            if runs:
                points = " / ".join(f"{r['domains']}: {r['seconds']:.1f} s" for r in runs)
                series.append(f"{kind.removesuffix('_runs')} {preset} {points}")
    return "one decision by domains: " + ("; ".join(series) if series else "not run")


def readme_row(result: dict) -> str:
    """The README table row of a perf.json document (one line, no trailing newline)."""
    parts = result.get("parts", {})
    figures = []
    inter = parts.get("interleaver", {})
    if "speedup_vs_map" in inter:
        figures.append(
            f"interleaver {inter['interleaver_blocks_per_s'] / 1e3:.0f} k blocks/s: "
            f"{inter['speedup_vs_map']:.0f}× / {inter['speedup_vs_iterable']:.0f}× `interleave_datasets` "
            "(map / iterable)"
        )
    ratios = parts.get("overhead", {}).get("ratios_vs_plain", {})
    if ratios:
        figures.append(
            "DataMixTrainer step vs plain `Trainer`: "
            + ", ".join(f"{k.removeprefix('datamix_')} {v['step_ratio']:.3f}×" for k, v in ratios.items())
        )
    candidates = parts.get("candidates", {}).get("by_candidates", {})
    if candidates:
        figures.append(
            "candidate evaluation per candidate vs a plain forward: "
            + ", ".join(
                f"C={c} {r['per_candidate_over_plain_forward']:.2f}×"
                for c, r in candidates.items()
                if "per_candidate_over_plain_forward" in r
            )
        )
    small = parts.get("laws", {}).get("small_case", {})
    if "speedup" in small:
        figures.append(f"law fit batched vs per-start loop {small['speedup']:.1f}×")
    if "speed" in parts:
        figures.append(_speed(parts["speed"]))
    if "scaling" in parts:
        figures.append(_scaling(parts["scaling"]))
    targets = result.get("targets", [])
    if targets:
        missed = [f"{t['target']}: {t['measured']}" for t in targets if not t["met"]]
        figures.append(
            f"targets met: {len(targets) - len(missed)} of {len(targets)}"
            + (f"; **missed**: {', '.join(missed)}" if missed else "")
        )
    where = (
        f"{result.get('device', '?').split(';')[0]}, commit {str(result.get('commit'))[:9]}, {result.get('status')}"
    )
    others = result.get("parts_from_other_runs")
    if others:
        where += f"; parts {', '.join(others)} from other runs (recorded in the file)"
    return (
        f"{ROW_START} (`python -m benchmarks.perf`, {where}; row rendered by `python -m benchmarks.perf.readme`) | "
        + "; ".join(figures)
        + " | `benchmarks/results/perf.json` |"
    )


def replace_row(text: str, row: str) -> str:
    """``text`` (the README) with its performance row replaced by ``row``; ValueError when it has none or several."""
    lines = text.split("\n")
    found = [i for i, line in enumerate(lines) if line.startswith(ROW_START)]
    if len(found) != 1:
        raise ValueError(f"README.md: expected one line starting with {ROW_START!r}, found {len(found)}.")
    lines[found[0]] = row
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf", default=PERF_JSON, help="perf.json to render")
    parser.add_argument("--readme", default=README, help="README to update")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when the row differs")
    opts = parser.parse_args(argv)
    with open(opts.perf, encoding="utf-8") as handle:
        row = readme_row(json.load(handle))
    with open(opts.readme, encoding="utf-8") as handle:
        text = handle.read()
    updated = replace_row(text, row)
    if opts.check:
        if updated != text:
            print(
                f"{opts.readme}: the performance row differs from {opts.perf}; run python -m benchmarks.perf.readme",
                file=sys.stderr,
            )
            return 1
        return 0
    with open(opts.readme, "w", encoding="utf-8") as handle:
        handle.write(updated)
    print(f"{opts.readme}: performance row rendered from {opts.perf}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
