"""Contrastive and distillation losses (fixed public API, see ARCHITECTURE.md)."""

from selfsup.losses.distill import distillation_loss
from selfsup.losses.infonce import info_nce
from selfsup.losses.ntxent import nt_xent

__all__ = ["distillation_loss", "info_nce", "nt_xent"]
