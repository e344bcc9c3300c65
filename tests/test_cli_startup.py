"""`selfsup --version` and `--help` answer without importing torch (issue 15 item 5)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["export", "--help"],
                                  ["cluster", "--help"]])
def test_version_and_help_do_not_import_torch(argv):
    code = (f"import sys; from selfsup.cli import main; main({argv!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()  # it did answer
