"""Knowledge distillation on unlabeled data, SimCLR v2's third stage.

Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are
Strong Semi-Supervised Learners", NeurIPS 2020 (arXiv 2006.10029), eq. (3):

    L_distill = − Σ_x Σ_y P_T(y | x; τ) log P_S(y | x; τ),
    P(y | x; τ) = softmax(logits(x) / τ),

and with labelled examples "L = −(1 − α) Σ log P_S(y_true | x) + α L_distill".
The teacher is fixed (its probabilities carry no gradient). Unlike Hinton et
al. (2015) there is no τ² factor, as the API fixes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                      labels: Tensor | None = None, alpha: float = 1.0) -> Tensor:
    """Mean over the batch of −Σ_y P_T(y; τ) log P_S(y; τ), optionally mixed with label CE.

    ``student_logits``, ``teacher_logits``: (N, C). ``labels``: (N,) int64 or
    None; entries < 0 mark unlabeled rows, which the label term skips (it is
    the mean over the labelled rows, 0 when there are none). With labels the
    loss is (1 − α)·CE(student_logits, labels) + α·L_distill; without, α must
    be 1 (there is nothing to mix). The gradient w.r.t. the student logits is
    (P_S − P_T) / (τ N) for the distillation term. The loss is computed in the
    wider of the two logits' dtypes, at least float32: float64 inputs give a
    float64 loss, half / bfloat16 inputs a float32 one.
    """
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits must both be (N, C), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha must be in [0, 1], got {alpha}")
    if labels is None and alpha != 1.0:
        raise ValueError(f"alpha={alpha} mixes in a label term, but no labels were given")
    # float16 / bfloat16 logits (autocast) are upcast for the softmax; float64 stays float64
    dtype = torch.promote_types(torch.promote_types(student_logits.dtype, teacher_logits.dtype),
                                torch.float32)
    p_teacher = F.softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)  # N x C
    log_p_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)  # N x C
    loss = -(p_teacher * log_p_student).sum(dim=1).mean()
    if labels is None or alpha == 1.0:
        return loss
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels must be (N,) = ({student_logits.shape[0]},), "
                         f"got {tuple(labels.shape)}")
    known = labels >= 0  # N
    ce = F.cross_entropy(student_logits.to(dtype), labels.clamp_min(0), reduction="none")  # N
    ce = (ce * known).sum() / known.sum().clamp_min(1)
    return (1.0 - alpha) * ce + alpha * loss
