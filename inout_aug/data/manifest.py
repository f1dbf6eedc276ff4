"""The manifest of a generation folder (``inout-aug generate``'s output, a bank): one JSON record per output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"


def manifest_name(shard: tuple[int, int] = (0, 1)) -> str:
    """The manifest a run writes: ``manifest.jsonl``, or one per shard (``manifest.shard-K-of-N.jsonl``)."""
    k, n = shard
    return MANIFEST if n == 1 else f"manifest.shard-{k}-of-{n}.jsonl"


def read_manifest(out: Path, shard: tuple[int, int] | None = None) -> dict[int, dict[str, Any]]:
    """Complete records of the manifests in ``out`` (all of them, or the one of ``shard``) by index.

    Cut, malformed or file-less records are dropped. ``mask`` is None for outputs with a weak label (a defect
    somewhere, no pixel mask: txt2img diffusion).
    """
    records: dict[int, dict[str, Any]] = {}
    paths = [out / manifest_name(shard)] if shard else sorted(out.glob("manifest*.jsonl"))
    for path in paths:
        if path.exists():
            records.update(_read_records(out, path))
    return records


def _read_records(out: Path, path: Path) -> dict[int, dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption
            continue
        if not (isinstance(record, dict) and isinstance(record.get("index"), int)
                and isinstance(record.get("image"), str) and isinstance(record.get("mask", 0), (str, type(None)))):
            continue
        files = [record["image"]] + ([record["mask"]] if record.get("mask") else [])
        if all((out / name).is_file() for name in files):
            records[record["index"]] = record
    return records
