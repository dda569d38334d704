"""Streaming shards: any source's samples packed into litdata chunks, locally or on S3-compatible storage.

A folder of small files read one open() at a time does not scale to MIMIC-CXR (377k images) or across
nodes. ``write_shards`` packs a source into Lightning's litdata format (``litdata.optimize``: chunk
files of many samples plus ``index.json``), in parallel workers, with litdata's checkpoints so an
interrupted write resumes; ``ShardReader`` reads any sample back by index (random access into the
chunks, ranged GETs on S3), which is what the patient splits, label budgets and seeded epoch orders
of training need.

Every stored sample has the same explicit schema, and nothing is ever pickled:
  ``index``  int: the sample's position in the source (checked on reading);
  ``image``  bytes: the file as stored (decoded by ``read_image`` when read, so the image is the folder
             source's bit for bit), a ``.npy`` float32 array (an image no file holds as is: a rendered
             phantom), a 16-bit PNG (``image_size`` given: the image shrunk, quantised to 1/65535), or
             with ``raw_pixels`` the image's 16-bit levels uncompressed (larger shards, nothing to
             decode when read; 8-bit images come back exactly);
  ``arrays`` bytes: the raw numbers of the sample's arrays (labels, boxes, fixations, masks 8 pixels a
             byte, gaze map, token ids), their names, types (float32, int64, bool only) and shapes in
             the meta;
  ``meta``   bytes: UTF-8 JSON of the rest (where the sample came from, box labels, report, geometry,
             DICOM identity), or of the problem of a file that could not be read.
``radsight_shards.json`` beside ``index.json`` is the catalog (patients, image names, labels, which
images are annotated) that splits need without reading an image; it is written last, marking the
shards complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from radsight.data.image_io import DicomIdentity, read_image
from radsight.data.sample import Sample, SampleMeta
from radsight.data.transforms import Geometry, Shrink
from radsight.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT = 1
CATALOG_FILE = "radsight_shards.json"
SETTINGS_FILE = "radsight_shards_settings.json"
INDEX_FILE = "index.json"
DATA_FORMAT = ["int", "bytes", "bytes", "bytes"]
"""litdata's serializer names of the four fields (index, image, arrays, meta): a shard whose index names
any other (``pickle`` above all) is refused before a byte of it is decoded."""
FIELDS = ("index", "image", "arrays", "meta")
PNG_SCALE = 65535.0
CHUNK_BYTES = "64MB"
TUPLE_TAG = "__tuple__"


def is_remote(location: str | Path) -> bool:
    return "://" in str(location)


class RefusedSerializer:
    """Stands in for litdata's pickle serializer when reading: a tampered index cannot unpickle."""

    def serialize(self, data: Any) -> Any:
        raise DataError(None, "radsight shards never pickle")

    def deserialize(self, data: bytes) -> Any:
        raise DataError(None, "a shard field is pickled: radsight shards never are, refusing to read it")

    def can_serialize(self, data: Any) -> bool:
        return False

    def setup(self, metadata: Any) -> None:
        return None


def _allow_plain_http(storage_options: Mapping[str, Any]) -> None:
    """litdata's obstore transfers refuse an ``http://`` endpoint (a MinIO or moto server on a LAN or on
    loopback) since litdata passes obstore no ``allow_http``; add it where the endpoint is plain HTTP."""
    endpoint = str(storage_options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or "")
    if endpoint.startswith("http://"):
        from litdata.streaming import downloader

        downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"


def _s3_object(location: str, name: str) -> tuple[str, str]:
    if not location.startswith("s3://"):
        raise ConfigError(f"{location}: shards are read from a local folder or s3://bucket/prefix")
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return bucket, f"{prefix.rstrip('/')}/{name}" if prefix else name


def _s3_client(storage_options: Mapping[str, Any]) -> Any:
    from litdata.streaming.client import S3Client

    return S3Client(storage_options=dict(storage_options)).client


def read_text(location: str | Path, name: str, storage_options: Mapping[str, Any]) -> str | None:
    """A small file of the shards folder, or None when it is not there."""
    if not is_remote(location):
        path = Path(location) / name
        return path.read_text() if path.is_file() else None
    bucket, key = _s3_object(str(location), name)
    client = _s3_client(storage_options)
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except client.exceptions.NoSuchKey:
        return None


def write_text(location: str | Path, name: str, text: str, storage_options: Mapping[str, Any]) -> None:
    if not is_remote(location):
        from radsight.atomic import write_text as write_local

        Path(location).mkdir(parents=True, exist_ok=True)
        write_local(Path(location) / name, text)
        return
    bucket, key = _s3_object(str(location), name)
    _s3_client(storage_options).put_object(Bucket=bucket, Key=key, Body=text.encode())


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON, tuples tagged so they come back as tuples; anything else JSON cannot hold
    is refused (a stored sample must read back as it was)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {TUPLE_TAG: [_plain(v, where) for v in value]}
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise DataError(None, f"{where}: a {type(value).__name__} cannot be stored in shards (JSON values only)")


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {TUPLE_TAG}:
            return tuple(_unplain(v) for v in value[TUPLE_TAG])
        return {k: _unplain(v) for k, v in value.items()}
    return value


ARRAY_TYPES = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}
"""The only element types stored arrays may have; booleans (masks) are stored 8 pixels a byte."""


def _pack_arrays(arrays: dict[str, np.ndarray]) -> tuple[bytes, list[list[Any]]]:
    """The arrays' raw bytes one after another, and their [name, type, shape] layout for the meta."""
    layout, parts = [], []
    for name, array in arrays.items():
        kind = str(array.dtype)
        if kind not in ARRAY_TYPES:
            raise DataError(None, f"{name}: {kind} arrays cannot be stored in shards ({sorted(ARRAY_TYPES)})")
        data = np.packbits(array) if kind == "bool" else np.ascontiguousarray(array, dtype=ARRAY_TYPES[kind])
        parts.append(data.tobytes())
        layout.append([name, kind, list(array.shape)])
    return b"".join(parts), layout


def _unpack_arrays(data: bytes, layout: list[list[Any]], where: str) -> dict[str, torch.Tensor]:
    """The arrays of :func:`_pack_arrays`, read as plain numbers of the allowed types only."""
    arrays, offset = {}, 0
    for name, kind, shape in layout:
        if kind not in ARRAY_TYPES:
            raise DataError(where, f"stored array {name!r} of unknown type {kind!r}")
        count = int(np.prod(shape))
        if kind == "bool":
            size = (count + 7) // 8
            bits = np.frombuffer(data, np.uint8, size, offset)
            array = np.unpackbits(bits, count=count).astype(bool).reshape(shape)
        else:
            size = count * np.dtype(ARRAY_TYPES[kind]).itemsize
            array = np.frombuffer(data, ARRAY_TYPES[kind], count, offset).reshape(shape).copy()
        arrays[name], offset = torch.from_numpy(array), offset + size
    if offset != len(data):
        raise DataError(where, f"stored arrays take {offset} bytes, not the {len(data)} stored")
    return arrays


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _png16(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_levels(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _levels(image: torch.Tensor) -> np.ndarray:
    return np.round(image[0].clamp(0, 1).numpy().astype(np.float64) * PNG_SCALE).astype("<u2")


def _file_copy(sample: Sample, read_options: Mapping[str, Any] | None) -> bytes | None:
    """The sample's file as stored, when decoding it again gives the sample's image exactly (a source
    that renders or changes its images after reading them has its image stored as an array instead)."""
    path = Path(sample.meta.path)
    if read_options is None or not path.is_file():
        return None
    data = path.read_bytes()
    try:
        image, _ = read_image(data, name=str(path), **read_options)
    except DataError:
        return None
    return data if image.shape == sample.image.shape and torch.equal(image, sample.image) else None


def encode_sample(
    index: int,
    sample: Sample,
    read_options: Mapping[str, Any] | None,
    image_size: int | None,
    raw_pixels: bool = False,
) -> dict[str, Any]:
    """One sample as the four stored fields (see the module's docstring)."""
    if image_size is not None:
        sample = Shrink(image_size)(sample)
    if raw_pixels:
        image, kind = _levels(sample.image).tobytes(), "raw16"
    elif image_size is not None:
        image, kind = _png16(sample.image), "png16"
    elif (copy := _file_copy(sample, read_options)) is not None:
        image, kind = copy, "file"
    else:
        image, kind = _npy(sample.image.numpy().astype(np.float32)), "npy"
    arrays = {
        name: getattr(sample, name).numpy()
        for name in ("labels", "boxes", "fixations", "gaze_map", "token_ids")
        if getattr(sample, name) is not None
    }
    masks = sample.masks or {}
    arrays.update({f"mask{k}": mask.numpy().astype(bool) for k, mask in enumerate(masks.values())})
    meta = sample.meta
    where = f"{meta.path} meta"
    packed, layout = _pack_arrays(arrays)
    record = {
        "kind": kind,
        "source": meta.source,
        "path": meta.path,
        "patient_id": meta.patient_id,
        "view": meta.view,
        "original_size": _plain(meta.original_size, where),
        "pixel_spacing": _plain(meta.pixel_spacing, where),
        "extra": _plain(meta.extra, f"{where}.extra"),
        "geometry": None if meta.geometry is None else _plain(asdict(meta.geometry), where),
        "dicom": None if meta.dicom is None else asdict(meta.dicom),
        "box_labels": sample.box_labels,
        "report": sample.report,
        "mask_names": list(masks),
        "arrays": layout,
        "image_shape": list(sample.image.shape),
    }
    return {"index": index, "image": image, "arrays": packed, "meta": json.dumps(record).encode()}


def bad_file_item(index: int, error: DataError) -> dict[str, Any]:
    """A file the source could not read, kept as its problem: reading it follows ``on_bad_file`` as the
    folder source does."""
    meta = {"error": error.problem, "error_path": error.path}
    return {"index": index, "image": b"", "arrays": b"", "meta": json.dumps(meta).encode()}


def _decode_image(
    kind: str, data: bytes, path: str, read_options: Mapping[str, Any], shape: list[int]
) -> torch.Tensor:
    if kind == "raw16":
        levels = np.frombuffer(data, "<u2").astype(np.float32).reshape(shape)
        return torch.from_numpy(levels / np.float32(PNG_SCALE))
    if kind == "file":
        return read_image(data, name=path, **read_options)[0]
    if kind == "npy":
        array = np.load(io.BytesIO(data), allow_pickle=False)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if kind == "png16":
        with Image.open(io.BytesIO(data)) as png:
            levels = np.asarray(png, dtype=np.float32)
        return torch.from_numpy(levels / PNG_SCALE)[None]
    raise DataError(path, f"unknown stored image kind {kind!r}")


def decode_sample(item: Mapping[str, Any], read_options: Mapping[str, Any]) -> Sample:
    """The stored fields back as the Sample they were written from; a bad file raises its DataError."""
    meta = json.loads(bytes(item["meta"]))
    if "error" in meta:
        raise DataError(meta["error_path"], meta["error"])
    arrays = _unpack_arrays(bytes(item["arrays"]), meta["arrays"], meta["path"])
    geometry = None
    if meta["geometry"] is not None:
        geometry = Geometry(**_unplain(meta["geometry"]))
    dicom = None if meta["dicom"] is None else DicomIdentity(**meta["dicom"])
    sample_meta = SampleMeta(
        source=meta["source"],
        path=meta["path"],
        patient_id=meta["patient_id"],
        view=meta["view"],
        original_size=_unplain(meta["original_size"]),
        pixel_spacing=_unplain(meta["pixel_spacing"]),
        extra=_unplain(meta["extra"]),
        geometry=geometry,
        dicom=dicom,
    )
    masks = {name: arrays[f"mask{k}"] for k, name in enumerate(meta["mask_names"])}
    return Sample(
        image=_decode_image(
            meta["kind"], bytes(item["image"]), meta["path"], read_options, meta["image_shape"]
        ),
        meta=sample_meta,
        labels=arrays.get("labels"),
        boxes=arrays.get("boxes"),
        box_labels=meta["box_labels"],
        masks=masks or None,
        fixations=arrays.get("fixations"),
        report=meta["report"],
        gaze_map=arrays.get("gaze_map"),
        token_ids=arrays.get("token_ids"),
    )


@dataclass(frozen=True)
class Catalog:
    """What splits, budgets and pools need of the shards without reading an image, and how to read
    them: the source they came from, its label names and read options."""

    source: str
    options: dict[str, Any]
    image_size: int | None
    raw_pixels: bool
    label_names: list[str]
    read_options: dict[str, Any]
    patient_ids: list[str]
    image_ids: list[str]
    labels: list[list[float | None]]
    annotated: list[bool]
    predefined_split: list[str] | None
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, where: str) -> Catalog:
        try:
            values = json.loads(text)
            names = {f.name for f in fields(cls)}
            if not isinstance(values, dict) or set(values) != names:
                raise ValueError(f"its keys must be {sorted(names)}")
            if values["format"] != FORMAT:
                raise ValueError(f"format {values['format']} is not radsight's {FORMAT}")
        except (ValueError, TypeError) as error:
            raise DataError(where, f"not a radsight shards catalog ({error})") from None
        return cls(**values)

    @property
    def label_matrix(self) -> np.ndarray:
        rows = [[np.nan if v is None else v for v in row] for row in self.labels]
        return np.asarray(rows, dtype=np.float32).reshape(len(self.labels), len(self.label_names))


def _catalog_of(
    source: Any, name: str, options: Mapping[str, Any], image_size: int | None, raw_pixels: bool
) -> Catalog:
    labels = np.asarray(source.label_matrix, dtype=np.float64)
    return Catalog(
        source=name,
        options=_plain(dict(options), "source options"),
        image_size=image_size,
        raw_pixels=raw_pixels,
        label_names=list(source.label_names),
        read_options=dict(getattr(source, "read_options", {})),
        patient_ids=[str(p) for p in source.patient_ids],
        image_ids=[str(i) for i in source.image_ids],
        labels=[[None if np.isnan(v) else float(v) for v in row] for row in labels],
        annotated=[bool(a) for a in np.asarray(source.annotated, dtype=bool)],
        predefined_split=getattr(source, "predefined_split", None),
    )


class _Encoder:
    """What each litdata worker runs on a source index (forked, so the source is not pickled)."""

    def __init__(self, source: Any, image_size: int | None, raw_pixels: bool) -> None:
        self.source = source
        self.image_size = image_size
        self.raw_pixels = raw_pixels
        self.read_options = getattr(source, "read_options", None)
        self._threads_set_in = os.getpid()

    def __call__(self, index: int) -> dict[str, Any]:
        if self._threads_set_in != os.getpid():
            # a forked worker inherits the OpenMP pool's state but not its threads: a parallel torch op
            # would wait on them for ever (the DataLoader's workers also run on one thread)
            torch.set_num_threads(1)
            self._threads_set_in = os.getpid()
        try:
            sample = self.source[index]
        except DataError as error:
            log.warning("shards: keeping a bad file as its problem: %s", error)
            return bad_file_item(index, error)
        return encode_sample(index, sample, self.read_options, self.image_size, self.raw_pixels)


def write_shards(
    source: Any,
    name: str,
    options: Mapping[str, Any],
    out: str | Path,
    *,
    image_size: int | None = None,
    raw_pixels: bool = False,
    workers: int = 1,
    storage_options: Mapping[str, Any] | None = None,
    chunk_bytes: str | int = CHUNK_BYTES,
    progress: bool = True,
    staging: str | Path | None = None,
) -> Catalog:
    """Pack every sample of ``source`` (built from registry ``name`` and ``options``) into shards in
    ``out`` (a folder or ``s3://bucket/prefix``; those are written in ``staging`` first, by default a
    folder of the user's cache, then uploaded). A write interrupted earlier with the same settings
    resumes from litdata's checkpoints; finished shards are left as they are."""
    from litdata import optimize

    storage_options = dict(storage_options or {})
    catalog = _catalog_of(source, name, options, image_size, raw_pixels)
    chosen = (name, catalog.options, image_size, raw_pixels)
    settings = json.dumps(dict(zip(("source", "options", "image_size", "raw_pixels"), chosen, strict=True)))
    if read_text(out, CATALOG_FILE, storage_options) is not None:
        existing = Catalog.from_json(read_text(out, CATALOG_FILE, storage_options) or "", str(out))
        if (existing.source, existing.options, existing.image_size, existing.raw_pixels) != chosen:
            raise ConfigError(f"{out} holds shards of other settings ({existing.source}): choose another out")
        log.info("%s: the shards are complete already", out)
        return existing
    started = read_text(out, SETTINGS_FILE, storage_options)
    if started is not None and started != settings:
        raise ConfigError(
            f"{out} holds an unfinished write of other settings ({started}): remove it or write elsewhere"
        )
    write_text(out, SETTINGS_FILE, settings, storage_options)
    local = Path(staging or _staging_folder(out, settings)) if is_remote(out) else Path(out)
    if not (local / INDEX_FILE).is_file():
        _drop_torn_checkpoints(local)
        optimize(
            _Encoder(source, image_size, raw_pixels),
            list(range(len(source))),
            str(local),
            chunk_bytes=chunk_bytes,
            num_workers=max(1, workers),
            use_checkpoint=True,
            reorder_files=False,
            start_method="fork",  # the workers share the source built here, nothing is pickled
            verbose=progress,
        )
    written = _count(json.loads((local / INDEX_FILE).read_text()), str(local / INDEX_FILE))
    if written != len(source):
        raise DataError(
            local, f"{written} of {len(source)} samples written (a writer died): run it again to resume"
        )
    if is_remote(out):
        _upload(local, str(out), storage_options)
    write_text(out, CATALOG_FILE, catalog.to_json(), storage_options)
    return catalog


def _drop_torn_checkpoints(local: Path) -> None:
    """litdata copies each worker's checkpoint into ``.checkpoints`` in place, so a kill during the copy
    leaves half a JSON file that its resume fails on with a traceback; such a file is removed, and that
    worker writes its shards again."""
    for path in sorted((local / ".checkpoints").glob("*.json")):
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning(
                "%s: half-written checkpoint of an interrupted write removed; its shards are redone", path
            )
            path.unlink()


def _staging_folder(out: str | Path, settings: str) -> Path:
    """Where shards bound for remote storage are written first, one folder per destination and
    settings (litdata's own remote writer refuses a prefix that holds anything, so it could not resume
    an interrupted write there)."""
    digest = hashlib.sha256(f"{out}\n{settings}".encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "radsight" / "shards" / digest


def _upload(local: Path, out: str, storage_options: Mapping[str, Any]) -> None:
    """Copy the written shards to ``out``, skipping files already there whole (a resumed upload)."""
    client = _s3_client(storage_options)
    for path in sorted(p for p in local.iterdir() if p.is_file()):
        bucket, key = _s3_object(out, path.name)
        try:
            if client.head_object(Bucket=bucket, Key=key)["ContentLength"] == path.stat().st_size:
                continue
        except client.exceptions.ClientError:
            pass
        client.upload_file(str(path), bucket, key)


def _count(index: Any, where: str) -> int:
    """The number of samples a litdata ``index.json`` lists."""
    try:
        return sum(int(chunk["chunk_size"]) for chunk in index["chunks"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(where, f"not a litdata index ({error})") from None


class ShardReader:
    """Random access to written shards: sample ``i`` of the source they were written from.

    litdata's dataset is opened on first use in each process (data-loader workers open their own)."""

    def __init__(
        self,
        location: str | Path,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.location = str(location)
        self.storage_options = dict(storage_options or {})
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        if is_remote(location):
            _allow_plain_http(self.storage_options)
        text = read_text(location, CATALOG_FILE, self.storage_options)
        if text is None:
            raise DataError(location, f"no {CATALOG_FILE}: not radsight shards, or their write is unfinished")
        self.catalog = Catalog.from_json(text, f"{location}/{CATALOG_FILE}")
        self._check_index(read_text(location, INDEX_FILE, self.storage_options))
        self._dataset: Any = None
        self._pid: int | None = None

    def _check_index(self, text: str | None) -> None:
        where = f"{self.location}/{INDEX_FILE}"
        if text is None:
            raise DataError(where, "file not found")
        try:
            index = json.loads(text)
        except ValueError as error:
            raise DataError(where, f"not a litdata index ({error})") from None
        count, config = _count(index, where), index["config"]
        if config.get("data_format") != DATA_FORMAT:
            stored = config.get("data_format")
            raise DataError(where, f"fields stored as {stored}, not radsight's {DATA_FORMAT}")
        if count != len(self.catalog.patient_ids):
            raise DataError(where, f"{count} samples, but the catalog lists {len(self.catalog.patient_ids)}")

    def __len__(self) -> int:
        return len(self.catalog.patient_ids)

    def _open(self) -> Any:
        if self._dataset is None or self._pid != os.getpid():
            from litdata import StreamingDataset

            self._dataset = StreamingDataset(
                self.location,
                cache_dir=self.cache_dir,
                storage_options=self.storage_options or None,
                serializers={"pickle": RefusedSerializer()},  # type: ignore[dict-item]
            )
            self._pid = os.getpid()
        return self._dataset

    def __getitem__(self, index: int) -> Sample:
        item = self._open()[int(index)]
        if sorted(item) != sorted(FIELDS) or item["index"] != index:
            found = item.get("index")
            raise DataError(self.location, f"sample {index} is stored out of place (found {found})")
        try:
            return decode_sample(item, self.catalog.read_options)
        except (ValueError, KeyError, TypeError) as error:  # a damaged item, not a bad image file
            raise DataError(self.location, f"sample {index} cannot be decoded ({error!r})") from None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None, "_pid": None}


def labels_subset(catalog: Catalog, wanted: Sequence[str] | None) -> list[int]:
    """Positions in the catalog's label names of the ``wanted`` ones (all when None)."""
    if wanted is None:
        return list(range(len(catalog.label_names)))
    unknown = [name for name in wanted if name not in catalog.label_names]
    if unknown:
        raise ConfigError(f"unknown label name(s) {unknown}; these shards know {catalog.label_names}")
    return [catalog.label_names.index(name) for name in wanted]
