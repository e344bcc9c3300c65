"""Contrastive and distillation losses: pure functions, tested against float64 references.

The public API (``selfsup.losses.nt_xent``, ``info_nce``, ``distillation_loss``) is fixed."""

from selfsup.losses.distill import distillation_loss
from selfsup.losses.infonce import info_nce
from selfsup.losses.ntxent import nt_xent

__all__ = ["distillation_loss", "info_nce", "nt_xent"]
