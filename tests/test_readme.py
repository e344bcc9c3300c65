"""Every command the README shows runs as written, on the embedded sample at small budgets.

The README's bash blocks (all but the Quick start's, which ``.ci/run`` runs itself) are read
line by line: each ``selfsup`` command runs in a fresh folder, in README order, after the
placeholders in ``PLACEHOLDERS`` are replaced (a data folder by the embedded sample or a
generated photo folder, ``~/photos`` by such a folder) and small budgets appended (``SMALL``).
Every other command is listed in ``NOT_RUN`` with the reason; a command of a new kind fails
this test until it is run or listed. The Python blocks run too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.folders import make_folder

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# placeholder in the README -> what it stands for here ({photos}: a generated photo folder)
PLACEHOLDERS = [
    ("--data.root path/to/fashion-mnist", ""), ("--data.root DIR", ""),
    (" [--data mnist --data-root DIR]", ""),  # another data set: needs MNIST's files
    (" [--layer layer3]", ""), (" [--method.jigsaw.plus true]",
                                               " --method.jigsaw.plus true"),
    ("cluster-RUN-fashion-mnist-k100-s0", "cluster-RUN-fashion-mnist-sample-k100-s0"),
    ("cluster-RUN-...-k10-s0", "cluster-RUN-fashion-mnist-sample-k100-s0"),
    ("runs/photos/export", "runs/quickstart/export"), ("~/photos", "{photos}"),
    ("/tmp/e15", "e15"),
]
# appended to each subcommand: the same commands, at budgets a test can afford
SMALL = {
    "pretrain": ["--data.limit", "64", "--model.width", "0.125", "--train.batch_size", "16",
                 "--train.steps", "2", "--optim.warmup_epochs", "0", "--eval.knn_every", "0",
                 "--eval.knn_k", "10", "--run.progress", "false", "--train.num_threads", "1",
                 "--method.moco.queue_size", "32"],
    "linear": ["--epochs", "1"], "finetune": ["--epochs", "1"], "distill": ["--epochs", "1"],
    "transfer": ["--epochs", "1"], "cluster": ["--iters", "3"],
    "knn": ["--k", "10"],
}
# pretrain runs that later commands name by a placeholder (runs/RUN, runs/A, runs/B)
RUN_NAMES = {"--config simclr-v2-fashion-mnist": "RUN",
             "--config moco-v2-fashion-mnist --method.ft.interpolate true": "A",
             "--config jigsaw-fashion-mnist": "B"}
NOT_RUN = {
    "pip install": "installs torch from an index; CI's setup installs the project this way",
    "torchrun": "several processes: tests/train/test_resume_rules.py and the DDP tests run "
                "torchrun on the CPU",
    "cp ": "copies the pictures into docs/ (the recipe's other lines run here)",
}


def blocks(lang: str) -> list[tuple[str, str]]:
    """``(section, body)`` of each fenced block of ``lang``, the Quick start's left out."""
    out, section = [], ""
    for m in re.finditer(r"^(## [^\n]*)$|^```" + lang + r"\n(.*?)^```", README.read_text(),
                         re.M | re.S):
        if m.group(1):
            section = m.group(1)
        elif section != "## Quick start":
            out.append((section, m.group(2)))
    return out


def commands() -> list[str]:
    lines = []
    for _, body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(re.sub(r"\s+", " ", line))
    return lines


def prepare(cmd: str, photos: Path) -> list[str] | None:
    """The argv that runs ``cmd`` here, or None for a command in NOT_RUN."""
    if any(cmd.startswith(p) for p in NOT_RUN):
        return None
    assert cmd.startswith("selfsup "), f"README command of a new kind (run or list it): {cmd}"
    for old, new in PLACEHOLDERS:
        cmd = cmd.replace(old, new)
    cmd = re.sub(r"\s+", " ", cmd)
    argv = cmd.format(photos=photos).split()[1:]
    sub = argv[0]
    if sub == "pretrain" and "--resume" not in argv:
        name = next((n for k, n in RUN_NAMES.items() if k in cmd), None)
        own_data = any(x in cmd for x in ("simclr-folder", "--data.dataset store"))
        argv += [*SMALL["pretrain"], *([] if own_data else ["--data.dataset",
                                                             "fashion-mnist-sample"]),
                 *(["--run.name", name] if name else [])]
    elif sub in SMALL and sub != "pretrain":  # a resume keeps the run's own settings
        argv += SMALL[sub]
    return argv


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    photos = make_folder(tmp_path / "photos", per_class=12, test_per_class=2)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFSUP_STORES": str(tmp_path / "stores"),
           "PYTHONWARNINGS": "ignore"}
    # the Quick start's third command made runs/quickstart; here at a small budget
    first = ["pretrain", "--config", "quickstart", *SMALL["pretrain"]]
    ran = 0
    for argv in [first, *(prepare(c, photos) for c in commands())]:
        if argv is None:
            continue
        res = subprocess.run([sys.executable, "-m", "selfsup", *argv], cwd=work, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"selfsup {' '.join(argv)}\n{res.stderr[-3000:]}"
        ran += 1
    assert ran >= 30  # the README's selfsup commands (a parser change must not skip them)


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    from PIL import Image

    (tmp_path / "runs").mkdir()
    Image.new("L", (40, 30), 128).save(tmp_path / "shoe.png")
    code = "\n".join(body for _, body in blocks("python"))
    code = code.replace('["--train.epochs", "5"]', "['--train.steps', '2', '--data.limit', "
                        "'64', '--model.width', '0.125', '--train.batch_size', '16', "
                        "'--eval.knn_every', '-1', '--run.progress', 'false']")
    prelude = ("import PIL.Image, torch\n"
               "uint8_batch = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)\n")
    res = subprocess.run([sys.executable, "-c", prelude + code], cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def test_every_readme_command_is_run_or_listed(tmp_path):
    """Fast check: the list of commands parses and each is run or explained."""
    cmds = commands()
    assert any(c.startswith("selfsup embed") for c in cmds)
    for c in cmds:
        prepare(c, tmp_path)
