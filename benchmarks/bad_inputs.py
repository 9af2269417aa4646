"""Every bad input we know of, tried on the real recipes and commands: did it fail before any compute, and how?

    python benchmarks/bad_inputs.py --commit $(git rev-parse HEAD)        # writes benchmarks/results/bad_inputs.json

Each case runs one command (``python recipes/...``, ``hf-datamix ...`` or a few lines of the Python API) in a
fresh folder with a fresh packed-block cache, offline (``HF_HUB_OFFLINE=1``), and records its exit status, the
message it printed (the ``error:`` line, or a traceback's last line), whether a traceback was printed, and
whether it got as far as compute: domains tokenised (blocks in the cache, or datasets' "Tokenising" bar) or a
training step (a checkpoint, ``mixtures.json`` or the base-model folder in the output folder).
``failed_before_compute`` is true when it failed with neither.  Cases that need a checkpoint copy one made by
a 2-step run of ``recipes/pretrain.py`` at the start.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import provenance  # noqa: E402


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "bad_inputs.json")
PRETRAIN, MIDTRAIN, INSTRUCT = (
    os.path.join(ROOT, "recipes", f"{name}.py") for name in ("pretrain", "midtrain", "instruct")
)
SMALL = ["--max_steps", "2", "--block_size", "64", "--per_device_train_batch_size", "2", "--max_eval_blocks", "2"]


def files(work: str) -> dict[str, str]:
    """Input files the cases point at, written into ``work``."""
    one = os.path.join(work, "one.jsonl")
    with open(one, "w") as handle:
        handle.write(json.dumps({"text": "a few words of text " * 20}) + "\n")
    paths = {"one": one}

    def write(name, text):
        paths[name] = os.path.join(work, name)
        with open(paths[name], "w") as handle:
            handle.write(text)

    write("empty.jsonl", "")
    write("notext.jsonl", json.dumps({"body": "words"}) + "\n")
    write("corrupt_mixture.json", '{"weights": {"scripture": 0.5,')
    write("unknown_mixture.json", json.dumps({"weights": {"scripture": 0.5, "klingon": 0.5}}))
    write("bad.yaml", "max_steps: [1,\n")
    write("unknown_key.yaml", "max_stepz: 3\n")
    write("list.yaml", "- max_steps\n")
    write("domains_empty.yaml", f"code: {{train: {paths['empty.jsonl']}, eval: {one}}}\n")
    write("domains_missing.yaml", f"code: {{train: {os.path.join(work, 'nope.jsonl')}, eval: {one}}}\n")
    write("domains_notext.yaml", f"code: {{train: {paths['notext.jsonl']}, eval: {one}}}\n")
    write("domains_eval_size.yaml", f"code: {{train: {one}, eval_size: 1.5}}\n")
    write("domains_not_mapping.yaml", "code: 5\n")
    write("tiny.jsonl", json.dumps({"text": "two words"}) + "\n")
    write("domains_tiny.yaml", f"code: {{train: {paths['tiny.jsonl']}, eval: {one}}}\n")
    with gzip.open(os.path.join(work, "empty.jsonl.gz"), "wt"):
        pass
    write("domains_empty_gz.yaml", f"code: {{train: {os.path.join(work, 'empty.jsonl.gz')}, eval: {one}}}\n")
    write(
        "domains_stages.yaml",
        f"a: {{train: {one}, eval: {one}}}\nb: {{train: {one}, eval: {one}}}\n"  # stage 2's
        f"code: {{train: {paths['empty.jsonl']}, eval: {one}}}\n",
    )  # domain is the empty one
    return paths


def cases(f: dict[str, str], checkpoints: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """``(id, what is wrong, command)``; ``{out}`` in a command is the case's output folder."""
    py = sys.executable
    api = lambda code: [py, "-c", code]  # noqa: E731
    return [
        ("unknown_strategy", "--strategy misspelt", [py, MIDTRAIN, "--strategy", "op_mx"]),
        ("unknown_strategy_setting", "a setting op_mix does not have", [py, MIDTRAIN, "--probe_stepz", "3"]),
        ("setting_of_wrong_type", "--probe_steps abc", [py, MIDTRAIN, "--probe_steps", "abc"]),
        (
            "setting_out_of_range",
            "--warmup_fraction 2",
            [py, PRETRAIN, "--strategy", "op_mix", "--warmup_fraction", "2"],
        ),
        (
            "strategy_args_on_the_command_line",
            "--strategy_args probe_steps=5 (settings are flags)",
            [py, MIDTRAIN, "--strategy_args", "probe_steps=5"],
        ),
        ("fixed_without_weights", "--strategy fixed without weights", [py, PRETRAIN, "--strategy", "fixed"]),
        (
            "fixed_unnamed_domains",
            "fixed weights that leave domains out",
            [py, MIDTRAIN, "--strategy", "fixed", "--weights", '{"scripture": 1}'],
        ),
        ("midtrain_max_steps_0", "midtrain --max_steps 0", [py, MIDTRAIN, "--max_steps", "0"]),
        ("midtrain_max_steps_below_stages", "midtrain --max_steps 2 for 3 stages", [py, MIDTRAIN, "--max_steps", "2"]),
        ("pretrain_max_steps_0", "pretrain --max_steps 0", [py, PRETRAIN, "--max_steps", "0"]),
        (
            "unknown_added_domain",
            "--added_domains naming no domain",
            [py, MIDTRAIN, "--added_domains", "code;klingon"],
        ),
        ("block_size_1", "--block_size 1", [py, PRETRAIN, "--block_size", "1"]),
        (
            "segments_not_dividing",
            "--segments_per_block 3 with block_size 128",
            [py, PRETRAIN, "--segments_per_block", "3"],
        ),
        ("on_exhausted_unknown", "--on_exhausted explode", [py, PRETRAIN, "--on_exhausted", "explode"]),
        ("max_repetitions_negative", "--max_repetitions -1", [py, PRETRAIN, "--max_repetitions", "-1"]),
        ("max_eval_blocks_0", "--max_eval_blocks 0", [py, PRETRAIN, "--max_eval_blocks", "0"]),
        ("unknown_model_preset", "--model_preset huge", [py, PRETRAIN, "--model_preset", "huge", *SMALL]),
        ("config_missing", "--config that does not exist", [py, PRETRAIN, "--config", "nope.yaml"]),
        ("config_bad_yaml", "--config that is not YAML", [py, PRETRAIN, "--config", f["bad.yaml"]]),
        ("config_unknown_key", "--config with max_stepz", [py, PRETRAIN, "--config", f["unknown_key.yaml"]]),
        ("config_not_mapping", "--config holding a list", [py, PRETRAIN, "--config", f["list.yaml"]]),
        ("domains_file_missing", "--domains FILE that does not exist", [py, PRETRAIN, "--domains", "nope.yaml"]),
        ("domain_file_empty", "a domain's .jsonl is empty", [py, PRETRAIN, "--domains", f["domains_empty.yaml"]]),
        (
            "domain_file_empty_gz",
            "a domain's .jsonl.gz holds no rows",
            [py, PRETRAIN, "--domains", f["domains_empty_gz.yaml"], *SMALL],
        ),
        (
            "domain_file_missing",
            "a domain's local file does not exist",
            [py, PRETRAIN, "--domains", f["domains_missing.yaml"]],
        ),
        (
            "domain_no_text_column",
            "a domain's rows have no 'text'",
            [py, PRETRAIN, "--domains", f["domains_notext.yaml"], *SMALL],
        ),
        ("domain_eval_size_out_of_range", "eval_size: 1.5", [py, PRETRAIN, "--domains", f["domains_eval_size.yaml"]]),
        ("domain_not_a_mapping", "domains: {code: 5}", [py, PRETRAIN, "--domains", f["domains_not_mapping.yaml"]]),
        (
            "domain_smaller_than_a_block",
            "a domain with fewer tokens than one block (known only once tokenised)",
            [py, PRETRAIN, "--domains", f["domains_tiny.yaml"], *SMALL],
        ),
        (
            "later_stage_domain_file_empty",
            "midtrain: the file of a domain added in stage 2 is empty",
            [
                py,
                MIDTRAIN,
                "--domains",
                f["domains_stages.yaml"],
                "--initial_domains",
                "a",
                "--added_domains",
                "b;code",
            ],
        ),
        (
            "init_mixture_corrupt",
            "--init_mixture file is cut short",
            [py, PRETRAIN, "--init_mixture", f["corrupt_mixture.json"]],
        ),
        (
            "init_mixture_unknown_domains",
            "--init_mixture names a domain the run lacks",
            [py, PRETRAIN, "--init_mixture", f["unknown_mixture.json"]],
        ),
        ("init_mixture_offline_hub", "--init_mixture me/x with no network", [py, PRETRAIN, "--init_mixture", "me/x"]),
        (
            "resume_true_nothing",
            "--resume_from_checkpoint true in an empty folder",
            [py, PRETRAIN, "--resume_from_checkpoint", "true"],
        ),
        (
            "resume_missing_folder",
            "--resume_from_checkpoint a folder that does not exist",
            [py, PRETRAIN, "--resume_from_checkpoint", "{out}/checkpoint-99"],
        ),
        (
            "resume_cut_short",
            "--resume_from_checkpoint a checkpoint whose save was cut short",
            [py, PRETRAIN, *SMALL, "--resume_from_checkpoint", checkpoints["cut_short"]],
        ),
        (
            "resume_truncated_state",
            "a truncated datamix_state.json",
            [py, PRETRAIN, *SMALL, "--resume_from_checkpoint", checkpoints["truncated"]],
        ),
        (
            "resume_other_batch",
            "resume with another global batch",
            [
                py,
                PRETRAIN,
                *SMALL[:4],
                "--per_device_train_batch_size",
                "4",
                "--resume_from_checkpoint",
                checkpoints["good"],
            ],
        ),
        (
            "resume_other_strategy",
            "resume with another strategy",
            [py, PRETRAIN, *SMALL, "--strategy", "uniform", "--resume_from_checkpoint", checkpoints["good"]],
        ),
        (
            "instruct_settings_bad_json",
            "instruct --strategy_settings '{op_mix: 1'",
            [py, INSTRUCT, "--strategy_settings", "{op_mix: 1"],
        ),
        (
            "instruct_unknown_strategy_settings",
            "instruct --strategy_settings for an unknown strategy",
            [py, INSTRUCT, "--strategy_settings", '{"op_mx": {}}'],
        ),
        (
            "fit_law_options_bad_json",
            "hf-datamix fit --law-options '{starts: 5'",
            [
                py,
                "-m",
                "hf_datamix.cli",
                "fit",
                "--ratios",
                f["one"],
                "--metrics",
                f["one"],
                "--out",
                "{out}/m.json",
                "--law-options",
                "{starts: 5",
            ],
        ),
        (
            "fit_ratios_missing",
            "hf-datamix fit --ratios that does not exist",
            [
                py,
                "-m",
                "hf_datamix.cli",
                "fit",
                "--ratios",
                "nope.csv",
                "--metrics",
                "nope.csv",
                "--out",
                "{out}/m.json",
            ],
        ),
        (
            "mixture_from_pretrained_offline",
            "Mixture.from_pretrained('me/x') with no network",
            api("from hf_datamix import Mixture; Mixture.from_pretrained('me/x')"),
        ),
        (
            "mixture_negative_weight",
            "Mixture({'a': -1})",
            api("from hf_datamix import Mixture; Mixture({'a': -1, 'b': 1})"),
        ),
    ]


def run_case(case_id: str, command: list[str], work: str, env: dict) -> dict:
    out = os.path.join(work, "cases", case_id)
    os.makedirs(out)
    cache = os.path.join(out, "cache")
    command = [part.replace("{out}", out) for part in command]
    if command[1:2] and command[1].endswith(".py") and "--output_dir" not in command:
        command += ["--output_dir", out]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=out, timeout=900, env=dict(env, HF_DATAMIX_CACHE=cache)
    )
    stderr = result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    message = errors[-1].split(": error: ", 1)[1] if errors else (lines[-1] if lines else "")
    packed = os.path.isdir(cache) and any(files for _, _, files in os.walk(cache))
    trained = any(name.startswith("checkpoint-") or name in ("mixtures.json", "pretrain") for name in os.listdir(out))
    return {
        "id": case_id,
        "command": " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in command).replace(
            sys.executable, "python"
        ),
        "exit_status": result.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "tokenised_data": bool(packed or "Tokenising" in stderr),
        "trained_a_step": trained,
        "failed_before_compute": result.returncode != 0 and not (packed or "Tokenising" in stderr) and not trained,
        "traceback": "Traceback (most recent call last)" in stderr,
        "message": message,
    }


def make_checkpoints(work: str, env: dict) -> dict[str, str]:
    """A complete checkpoint of a 2-step natural run, one cut short and one with a truncated mixing state."""
    run = os.path.join(work, "run")
    subprocess.run(
        [sys.executable, PRETRAIN, *SMALL, "--save_steps", "2", "--output_dir", run],
        check=True,
        capture_output=True,
        env=dict(env, HF_DATAMIX_CACHE=os.path.join(work, "setup-cache")),
    )
    good = os.path.join(run, "checkpoint-2")
    cut, truncated = os.path.join(work, "cut", "checkpoint-2"), os.path.join(work, "trunc", "checkpoint-2")
    shutil.copytree(good, cut)
    os.remove(os.path.join(cut, "datamix_state.json"))  # killed before its mixing state was written
    shutil.copytree(good, truncated)
    with open(os.path.join(truncated, "datamix_state.json"), "r+") as handle:
        handle.truncate(40)
    return {"good": good, "cut_short": cut, "truncated": truncated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default=None, help="commit measured (default: git rev-parse HEAD)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--only", help="comma list of case ids (default: all)")
    opts = parser.parse_args()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    )
    records = []
    with tempfile.TemporaryDirectory() as work:
        paths = files(work)
        checkpoints = make_checkpoints(work, env)
        wanted = set(opts.only.split(",")) if opts.only else None
        for case_id, what, command in cases(paths, checkpoints):
            if wanted and case_id not in wanted:
                continue
            record = {"what": what, **run_case(case_id, command, work, env)}
            # The Python API raises (a traceback is how it reports); recipes and hf-datamix print one line.
            record["interface"] = "api" if command[1] == "-c" else "cli"
            records.append(record)
            clean = record["failed_before_compute"] and not (record["traceback"] and record["interface"] == "cli")
            flag = "ok  " if clean else "LATE" if record["exit_status"] else "RAN "
            print(f"{flag} {case_id:<36} {record['message'][:150]}", flush=True)
    result = {
        **provenance("bad_inputs", opts.commit),
        "how": "each case ran its command once, offline, in a fresh folder and packed-block cache; "
        "failed_before_compute: non-zero exit with no domain tokenised and no training step",
        "cases": len(records),
        "failed_before_compute": sum(r["failed_before_compute"] for r in records),
        "cli_with_traceback": sum(r["traceback"] and r["interface"] == "cli" for r in records),
        "not_tried": {
            "processes_that_would_not_form_one_job": "needs an accelerator: on a machine without one, DataMixArguments "
            "now sets use_cpu for launched processes, so they form one job (tests/test_recipes.py); the refusal's "
            "message is unit-tested (tests/test_config.py)",
        },
        "results": records,
    }
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    with open(opts.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(
        f"{result['failed_before_compute']}/{result['cases']} failed before compute, "
        f"{result['cli_with_traceback']} commands with a traceback; wrote {opts.out}"
    )


if __name__ == "__main__":
    main()
