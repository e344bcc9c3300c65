import math

import pytest

from selfsup.train.schedule import cosine_momentum, step_decay, warmup_cosine


def test_warmup_cosine_hits_base_and_final():
    total, warm, base, final = 1000, 100, 0.8, 0.01
    assert warmup_cosine(0, total, warm, base, final) == 0.0
    assert warmup_cosine(50, total, warm, base, final) == pytest.approx(0.4)
    assert warmup_cosine(warm, total, warm, base, final) == pytest.approx(base)
    assert warmup_cosine(total, total, warm, base, final) == pytest.approx(final)
    mid = warm + (total - warm) // 2
    assert warmup_cosine(mid, total, warm, base, final) == pytest.approx((base + final) / 2)


def test_warmup_cosine_formula():
    for step in range(100, 1000, 37):
        want = 0.5 * 0.3 * (1 + math.cos(math.pi * (step - 100) / 900))
        assert warmup_cosine(step, 1000, 100, 0.3) == pytest.approx(want)


def test_no_warmup_and_monotone_decay():
    vals = [warmup_cosine(s, 50, 0, 1.0) for s in range(51)]
    assert vals[0] == 1.0 and all(a >= b for a, b in zip(vals, vals[1:]))


def test_step_decay_and_momentum():
    assert step_decay(0, 100, 1.0) == 1.0
    assert step_decay(60, 100, 1.0) == pytest.approx(0.1)
    assert step_decay(99, 100, 1.0) == pytest.approx(0.01)
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
