"""Images per second through the shard loader against the folder source, on the same small files.

--images phantom films (128 x 128, 8-bit PNG, a few kB each: the small-file case) are written as a
manifest folder, then packed into shards (`radsight data shard`'s writer). Each loader reads every
image once, decoded and through the evaluation transform (letterbox to 128 x 128), in batches of 32,
with 0, 1 and 2 data-loader workers, in the same run. Before every pass the files it reads (the PNGs,
or the shard chunks) are dropped from the page cache (posix_fadvise DONTNEED on those files only), so
each pass reads from the disk as a first epoch over a large dataset does. `ratio_vs_folder` is the
shard loader's images/s over the folder's at the same worker count; `ratio_vs_folder_raw` the same for
shards written with `--raw-pixels` (decoded 16-bit pixels: nothing to decode when read).

    nice -n 10 python bench/shards.py --out bench/results
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from outputs import write_results
from PIL import Image

from radsight.data.sample import make_loader
from radsight.data.shards import write_shards
from radsight.data.sources.manifest import ManifestDataset
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.data.sources.shards import ShardsSource
from radsight.data.transforms import build_transforms

SIZE = 128
BATCH = 32


def write_films(folder: Path, count: int) -> Path:
    """``count`` phantom films as 8-bit PNGs and the manifest CSV naming them."""
    phantoms = PhantomChestXray(count, size=(SIZE, SIZE), seed=0)
    rows = ["path,patient_id,labels"]
    for index in range(count):
        sample = phantoms[index]
        name = f"films/{index:05d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.round(sample.image[0].numpy() * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)
        positives = "|".join(
            n for n, v in zip(phantoms.label_names, sample.labels.tolist(), strict=True) if v
        )
        rows.append(f"{name},{sample.meta.patient_id},{positives or 'none'}")
    (folder / "films.csv").write_text("\n".join(rows) + "\n")
    return folder / "films.csv"


def drop_from_page_cache(files: list[Path]) -> None:
    for path in files:
        with path.open("rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def images_per_second(dataset: torch.utils.data.Dataset, workers: int, files: list[Path]) -> float:
    drop_from_page_cache(files)
    loader = make_loader(dataset, BATCH, shuffle=False, num_workers=workers)
    start = time.perf_counter()
    seen = sum(len(batch) for batch in loader)
    seconds = time.perf_counter() - start
    assert seen == len(dataset)  # type: ignore[arg-type]
    return seen / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    transform = build_transforms((SIZE, SIZE), train=False, augment=False, gaze_sigma_fraction=None)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        csv = write_films(folder, args.images)
        options = {"csv": str(csv), "label_names": list(PhantomChestXray(1).label_names)}
        films = ManifestDataset(**options)
        for name, raw in (("shards", False), ("shards_raw", True)):
            write_shards(films, "manifest", options, folder / name, raw_pixels=raw, workers=2, progress=False)
        films.transform = transform
        film_files = [record.image_path for record in films.records]
        readers = {
            name: (
                ShardsSource(folder / name, transform=transform),
                sorted((folder / name).glob("chunk-*.bin")),
            )
            for name in ("shards", "shards_raw")
        }
        rows = {}
        for workers in (0, 1, 2):
            folder_rate = images_per_second(films, workers, film_files)
            row = {"folder_images_per_s": round(folder_rate, 1)}
            for name, (dataset, chunks) in readers.items():
                rate = images_per_second(dataset, workers, chunks)
                suffix = name.removeprefix("shards")
                row[f"shards{suffix}_images_per_s"] = round(rate, 1)
                row[f"ratio_vs_folder{suffix}"] = round(rate / folder_rate, 2)
            rows[workers] = row
        film_bytes = sum(path.stat().st_size for path in film_files)
        sizes = {name: sum(path.stat().st_size for path in chunks) for name, (_, chunks) in readers.items()}
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
        },
        "images": args.images,
        "image_size": SIZE,
        "batch_size": BATCH,
        "mean_file_kb": round(film_bytes / args.images / 1024, 1),
        "folder_mb": round(film_bytes / 2**20, 1),
        "shard_mb": {name: round(size / 2**20, 1) for name, size in sizes.items()},
        "workers": rows,
    }
    table = [
        f"# Shard loader against the folder source ({args.images} PNG films of {SIZE} x {SIZE}, "
        f"{result['mean_file_kb']} kB each, {result['folder_mb']} MB; shards of the files "
        f"{result['shard_mb']['shards']} MB, of raw pixels {result['shard_mb']['shards_raw']} MB; "
        "cold page cache)",
        "",
        "| workers | folder (images/s) | shards (images/s) | ratio_vs_folder | shards, raw pixels (images/s) "
        "| ratio_vs_folder_raw |",
        "|---|---|---|---|---|---|",
        *(
            f"| {w} | {r['folder_images_per_s']:.0f} | {r['shards_images_per_s']:.0f} "
            f"| {r['ratio_vs_folder']:.2f} | {r['shards_raw_images_per_s']:.0f} "
            f"| {r['ratio_vs_folder_raw']:.2f} |"
            for w, r in rows.items()
        ),
    ]
    write_results(args.out, "shards", result, "\n".join(table))


if __name__ == "__main__":
    main()
