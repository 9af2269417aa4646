"""Every README shell block marked ``<!-- tested -->`` runs, in order, with tiny settings appended.

Commands run in a scratch folder holding links to ``recipes/`` and ``accelerate_configs/``, so the
README's relative paths (``outputs/...``) work and later blocks see what earlier ones wrote.
``pip install`` and ``pytest`` parts are skipped (the suite itself runs after the install).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Appended after the README's own flags, so they win (argparse keeps the last value).
TINY = {
    "midtrain.py": [
        "--max_steps",
        "6",
        "--pretrain_steps",
        "4",
        "--block_size",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--save_steps",
        "2",
        "--max_eval_blocks",
        "2",
        "--logging_steps",
        "2",
    ],
    "pretrain.py": [
        "--max_steps",
        "3",
        "--block_size",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--max_eval_blocks",
        "2",
    ],
    "instruct.py": [
        "--strategies",
        "op_mix,on_policy_distill",
        "--steps_per_stage",
        "2",
        "--pretrain_steps",
        "2",
        "--task_eval_examples",
        "2",
        "--max_eval_blocks",
        "4",
        "--tasks",
        "arith,book",
        "--strategy_settings",
        '{"op_mix": {"probe_steps": 1, "eval_blocks": 2, "alpha_points": 3, '
        '"law_starts": 8}, "on_policy_distill": {"max_new_tokens": 2}}',
    ],
    "swarm.py": [
        "--swarm_size",
        "5",
        "--proxy_steps",
        "2",
        "--proxy_batch_size",
        "2",
        "--proxy_eval_blocks",
        "2",
        "--block_size",
        "64",
        "--initial_domains",
        "scripture,code,arithmetic",
    ],
}
TINY_OP_MIX = [
    "--probe_steps",
    "2",
    "--eval_blocks",
    "2",
    "--law_starts",
    "10",
    "--probe_batch_size",
    "2",
    "--redecide_every",
    "2",
]


def readme_blocks(readme: str) -> list[list[str]]:
    """The command lines of every ```bash block preceded by ``<!-- tested -->``."""
    blocks = re.findall(r"<!-- tested -->\s*```bash\n(.*?)```", readme, flags=re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        commands.append([line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()])
    return commands


def to_argv(part: list[str]) -> list[str] | None:
    """The subprocess argv for one README command (None: skipped)."""
    if part[0] in ("pip", "pytest"):
        return None
    if part[:2] == ["accelerate", "launch"]:
        script = next(i for i, word in enumerate(part) if word.endswith(".py"))
        name = os.path.basename(part[script])
        extra = list(TINY[name])
        strategy = part[part.index("--strategy") + 1] if "--strategy" in part else "op_mix"
        if name == "midtrain.py" and strategy == "op_mix":
            extra += TINY_OP_MIX
        options = part[2:script] or ["--num_processes", "1", "--cpu"]
        return [sys.executable, "-m", "accelerate.commands.launch", *options, *part[script:], *extra]
    if part[0] == "hf-datamix":
        return [sys.executable, "-m", "hf_datamix.cli", *part[1:]]
    raise AssertionError(f"tests/test_readme.py does not know how to run: {' '.join(part)}")


def test_readme_marks_the_main_commands_as_tested():
    commands = [line for block in readme_blocks(open(os.path.join(ROOT, "README.md")).read()) for line in block]
    assert "pip install -e . && accelerate launch recipes/midtrain.py" in commands
    assert any(line.startswith("hf-datamix fit") for line in commands)
    assert any(line.startswith("hf-datamix report") for line in commands)


def test_tested_readme_commands_run(tmp_path):
    for folder in ("recipes", "accelerate_configs"):
        os.symlink(os.path.join(ROOT, folder), tmp_path / folder)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for block in readme_blocks(open(os.path.join(ROOT, "README.md")).read()):
        for line in block:
            for part in line.split("&&"):
                argv = to_argv(shlex.split(part))
                if argv is None:
                    continue
                result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
                assert result.returncode == 0, (
                    f"README command failed: {part}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
                )
    outputs = tmp_path / "outputs"
    for run in ("midtrain", "op_mix", "retrain", "natural", "uniform", "swarm", "instruct"):
        assert (outputs / run).is_dir(), run
    assert (outputs / "midtrain" / "report.md").is_file() and (outputs / "compare").is_dir()
    assert (tmp_path / "mixture.json").is_file()
