"""Contrastive losses (fixed public API, see ARCHITECTURE.md)."""

from selfsup.losses.ntxent import nt_xent

__all__ = ["nt_xent"]
