"""Contrastive losses (fixed public API, see ARCHITECTURE.md)."""

from selfsup.losses.infonce import info_nce
from selfsup.losses.ntxent import nt_xent

__all__ = ["info_nce", "nt_xent"]
