"""train.precision / train.channels_last: auto resolves to bf16 + NHWC only where bf16 is native."""

from __future__ import annotations

import pytest
import torch

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.train import precision as P

AMX = "processor : 0\nflags : fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX512_BF16 = "flags : fpu sse2 avx512f avx512_bf16\n"
AVX2 = "flags : fpu sse2 avx2 fma\n"
ARM = "Features : fp asimd bf16 i8mm\n"


@pytest.mark.parametrize("text,flag", [(AMX, "amx_bf16"), (AVX512_BF16, "avx512_bf16"),
                                       (AVX2, None), (ARM, "bf16"), ("", None)])
def test_cpu_bf16_support_reads_the_flags(text, flag):
    assert P.cpu_bf16_support(text) == flag


def _resolve(monkeypatch, flag, *overrides, device="cpu"):
    monkeypatch.setattr(P, "cpu_bf16_support", lambda: flag)
    return P.resolve_numerics(load_config("quickstart", list(overrides)), torch.device(device))


def test_auto_is_bf16_and_channels_last_on_a_bf16_cpu(monkeypatch):
    n = _resolve(monkeypatch, "amx_bf16")
    assert n.autocast_dtype is torch.bfloat16 and n.channels_last
    assert "natively (amx_bf16)" in n.describe() and n.describe().startswith("bf16 channels_last")


def test_auto_stays_fp32_where_bf16_would_be_emulated(monkeypatch):
    n = _resolve(monkeypatch, None)
    assert n.autocast_dtype is None and not n.channels_last
    assert "would be emulated" in n.reason and n.precision == "fp32"


def test_explicit_settings_win(monkeypatch):
    n = _resolve(monkeypatch, None, "--train.precision", "bf16", "--train.channels_last", "true")
    assert n.autocast_dtype is torch.bfloat16 and n.channels_last
    n = _resolve(monkeypatch, "amx_bf16", "--train.precision", "fp32",
                 "--train.channels_last", "false")
    assert n.autocast_dtype is None and not n.channels_last and "fp32 as set" in n.reason


def test_auto_on_cuda_is_bf16(monkeypatch):
    n = _resolve(monkeypatch, None, device="cuda")
    assert n.autocast_dtype is torch.bfloat16 and n.channels_last


def test_bad_channels_last_is_one_line(capsys, tiny_args):
    assert main(["pretrain", *tiny_args, "--train.channels_last", "sometimes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "train.channels_last must be auto, true or false" in err


def test_the_choice_is_in_the_start_line_and_the_summary(capsys, tmp_path):
    import json

    args = ["pretrain", "--config", "quickstart", "--data.limit", "64", "--model.width", "0.125",
            "--train.batch_size", "32", "--train.steps", "2", "--eval.knn_every", "-1",
            "--optim.warmup_epochs", "0", "--run.out_dir", str(tmp_path), "--run.name", "n",
            "--train.precision", "fp32", "--train.channels_last", "false"]
    assert main(args) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("selfsup: simclr"))
    assert "fp32 contiguous (precision fp32 as set)" in line
    summary = json.loads((tmp_path / "n" / "summary.json").read_text())
    assert summary["numerics"].startswith("fp32 contiguous")
