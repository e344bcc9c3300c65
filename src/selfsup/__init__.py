"""selfsup: self-supervised visual representation learning by contrastive methods.

    from selfsup import load_config, pretrain, load_backbone
    run = pretrain(load_config("quickstart"))
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "export_run", "load_backbone", "load_config", "pretrain"]


def __getattr__(name: str) -> Any:
    # lazy, so `import selfsup` stays cheap and the CLI starts fast
    if name == "pretrain":
        from selfsup.train.pretrain import pretrain

        return pretrain
    if name == "load_config":
        from selfsup.config import load_config

        return load_config
    if name in ("load_backbone", "export_run"):
        from selfsup import export

        return getattr(export, name)
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")
