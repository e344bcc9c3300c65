"""selfsup: self-supervised visual representation learning by contrastive methods."""

__version__ = "0.1.0"
