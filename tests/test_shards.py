"""Streaming shards: written from a source and read back as ``source: shards``, the samples are the
folder source's field by field; nothing is pickled; an interrupted write resumes; S3 on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from radsight.config import DataConfig, SourceSpec
from radsight.data.assemble import build_source, build_splits
from radsight.data.sample import Sample
from radsight.data.shards import CATALOG_FILE, INDEX_FILE, ShardReader, write_shards
from radsight.data.sources.shards import ShardsSource
from radsight.data.transforms import Shrink
from radsight.errors import ConfigError, DataError


def assert_same_sample(expected: Sample, found: Sample) -> None:
    """Every field equal: tensors exactly (NaN where NaN, same dtype), the rest by ==."""
    for name in ("image", "labels", "boxes", "fixations", "gaze_map", "token_ids"):
        a, b = getattr(expected, name), getattr(found, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, name
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)
    assert list(expected.masks or {}) == list(found.masks or {})
    for name, mask in (expected.masks or {}).items():
        assert mask.dtype == found.masks[name].dtype and torch.equal(mask, found.masks[name]), name
    assert (expected.box_labels, expected.report) == (found.box_labels, found.report)
    assert expected.meta == found.meta


def shard(spec: SourceSpec, out: Path, **kwargs) -> tuple[object, ShardsSource]:
    source = build_source(spec)
    write_shards(source, spec.name, spec.options, out, progress=False, **kwargs)
    return source, ShardsSource(out)


@pytest.fixture
def phantom_shards(tmp_path: Path) -> Path:
    """Shards of six chest phantoms with every annotation kind."""
    out = tmp_path / "phantom-shards"
    shard(SourceSpec(name="phantom", options={"n": 6, "size": [64, 48]}), out)
    return out


def test_phantom_shards_hold_every_field_as_written(tmp_path: Path) -> None:
    spec = SourceSpec(name="phantom", options={"n": 12, "size": [96, 80]})
    source, shards = shard(spec, tmp_path / "shards", workers=2)
    assert len(shards) == 12 and shards.source_name == "phantom"
    assert shards.patient_ids == source.patient_ids and shards.image_ids == source.image_ids
    np.testing.assert_array_equal(shards.label_matrix, source.label_matrix)
    np.testing.assert_array_equal(shards.annotated, source.annotated)
    for index in range(12):
        assert_same_sample(source[index], shards[index])
    assert shards[5].fixations is not None and shards[5].masks  # the phantoms' gaze and masks came along


@pytest.mark.parametrize(
    ("name", "folder"),
    [("nih", "nih-cxr14"), pytest.param("covid", "covid-chestxray", marks=pytest.mark.slow)],
)
def test_real_sources_read_back_identical_field_by_field(
    data_root: Path, tmp_path: Path, name: str, folder: str
) -> None:
    spec = SourceSpec(name=name, root=str(data_root / folder))
    source, shards = shard(spec, tmp_path / "shards", workers=2)
    assert (shards.patient_ids, shards.image_ids) == (source.patient_ids, source.image_ids)
    np.testing.assert_array_equal(shards.label_matrix, source.label_matrix)
    for index in range(len(source)):
        assert_same_sample(source[index], shards[index])
    catalog = json.loads((tmp_path / "shards" / CATALOG_FILE).read_text())
    assert catalog["source"] == name and catalog["read_options"] == source.read_options


def test_a_recipe_reads_shards_as_the_folder_source(data_root: Path, tmp_path: Path) -> None:
    """The same split (patients named as the folder source names them) and the same samples."""
    root = str(data_root / "nih-cxr14")
    shard(SourceSpec(name="nih", root=root), tmp_path / "shards")
    labels = ["Effusion", "Atelectasis"]
    folder = build_splits(DataConfig(sources=[SourceSpec(name="nih", root=root)], labels=labels), seed=3)
    packed = build_splits(
        DataConfig(sources=[SourceSpec(name="shards", root=str(tmp_path / "shards"))], labels=labels), seed=3
    )
    assert packed.indices == folder.indices and packed.images == folder.images
    for position in (0, len(folder.test) - 1):
        assert_same_sample(folder.test[position], packed.test[position])


def test_shards_store_nothing_pickled_and_refuse_a_pickling_index(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    shard(SourceSpec(name="phantom", options={"n": 4, "size": [64, 64]}), out)
    index = json.loads((out / INDEX_FILE).read_text())
    assert index["config"]["data_format"] == ["int", "bytes", "bytes", "bytes"]
    index["config"]["data_format"] = ["int", "bytes", "bytes", "pickle"]
    (out / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(
        DataError, match=r"index.json: fields stored as \['int', 'bytes', 'bytes', 'pickle'\]"
    ):
        ShardsSource(out)


def test_shrunk_shards_map_back_onto_the_file(data_root: Path, tmp_path: Path) -> None:
    spec = SourceSpec(name="nih", root=str(data_root / "nih-cxr14"))
    source, shards = shard(spec, tmp_path / "shards", image_size=128)
    index = next(i for i in range(len(source)) if source.records[i].boxes is not None)
    original, small = source[index], shards[index]
    assert max(small.size) == 128 and small.meta.original_size == original.meta.original_size
    expected = Shrink(128)(original)
    assert float((expected.image - small.image).abs().max()) <= 0.5 / 65535 + 1e-7  # 16-bit PNG levels
    torch.testing.assert_close(
        small.meta.geometry.boxes_to_original(small.boxes), original.boxes, atol=1e-3, rtol=0
    )


KILLED = SourceSpec(name="phantom", options={"n": 60, "size": [96, 96]})
"""What :data:`WRITER` shards, in chunks small enough that a kill finds some finished."""
WRITER = f"""
import sys
from radsight.config import SourceSpec
from radsight.data.assemble import build_source
from radsight.data.shards import write_shards
spec = SourceSpec(name="phantom", options={KILLED.options!r})
write_shards(build_source(spec), "phantom", spec.options, sys.argv[1], chunk_bytes=150_000, progress=False)
"""


def checkpointed_chunks(checkpoint: Path) -> list[str]:
    """The chunk files litdata's checkpoint records as written (none while it is absent or half-copied)."""
    try:
        return [chunk["filename"] for chunk in json.loads(checkpoint.read_text()).get("chunks", [])]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def kill_a_write(out: Path) -> Path:
    """Run :data:`WRITER` into ``out`` and kill it once its checkpoint names two chunks; the checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], env=env, start_new_session=True)
    checkpoint = out / ".checkpoints" / "checkpoint-0.json"
    deadline = time.monotonic() + 120
    while writer.poll() is None and time.monotonic() < deadline:
        if len(checkpointed_chunks(checkpoint)) >= 2:
            break
        time.sleep(0.05)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    assert not (out / CATALOG_FILE).exists(), "the writer must be killed before it finished"
    return checkpoint


def finish_the_killed_write(source: object, out: Path) -> None:
    """Run :data:`WRITER`'s write again in this process: every sample reads back as ``source`` has it."""
    write_shards(source, "phantom", KILLED.options, out, chunk_bytes=150_000, progress=False)
    shards = ShardsSource(out)
    assert len(shards) == len(source)
    for index in range(len(source)):
        assert_same_sample(source[index], shards[index])


def test_an_interrupted_write_resumes_and_other_settings_are_refused(tmp_path: Path) -> None:
    """A writer killed after some chunks were finished: run again, it keeps them and writes the rest."""
    out = tmp_path / "shards"
    checkpoint = kill_a_write(out)
    # Only chunks the checkpoint names are finished: one moved into place after it may be redone.
    kept = {name: (out / name).stat().st_mtime_ns for name in checkpointed_chunks(checkpoint)}
    assert len(kept) >= 2
    source = build_source(KILLED)
    with pytest.raises(ConfigError, match="unfinished write of other settings"):
        write_shards(source, "phantom", {"n": 61}, out, progress=False)
    finish_the_killed_write(source, out)
    assert len(source) == 60
    assert all((out / name).stat().st_mtime_ns == stamp for name, stamp in kept.items())  # not redone


def test_a_write_killed_while_copying_its_checkpoint_is_redone_whole(tmp_path: Path) -> None:
    """litdata copies a checkpoint in place: a kill mid-copy leaves half of it, which its resume cannot
    read; the write starts that worker over instead of failing."""
    out = tmp_path / "shards"
    checkpoint = kill_a_write(out)
    text = checkpoint.read_text()
    checkpoint.write_text(text[: len(text) // 2])
    finish_the_killed_write(build_source(KILLED), out)


def test_a_bad_file_is_kept_as_its_problem(tmp_path: Path) -> None:
    images = tmp_path / "films"
    images.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(images / name)
    (images / "c.png").write_bytes(b"not a png")
    (images / "list.csv").write_text("path,patient_id\na.png,1\nc.png,2\nb.png,3\n")
    spec = SourceSpec(name="manifest", options={"csv": str(images / "list.csv")})
    _, shards = shard(spec, tmp_path / "shards")
    with pytest.raises(DataError, match=r"c\.png: "):
        shards[1]
    skipping = ShardsSource(tmp_path / "shards", on_bad_file="skip")
    assert skipping[1] is None and skipping[2] is not None and "c.png" in skipping.skipped[0]


def test_raw_pixels_give_8_bit_images_back_exactly(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (40, 24), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "list.csv").write_text("path\na.png\nb.png\n")
    spec = SourceSpec(name="manifest", options={"csv": str(tmp_path / "list.csv")})
    source, shards = shard(spec, tmp_path / "shards", raw_pixels=True)
    assert json.loads((tmp_path / "shards" / CATALOG_FILE).read_text())["raw_pixels"] is True
    for index in (0, 1):
        assert_same_sample(source[index], shards[index])


def test_cli_shards_a_source_and_refuses_a_tiny_image_size(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    result = run_cli(
        "data", "shard", "--source", "phantom", "--option", "n=6", "--out", out, "--workers", "2"
    )
    assert "6 samples of phantom in" in result.output and len(ShardReader(out)) == 6
    result = run_cli(
        "data", "shard", "--source", "phantom", "--out", tmp_path / "x", "--image-size", "4", expect=2
    )
    assert "--image-size must be at least 8 pixels, not 4" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_shards_on_an_s3_compatible_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A moto S3 server on loopback: shards written there, read back by recipe root s3://..."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="films")
        spec = SourceSpec(name="phantom", options={"n": 10, "size": [64, 64]})
        source = build_source(spec)
        options = {"endpoint_url": endpoint}
        staging = tmp_path / "staging"
        target = "s3://films/phantoms"
        write_shards(
            source, "phantom", spec.options, target, storage_options=options, progress=False, staging=staging
        )
        keys = {
            o["Key"]
            for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="films")["Contents"]
        }
        assert {"phantoms/index.json", f"phantoms/{CATALOG_FILE}"} <= keys
        assert any(key.startswith("phantoms/chunk-") for key in keys)
        shards = build_source(
            SourceSpec(
                name="shards", root="s3://films/phantoms", options={"cache_dir": str(tmp_path / "cache")}
            )
        )
        for index in (0, 9):
            assert_same_sample(source[index], shards[index])
    finally:
        server.stop()
