"""The k-NN monitor run during pretraining (``knn-200`` in docs/protocols.md)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.config import Config
from selfsup.distributed import is_main_process
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy


def knn_monitor(backbone: nn.Module, data, transform, cfg: Config, device: torch.device) -> dict:
    """Weighted k-NN top-1/top-5 of the frozen backbone: train split as memory, test as queries.

    Cheap enough to run every few epochs (InstDisc; MoCo's CIFAR demo). With
    ``run.progress``, rank 0 shows a short bar per split under the pretraining bar (on a
    terminal only: a log file gets the k-NN record, not the bar).
    """
    e = cfg.eval
    show = None if cfg.run.progress and is_main_process() else False
    train, test = (extract_features(backbone, split.images, lambda x: _eval(transform, x),
                                    batch_size=e.batch_size, device=device, progress=show,
                                    desc=f"k-NN monitor: {name} features")
                   for name, split in (("memory", data.memory), ("test", data.test)))
    n_classes = int(max(data.memory.labels.max(), data.test.labels.max())) + 1
    # knn_accuracy votes over every image when k exceeds the memory set: record the k used
    # (as ``selfsup knn`` does), not a k=100000 that never happened
    k = min(e.knn_k, len(train))
    acc = knn_accuracy(train, data.memory.labels, test, data.test.labels, n_classes,
                       k=k, temperature=e.knn_temperature)
    return {"knn_top1": acc["top1"], "knn_top5": acc["top5"], "knn_k": k,
            "knn_t": e.knn_temperature}


def _eval(tf, x):
    # the eval recipe draws no randomness; a fixed generator keeps the call signature uniform
    return tf(x, torch.Generator(device=x.device))
