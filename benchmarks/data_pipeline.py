"""The data path from a photo folder: packing, store reads, time to the first step, and the
pretraining step fed from a store against the same step fed from memory and the peers' way.

A photo-like folder is generated first (JPEG, 340-480 px sides, ~90 KB, smooth colour fields
with texture and noise, so the decoder does a real photo's work). Then, in one process run
after run (docs/protocols.md: same machine, one after the other, ratios):

1. ``selfsup pack`` of the 10k folder at 96 / 160 / 224 px with one decoding worker
   (img/s per worker), at 224 px with all CPUs, and with simplejpeg where installed;
2. peak RSS of the packing processes for 10k against 50k images (the 50k folder is the 10k
   images hard-linked five times under other names);
3. random batches of 256 read from the 10k store at 224 px (warm page cache);
4. process start to the first finished step of ``selfsup pretrain`` from a 10k and a 100k
   store (the 100k store is the 10k store's rows repeated ten times);
5. SimCLR steps per second end to end: from the store (memory map + read-ahead), from the
   same images in memory, and the peers' way (PIL decode + random crop + flip per sample in
   DataLoader worker processes, then the same model step), and the bare model step.

    python benchmarks/data_pipeline.py [--images 10000] [--skip-50k] [--skip-100k]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, write_results  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "data_pipeline"


def photo(seed: int) -> bytes:
    """One photo-like JPEG (quality 90): a smooth colour field, mid-frequency texture, noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(340, 481)), int(rng.integers(300, 461))
    base = Image.fromarray((rng.random((h // 40 + 2, w // 40 + 2, 3)) * 255).astype(np.uint8))
    a = np.asarray(base.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    tex = Image.fromarray((rng.random((h // 3 + 1, w // 3 + 1)) * 255).astype(np.uint8))
    t = np.asarray(tex.resize((w, h), Image.Resampling.BILINEAR), np.float32)[..., None]
    a = 0.7 * a + 0.3 * t + rng.normal(0, 15, (h, w, 1)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write_photos(job: tuple[str, list[int]]) -> int:
    folder, seeds = job
    total = 0
    for s in seeds:
        data = photo(s)
        cls = Path(folder) / f"class{s % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        (cls / f"img{s:06d}.jpg").write_bytes(data)
        total += len(data)
    return total


def make_folder(folder: Path, n: int) -> dict:
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        sizes = [p.stat().st_size for p in folder.rglob("*.jpg")]
        return {"images": n, "mean_kb": round(np.mean(sizes) / 1000, 1), "generated_s": None}
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    jobs = [(str(folder), list(range(i, min(i + 200, n)))) for i in range(0, n, 200)]
    with mp.get_context("fork").Pool(os.cpu_count()) as pool:
        total = sum(pool.imap_unordered(_write_photos, jobs))
    return {"images": n, "mean_kb": round(total / n / 1000, 1),
            "generated_s": round(time.perf_counter() - t0, 1)}


def link_folder(src: Path, dst: Path, copies: int) -> None:
    """``copies`` hard links of every image of ``src`` under other names: N x copies files."""
    if dst.is_dir():
        return
    for p in src.rglob("*.jpg"):
        for c in range(copies):
            out = dst / p.parent.name / f"{p.stem}-{c}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, out)


PACK_CHILD = """
import json, resource, sys, time
from selfsup.data.pack import pack_folder
t0 = time.perf_counter()
pack_folder(sys.argv[1], sys.argv[2], int(sys.argv[3]), workers=int(sys.argv[4]),
            decoder=sys.argv[5], progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def pack(src: Path, out: Path, size: int, workers: int, decoder: str = "pil") -> dict:
    """One ``pack_folder`` in a fresh process (its own peak RSS), the store removed first."""
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([sys.executable, "-c", PACK_CHILD, str(src), str(out), str(size),
                          str(workers), decoder], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def read_rate(store: Path, batch: int = 256, batches: int = 40) -> dict:
    import torch

    from selfsup.data.store import open_store

    data = open_store(store)
    g = torch.Generator().manual_seed(0)
    data.read(torch.randperm(len(data), generator=g)[:batch])  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        idx = torch.randperm(len(data), generator=g)[:batch]
        data.read(idx.sort().values)
    dt = time.perf_counter() - t0
    return {"images_per_s": batches * batch / dt,
            "mb_per_s": batches * batch * data.images[0].numel() / dt / 1e6}


def replicate_store(store: Path, out: Path, times: int) -> None:
    """A store of ``times`` x the rows of ``store`` (same meta otherwise)."""
    if (out / "meta.json").is_file():
        return
    meta = json.loads((store / "meta.json").read_text())
    (out / "train").mkdir(parents=True, exist_ok=True)
    with open(out / "train" / "images.u8", "wb") as f:
        for _ in range(times):
            with open(store / "train" / "images.u8", "rb") as src:
                shutil.copyfileobj(src, f, 64 << 20)
    files = (store / "train" / "files.txt").read_text()
    (out / "train" / "files.txt").write_text(files * times)
    labels = np.load(store / "train" / "labels.npy")
    np.save(out / "train" / "labels.npy", np.tile(labels, times))
    meta["splits"] = {"train": {**meta["splits"]["train"],
                                "images": meta["splits"]["train"]["images"] * times}}
    (out / "meta.json").write_text(json.dumps(meta))


def first_step_s(store: Path, runs: Path, name: str) -> dict:
    """Seconds from launching ``selfsup pretrain`` on ``store`` to its first finished step."""
    cmd = [sys.executable, "-m", "selfsup", "pretrain", "--config", "quickstart",
           "--data.dataset", "store", "--data.root", str(store), "--data.size", "96",
           "--model.backbone", "resnet18", "--model.stem", "imagenet", "--model.width", "0.25",
           "--train.batch_size", "64", "--train.steps", "2", "--eval.knn_every", "-1",
           "--run.log_every", "1", "--run.progress", "false", "--run.out_dir", str(runs),
           "--run.name", name]
    out = {}
    # twice: the first launch reads its first batches from disk (cold), the second finds the
    # same rows (same seed) in the page cache, so it shows the software's own start-up cost
    for attempt in ("cold", "warm"):
        shutil.rmtree(runs / name, ignore_errors=True)
        t0 = time.time()
        subprocess.run(cmd, check=True, capture_output=True)
        recs = [json.loads(x) for x in (runs / name / "metrics.jsonl").read_text().splitlines()]
        start = next(r["time"] for r in recs if r.get("event") == "start")
        first = next(r["time"] for r in recs if r.get("step") == 1 and "loss" in r)
        out[attempt] = {"to_first_step_s": first - t0, "to_loop_start_s": start - t0}
    return out


# ------------------------------------------------------------------ the pretraining step


def _peer_dataset(files: list[str], size: int):
    """The peers' way (torchvision / lightly transforms): each sample decoded by PIL, then per
    view random resized crop + flip, colour jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale
    p 0.2, Gaussian blur p 0.5 (sigma 0.1-2), all in PIL, then to a normalised tensor."""
    import torch
    from PIL import Image, ImageEnhance, ImageFilter

    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    class Photos(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(files)

        def _view(self, im, rng) -> torch.Tensor:
            w, h = im.size
            for _ in range(10):  # RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3))
                area = w * h * rng.uniform(0.08, 1.0)
                ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
                cw, ch = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
                if 0 < cw <= w and 0 < ch <= h:
                    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
                    break
            else:
                cw = ch = min(w, h)
                x, y = (w - cw) // 2, (h - ch) // 2
            v = im.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                v = v.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if rng.random() < 0.8:  # ColorJitter: random order of the four adjustments
                for k in rng.permutation(4):
                    if k < 3:
                        enhance = (ImageEnhance.Brightness, ImageEnhance.Contrast,
                                   ImageEnhance.Color)[k]
                        v = enhance(v).enhance(rng.uniform(0.2, 1.8))
                    else:  # hue, as torchvision's PIL path: shift H in HSV
                        hsv = np.asarray(v.convert("HSV")).copy()
                        hsv[..., 0] = (hsv[..., 0].astype(np.int16)
                                       + int(rng.uniform(-0.2, 0.2) * 255)) % 256
                        v = Image.fromarray(hsv, "HSV").convert("RGB")
            if rng.random() < 0.2:
                v = v.convert("L").convert("RGB")
            if rng.random() < 0.5:
                v = v.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 2.0)))
            t = torch.from_numpy(np.asarray(v, np.uint8).copy()).permute(2, 0, 1).float() / 255
            return (t - mean) / std

        def __getitem__(self, i: int):
            rng = np.random.default_rng(i)
            with Image.open(files[i]) as im:
                im = im.convert("RGB")
                return self._view(im, rng), self._view(im, rng)

    return Photos()


def step_rates(store: Path, folder: Path, args) -> dict:
    """images/s: store end to end, memory end to end, peers' way, bare step; same process."""
    import torch

    from selfsup.config import load_config
    from selfsup.data.image_source import ImageSet
    from selfsup.data.loader import MappedLoader, ResidentLoader
    from selfsup.train.pretrain import build_training, make_views, optimisation_step

    torch.set_num_threads(args.threads)
    cfg = load_config("quickstart", [
        "--data.dataset", "store", "--data.root", str(store), "--data.size", str(args.train_size),
        "--model.backbone", "resnet18", "--model.stem", "imagenet", "--model.width",
        str(args.width), "--train.batch_size", str(args.batch), "--eval.knn_every", "-1",
        "--augment.blur", "true", "--augment.strength", "1.0", "--train.device", "cpu"])
    device = torch.device("cpu")
    data, augment, _, mapped, model, opt = build_training(cfg, device)
    assert isinstance(mapped, MappedLoader)
    in_memory = ImageSet(data.train.images.clone(), None)  # the same bytes, in anonymous RAM
    resident = ResidentLoader(in_memory.images, args.batch, seed=0, device=device)
    gen = torch.Generator()
    model.train()

    def run(loader, steps: int, start: int) -> float:
        t0 = time.perf_counter()
        for s in range(start, start + steps):
            views = make_views(loader, augment, gen, s, 0)
            optimisation_step(model, opt, views, 0.05, None, device)
        return steps * args.batch / (time.perf_counter() - t0)

    fixed = make_views(resident, augment, gen, 0, 0)

    def bare(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            optimisation_step(model, opt, fixed, 0.05, None, device)
        return steps * args.batch / (time.perf_counter() - t0)

    run(resident, args.warmup, 0)
    run(mapped, args.warmup, 0)
    rates: dict[str, list[float]] = {"store": [], "memory": [], "bare": []}
    for r in range(args.rounds):  # interleaved: drift of a noisy machine hits all alike
        base = 1000 * (r + 1)
        rates["store"].append(run(mapped, args.steps, base))
        rates["memory"].append(run(resident, args.steps, base))
        rates["bare"].append(bare(args.steps))
    t0 = time.perf_counter()
    for s in range(4 * args.steps):
        make_views(mapped, augment, gen, 5000 + s, 0)
    ours_data = 4 * args.steps * args.batch / (time.perf_counter() - t0)
    mapped.close()

    files = [str(folder / f) for f in data.train.files]
    loader = torch.utils.data.DataLoader(
        _peer_dataset(files, args.train_size), batch_size=args.batch, shuffle=True,
        num_workers=args.peer_workers, drop_last=True, persistent_workers=True,
        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    for _ in range(args.warmup):
        optimisation_step(model, opt, list(next(it)), 0.05, None, device)
    peer = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            optimisation_step(model, opt, list(next(it)), 0.05, None, device)
        peer.append(args.steps * args.batch / (time.perf_counter() - t0))
    del it
    it = iter(loader)  # the peer pipeline alone, from an empty prefetch queue
    t0 = time.perf_counter()
    for _ in range(4 * args.steps):
        next(it)
    peer_data = 4 * args.steps * args.batch / (time.perf_counter() - t0)
    return {"rates": rates, "peer": peer, "peer_data_only": peer_data,
            "store_data_only": ours_data}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--skip-50k", action="store_true")
    p.add_argument("--skip-100k", action="store_true")
    p.add_argument("--train-size", type=int, default=96, help="training side (store at 112)")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--peer-workers", type=int, default=os.cpu_count())
    p.add_argument("--keep", action="store_true", help="keep the generated folders and stores")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    folder = WORK / f"photos-{args.images // 1000}k"
    gen = make_folder(folder, args.images)
    print(f"folder: {gen}")
    cpus = os.cpu_count()
    rows, common = [], {"dataset": f"photo-like JPEGs ({args.images}, ~{gen['mean_kb']} KB)",
                        "device": "cpu"}

    for size in (96, 160, 224):  # 1. packing rate per worker
        r = pack(folder, WORK / f"store-{size}", size, 1)
        rows.append({**common, "measure": f"pack at {size} px, 1 worker (pil)",
                     "value": args.images / r["seconds"], "unit": "img/s per worker",
                     "rss_main_mb": r["rss_main_mb"], "rss_worker_mb": r["rss_worker_mb"]})
        print(rows[-1])
    r = pack(folder, WORK / "store-224", 224, cpus)
    rows.append({**common, "measure": f"pack at 224 px, {cpus} workers (pil)",
                 "value": args.images / r["seconds"], "unit": "img/s (all workers)"})
    try:
        import simplejpeg  # noqa: F401

        for size in (96, 224):
            r = pack(folder, WORK / f"store-sj-{size}", size, 1, "simplejpeg")
            rows.append({**common, "measure": f"pack at {size} px, 1 worker (simplejpeg)",
                         "value": args.images / r["seconds"], "unit": "img/s per worker"})
            shutil.rmtree(WORK / f"store-sj-{size}", ignore_errors=True)
    except ImportError:
        print("simplejpeg not installed: no fast-jpeg rows")

    r10 = pack(folder, WORK / "store-224", 224, cpus)  # 2. memory while packing
    rows.append({**common, "measure": f"peak RSS packing {args.images} at 224 px",
                 "value": r10["rss_main_mb"] + r10["rss_worker_mb"], "unit": "MB (main + worker)",
                 "rss_main_mb": r10["rss_main_mb"], "rss_worker_mb": r10["rss_worker_mb"]})
    if not args.skip_50k:
        big = WORK / f"photos-{5 * args.images // 1000}k-links"
        link_folder(folder, big, 5)
        r50 = pack(big, WORK / "store-224-50k", 224, cpus)
        rows.append({**common, "measure": f"peak RSS packing {5 * args.images} at 224 px",
                     "value": r50["rss_main_mb"] + r50["rss_worker_mb"],
                     "unit": "MB (main + worker)", "rss_main_mb": r50["rss_main_mb"],
                     "rss_worker_mb": r50["rss_worker_mb"],
                     "difference_mb": (r50["rss_main_mb"] + r50["rss_worker_mb"])
                     - (r10["rss_main_mb"] + r10["rss_worker_mb"]),
                     "pack_img_per_s": 5 * args.images / r50["seconds"]})
        shutil.rmtree(WORK / "store-224-50k", ignore_errors=True)
        shutil.rmtree(big, ignore_errors=True)
    print(rows[-1])

    rr = read_rate(WORK / "store-224")  # 3. random batches
    rows.append({**common, "measure": "store random batch read, 224 px, batch 256 (warm)",
                 "value": rr["images_per_s"], "unit": "img/s", "mb_per_s": rr["mb_per_s"]})

    runs = WORK / "runs"  # 4. start to first step
    sizes = {args.images: first_step_s(WORK / "store-224", runs, "n10k")}
    if not args.skip_100k:
        replicate_store(WORK / "store-224", WORK / "store-224-100k", 10)
        sizes[10 * args.images] = first_step_s(WORK / "store-224-100k", runs, "n100k")
        shutil.rmtree(WORK / "store-224-100k", ignore_errors=True)
    for n, res in sizes.items():
        for attempt, r in res.items():
            row = {**common, "measure": f"launch to first step, {n} store ({attempt} cache)",
                   "value": r["to_first_step_s"], "unit": "s",
                   "to_loop_start_s": r["to_loop_start_s"]}
            if n != args.images:
                row["ratio_to_small"] = r["to_first_step_s"] / \
                    sizes[args.images][attempt]["to_first_step_s"]
            rows.append(row)
    print(rows[-1])

    store = WORK / "store-112"  # 5. the step: store vs memory vs peers vs bare
    pack(folder, store, 112, cpus)
    res = step_rates(store, folder, args)
    step = {**common, "method": "simclr", "backbone": f"resnet18-imagenet w{args.width:g}",
            "batch": args.batch, "train_size": args.train_size, "stored_size": 112,
            "steps": args.steps, "rounds": args.rounds, "unit": "img/s (median of rounds)"}
    med = {k: float(np.median(v)) for k, v in res["rates"].items()}
    peer = float(np.median(res["peer"]))
    rows += [
        {**step, "measure": "end to end from the store (memory map + read-ahead)",
         "value": med["store"], "ratio_to_memory": med["store"] / med["memory"],
         "ratio_to_bare": med["store"] / med["bare"], "all": res["rates"]["store"]},
        {**step, "measure": "end to end from memory (resident uint8)", "value": med["memory"],
         "ratio_to_bare": med["memory"] / med["bare"], "all": res["rates"]["memory"]},
        {**step, "measure": f"peers' way: PIL per sample, {args.peer_workers} DataLoader workers",
         "value": peer, "ratio_to_memory": peer / med["memory"], "all": res["peer"],
         "store_over_peer": med["store"] / peer},
        {**step, "measure": "bare model step", "value": med["bare"], "all": res["rates"]["bare"]},
        {**step, "measure": "data only: store + on-device augmentation (2 views)",
         "value": res["store_data_only"], "unit": "img/s"},
        {**step, "measure": f"data only: peers' DataLoader, {args.peer_workers} workers (2 views)",
         "value": res["peer_data_only"], "unit": "img/s"},
    ]
    print_table(rows, ["measure", "value", "unit"])
    print(f"wrote {write_results('data_pipeline', rows, 'cpu', {'folder': gen})}")
    if not args.keep:
        for p in WORK.glob("store-*"):
            shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
