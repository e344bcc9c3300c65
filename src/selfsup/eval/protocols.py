"""Run-level evaluation: the protocols of docs/protocols.md applied to a run folder.

Each writes ``<run>/eval/<protocol>.json`` and returns the same record, with
the protocol spelled out so a number is never quoted without it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch

from selfsup.errors import ConfigError, DataError
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe
from selfsup.experiment import check_device, eval_augmentation, load_data, resolve_device
from selfsup.runs import LAST, RunFolder, load_run_backbone
from selfsup.train.checkpoint import atomic_write_text
from selfsup.train.supervised import SupervisedRecipe


def _load(run_dir, overrides, checkpoint, device):
    """The run's backbone on the evaluation device, its config, checkpoint metadata and data."""
    check_device(device)
    backbone, cfg, meta = load_run_backbone(run_dir, _cfg(run_dir, overrides), checkpoint)
    data = load_data(cfg)
    if data.test is None or data.memory.labels is None or data.test.labels is None:
        raise DataError(f"{cfg.data.dataset}: evaluation needs labelled train and test splits")
    dev = resolve_device(device or cfg.train.device)
    return backbone.to(dev), cfg, meta, data, dev


def _extract(backbone, cfg, data, dev, progress):
    """Frozen features of the train (memory) and test splits, and the number of classes."""
    tf = eval_augmentation(data)
    gen = torch.Generator(device=dev)

    def transform(x):
        return tf(x, gen)

    feats = [extract_features(backbone, s.images, transform, batch_size=cfg.eval.batch_size,
                              device=dev, progress=progress, desc=f"features {name}")
             for name, s in (("train", data.memory), ("test", data.test))]
    n_classes = int(max(data.memory.labels.max(), data.test.labels.max())) + 1
    return feats, n_classes


def _cfg(run_dir, overrides):
    from selfsup.runs import run_config

    return run_config(run_dir, overrides)


def _record(run_dir, cfg, meta, data, protocol: dict, result: dict, name: str) -> dict:
    rec = {
        "run": str(run_dir), "method": cfg.method.name, "dataset": cfg.data.dataset,
        "backbone": f"{cfg.model.backbone} {cfg.model.stem} w{cfg.model.width:g}",
        "pretrain_epochs": meta.get("epoch"), "train_images": len(data.memory),
        "test_images": len(data.test), "split": data.split, "protocol": protocol, **result,
    }
    out = RunFolder(Path(run_dir)).eval_file(name)
    try:
        out.parent.mkdir(exist_ok=True)
        atomic_write_text(out, json.dumps(rec, indent=2))
    except OSError as e:  # a run folder shared read-only: the number is still worth printing
        reason = e.strerror or str(e)
        warnings.warn(f"{out}: not written ({reason}); the record is printed only",
                      UserWarning, stacklevel=3)
    return rec


def evaluate_knn(run_dir: str | Path, *, k: int = 200, temperature: float = 0.1,
                 overrides: list[str] | None = None, checkpoint: str = LAST,
                 device: str | None = None, progress: bool = True) -> dict:
    """``knn-200``: weighted k-NN on frozen h, train split as memory, test split as queries.

    A ``k`` larger than the memory set uses every image; the record names the k used."""
    if k < 1:
        raise ConfigError(f"k-NN k must be >= 1, got {k}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"k-NN temperature must be a finite number > 0, got {temperature}")
    backbone, cfg, meta, data, dev = _load(run_dir, overrides, checkpoint, device)
    k_asked, k = k, min(k, len(data.memory))
    (tr, te), nc = _extract(backbone, cfg, data, dev, progress)
    acc = knn_accuracy(tr, data.memory.labels, te, data.test.labels, nc, k=k,
                       temperature=temperature)
    protocol = {"name": f"knn-{k}", "k": k, "temperature": temperature,
                "features": "backbone h, eval transform, L2-normalised, cosine",
                "memory": "train split" if data.split == "test" else "train split less val",
                "queries": f"{data.split} split"}
    if k != k_asked:
        protocol["k_asked"] = k_asked  # the memory set holds fewer images than asked for
    return _record(run_dir, cfg, meta, data, protocol, acc, f"knn-{k}")


def evaluate_linear(run_dir: str | Path, recipe: SupervisedRecipe | None = None, *,
                    overrides: list[str] | None = None, checkpoint: str = LAST,
                    device: str | None = None, progress: bool = True) -> dict:
    """``linear-feat``: a linear classifier on frozen, standardised train features."""
    backbone, cfg, meta, data, dev = _load(run_dir, overrides, checkpoint, device)
    # snapshot before the features are extracted: the check covers extraction and probe
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    (tr, te), nc = _extract(backbone, cfg, data, dev, progress)
    res = linear_probe(tr, data.memory.labels, te, data.test.labels, nc, recipe, progress=progress)
    after = backbone.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if changed:
        raise RuntimeError(f"the backbone changed during feature extraction or the linear probe "
                           f"({len(changed)} tensors, first {changed[0]!r}): it must stay frozen")
    res["backbone_unchanged"] = True
    protocol = {"name": "linear-feat", **res.pop("recipe"),
                "features": "backbone h of the un-augmented train split, computed once"}
    return _record(run_dir, cfg, meta, data, protocol, res, "linear-feat")


def describe(rec: dict) -> str:
    """One line: the number and its protocol."""
    p = rec["protocol"]
    if p["name"].startswith("knn"):
        how = f"k-NN k={p['k']} T={p['temperature']}"
    else:
        how = (f"linear probe ({p['optimizer']} lr {p['lr']} {p['epochs']} ep batch "
               f"{p['batch_size']}, standardised features)")
    ep = rec.get("pretrain_epochs")
    ep_s = f"{ep:.1f}" if isinstance(ep, (int, float)) else "?"
    queries = rec.get("split") or "test"
    return (f"{how} on {rec['dataset']} ({rec['train_images']} train / {rec['test_images']} "
            f"{queries}), "
            f"{rec['method']} {rec['backbone']} after {ep_s} epochs: "
            f"top-1 {100 * rec['top1']:.2f}%  top-5 {100 * rec['top5']:.2f}%")
