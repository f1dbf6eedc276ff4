"""Offline generation: apply a registered augmenter to a folder of normal images and write the results.

The output folder holds ``images/`` and ``masks/`` (PNG, same file names), ``manifest.jsonl`` (one record
per output: index, files, source image, augmenter, parameters, seed, drawn parameters) and ``run.json``
(the settings). Output ``i`` depends only on the run's seed and ``i``, every file is written atomically
and a record is appended only after its files exist, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from inout_aug.augmenter import mix_seed
from inout_aug.io import list_images, read_image, write_png, write_text
from inout_aug.registry import create, parameters

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
MAX_TRIES = 8


class GenerationError(RuntimeError):
    """A generation run that cannot go on (conflicting output folder, augmenter that makes no defect)."""


def read_manifest(out: Path) -> dict[int, dict[str, Any]]:
    """Complete records of ``out/manifest.jsonl`` by index; records whose files are missing are dropped."""
    records: dict[int, dict[str, Any]] = {}
    path = out / MANIFEST
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption
            continue
        if all((out / record[key]).is_file() for key in ("image", "mask")):
            records[record["index"]] = record
    return records


class GenerationJob:
    """One ``inout-aug generate`` run; ``todo`` lists the output indices still to make, ``make(i)`` makes one."""

    def __init__(self, augmenter: str, input: str | os.PathLike, out: str | os.PathLike,
                 n: int | None = None, seed: int = 0, params: dict[str, Any] | None = None):
        self.sources = list_images(input)
        self.out = Path(out)
        self.augmenter_name = augmenter
        self.params = dict(params or {})
        if "p" in parameters(augmenter):
            self.params.setdefault("p", 1.0)
        self.augmenter = create(augmenter, **self.params)
        self.seed = int(seed)
        self.n = len(self.sources) if n is None else int(n)
        if self.n < 0:
            raise ValueError(f"-n must be at least 0, got {self.n}")
        self._claim_output_folder(str(input))
        self.done = read_manifest(self.out)
        write_text("".join(json.dumps(r) + "\n" for _, r in sorted(self.done.items())), self.out / MANIFEST)
        self.todo = [i for i in range(self.n) if i not in self.done]
        order = torch.randperm(len(self.sources), generator=torch.Generator().manual_seed(self.seed))
        self._order = order.tolist()

    def _claim_output_folder(self, input: str) -> None:
        settings = {"augmenter": self.augmenter_name, "params": self.params, "seed": self.seed,
                    "input": str(Path(input).resolve())}
        run_file = self.out / RUN_FILE
        if run_file.exists():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            if previous != json.loads(json.dumps(settings)):
                raise GenerationError(
                    f"{self.out} holds a run with other settings ({json.dumps(previous)}); "
                    "use another --out folder to start a new run"
                )
        write_text(json.dumps(settings, indent=2) + "\n", run_file)

    def make(self, index: int) -> dict[str, Any]:
        """Make output ``index`` (a defect in a normal image), write its files, then append its record."""
        source = self.sources[self._order[index % len(self.sources)]]
        image = read_image(source)[None]
        for attempt in range(MAX_TRIES):
            seed = mix_seed(self.seed, index, attempt)
            self.augmenter.reseed(seed)
            result = self.augmenter.augment(image)
            if result.defect[0]:
                break
        else:
            raise GenerationError(
                f"{self.augmenter_name} made no defect in {source} after {MAX_TRIES} tries; check its parameters"
            )
        name = f"{index:06d}.png"
        write_png(result.image[0], self.out / "images" / name)
        write_png(result.mask[0].to(torch.uint8) * 255, self.out / "masks" / name)
        record = {"index": index, "image": f"images/{name}", "mask": f"masks/{name}", "source": str(source),
                  "augmenter": self.augmenter_name, "params": self.params, "seed": seed,
                  "drawn": result.params[0]}
        with open(self.out / MANIFEST, "a", encoding="utf-8") as manifest:
            manifest.write(json.dumps(record) + "\n")
        self.done[index] = record
        return record
