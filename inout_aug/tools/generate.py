"""Offline generation: apply a registered augmenter to normal images (a folder or a dataset) and write the results.

The output folder holds ``images/`` and ``masks/`` (PNG, same file names), ``manifest.jsonl`` (one record
per output: index, files, source image, augmenter, parameters, seed, drawn parameters) and ``run.json``
(the settings). Output ``i`` depends only on the run's seed and ``i``, every file is written atomically
and a record is appended only after its files exist, so an interrupted run resumes where it stopped.
With ``on_error="skip"`` an unusable input (unreadable, or one the augmenter cannot put a defect in) costs its
outputs, with a warning, instead of stopping the run; a rerun tries them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from inout_aug.core.augmenter import Augmented, mix_seed
from inout_aug.core.io import REPLACE_OR_REMOVE, ImageReadError, list_images, lock, read_image, write_png, write_text
from inout_aug.core.registry import create, parameters
from inout_aug.data.layouts import LayoutError, detect_layout, open_dataset
from inout_aug.data.manifest import manifest_name, read_manifest

RUN_FILE = "run.json"
MAX_TRIES = 8
ON_ERROR = ("error", "skip")


class GenerationError(RuntimeError):
    """A generation run that cannot go on (conflicting output folder, augmenter that makes no defect)."""


class GenerationJob:
    """One ``inout-aug generate`` run; ``todo`` lists the output indices still to make, ``make(i)`` makes one.

    Use it as a context manager: it holds a lock on the output folder (on its shard of it), so two runs never
    write the same outputs. ``shard=(k, n)`` makes only the outputs whose index is k modulo n, with a
    manifest of its own: n processes (e.g. one per GPU under ``accelerate launch``) fill one folder
    without overlap, and the folder reads as one bank. ``sources`` (paths below ``input``) replaces the normal
    images found in ``input`` by a chosen list. ``on_error="skip"`` skips the outputs of unusable inputs (see
    :meth:`make`), warning once per input; ``skipped`` maps each such input to its error.
    """

    def __init__(self, augmenter: str, input: str | os.PathLike, out: str | os.PathLike,
                 n: int | None = None, seed: int = 0, params: dict[str, Any] | None = None,
                 layout: str = "auto", split: str = "train", data_options: dict[str, Any] | None = None,
                 shard: tuple[int, int] = (0, 1), sources: list[str | os.PathLike] | None = None,
                 on_error: str = "error"):
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        self.on_error = on_error
        self.skipped: dict[Path, str] = {}
        self.not_made: list[int] = []
        self.shard = (int(shard[0]), int(shard[1]))
        self.out, root = _absolute(out), _absolute(input)
        if self.out.exists() and not self.out.is_dir():
            raise GenerationError(f"--out {self.out} is a file: give a folder (new or empty) for the outputs")
        if sources is None:
            found, self.data = normal_images(root, layout, split, data_options)
        else:  # a chosen list (e.g. the benchmark's training normals), recorded by its hash in run.json
            found, self.data = [Path(s) for s in sources], {"layout": "list"}
        # Not inputs: this run's outputs, nor anything in another generate folder below the input.
        self._every_source = [p for p in map(_absolute, found) if not self._is_output(p)]
        self.sources = outside_runs(self._every_source, root, keep=(self.out,))
        if not self.sources:
            raise FileNotFoundError(f"no images in {root} besides the outputs in {self.out}")
        self.augmenter_name = augmenter
        self.params = dict(params or {})
        if {"seed", "generator"} & set(self.params):
            raise GenerationError("-p seed (or generator) is not an augmenter setting here: each output's seed comes "
                                  "from the run's --seed and its index; give --seed")
        if "p" in parameters(augmenter):
            self.params.setdefault("p", 1.0)
        self.augmenter = create(augmenter, **{"seed": int(seed), **self.params})
        self.seed = int(seed)
        self.n = len(self.sources) if n is None else int(n)
        if self.n < 0:
            raise ValueError(f"-n must be at least 0, got {self.n}")
        self._lock = _lock(self.out, self.shard)
        try:
            self._claim_output_folder(root)
            self.done = read_manifest(self.out)
            beyond = [i for i in self.done if i >= self.n]
            if beyond:
                raise GenerationError(
                    f"{self.out} already holds {len(self.done)} outputs, up to index {max(beyond)}: "
                    f"use -n {max(beyond) + 1} or more, or another --out folder"
                )
            for stale in self.out.glob("**/.*.tmp"):  # files an interrupted run of this shard was writing
                if self._owns(stale):
                    stale.unlink()
            own = read_manifest(self.out, self.shard)  # rewritten without any half-written last line
            write_text("".join(json.dumps(r) + "\n" for _, r in sorted(own.items())), self._manifest)
        except BaseException:
            self.close()
            raise
        self.todo = [i for i in range(self.n) if i not in self.done and i % self.shard[1] == self.shard[0]]
        order = torch.randperm(len(self.sources), generator=torch.Generator().manual_seed(self.seed))
        self._order = order.tolist()

    @property
    def _manifest(self) -> Path:
        return self.out / manifest_name(self.shard)

    def _owns(self, temporary: Path) -> bool:
        """Whether a temporary file (``.NAME.XXXX.tmp``) belongs to this shard: any one, when not sharded."""
        k, n = self.shard
        number = temporary.name[1:].split(".", 1)[0]
        own_manifest = temporary.name.startswith(f".{manifest_name(self.shard)}.")
        return n == 1 or own_manifest or (number.isdigit() and int(number) % n == k)

    def _others_at_work(self) -> bool:
        """Whether another process holds a lock on this output folder (another shard, or an unsharded run)."""
        own = Path(self._lock.name).name
        for flag in self.out.glob(".lock*"):
            if flag.name != own:
                handle = lock(flag)
                if handle is None:
                    return True
                handle.close()
        return False

    def _is_output(self, path: Path) -> bool:
        """Whether ``path`` is one of this run's outputs (images/, masks/, a preview beside them)."""
        return path.parent == self.out or any(self.out / d in path.parents for d in ("images", "masks"))

    def __enter__(self) -> GenerationJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the output folder."""
        self._lock.close()

    def _settings(self, root: Path, sources: list[Path]) -> dict[str, Any]:
        """What ``run.json`` records: the settings and a fingerprint of the input file list ``sources``."""
        listing = "\n".join(str(p.relative_to(root)) for p in sources)
        files = self.augmenter.file_hashes()
        return json.loads(json.dumps({
            "augmenter": self.augmenter_name, "params": self.params, "seed": self.seed, "input": str(root),
            "data": self.data,
            "sources": {"count": len(sources), "sha256": hashlib.sha256(listing.encode()).hexdigest()},
            **({"files": files} if files else {}),
        }))

    def _claim_output_folder(self, root: Path) -> None:
        settings = self._settings(root, self.sources)
        run_file = self.out / RUN_FILE
        # A new run needs an output folder of its own: empty, but for lock files, the temporary files of another
        # shard writing run.json, and the input folder itself.
        foreign = sorted(p.name for p in self.out.iterdir()
                         if not (p.name.startswith(".lock") or p.name.startswith(f".{RUN_FILE}.")
                                 or p == root or p in root.parents)) if not run_file.exists() else []
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise GenerationError(f"{self.out} already holds files ({shown}) but no generate run ({RUN_FILE}): give a "
                                  "new or empty --out folder, so that nothing in it is overwritten")
        if run_file.exists():
            try:
                previous = json.loads(run_file.read_text(encoding="utf-8"))
                if not isinstance(previous, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
                raise GenerationError(f"{run_file} is corrupt ({exc}); delete it or use another --out") from exc
            if written_by_generate(previous) and not read_manifest(self.out) and not self._others_at_work():
                previous = settings  # a run that failed before its first output, and no shard of it is running
            if previous.get("sources") != settings["sources"] and self.sources != self._every_source:
                # A run begun when other generate folders below the input were still read keeps its inputs.
                every = self._settings(root, self._every_source)
                if every["sources"] == previous.get("sources"):
                    self.sources, settings = self._every_source, every
            if previous.get("sources") != settings["sources"] and previous.get("input") == settings["input"]:
                raise GenerationError(
                    f"the images in {root} changed since the run in {self.out} started "
                    "(files added or removed); restore them or use another --out folder"
                )
            if "files" not in previous:  # a run begun before file hashes were recorded: checked as it was then
                settings.pop("files", None)
            if previous.get("files", {}) != settings.get("files", {}) and previous.get("params") == settings["params"]:
                raise GenerationError(
                    f"the files of {self.augmenter_name} changed since the run in {self.out} started "
                    f"({json.dumps(previous['files'])} then, {json.dumps(settings.get('files', {}))} now; e.g. a "
                    "model trained again at the same path): its outputs would mix both; restore them or use another "
                    "--out folder"
                )
            if previous != settings:
                differ = [key for key in sorted(set(previous) | set(settings))
                          if previous.get(key) != settings.get(key)]
                shown = "; ".join(f"{key}: {json.dumps(previous.get(key))} there, {json.dumps(settings.get(key))} now"
                                  for key in differ)
                raise GenerationError(
                    f"{self.out} holds a run with other settings ({shown}); use another --out folder to start a new run"
                )
        write_text(json.dumps(settings, indent=2) + "\n", run_file)

    def source(self, index: int) -> Path:
        """The normal image output ``index`` is made from."""
        return self.sources[self._order[index % len(self.sources)]]

    def run(self, batch_size: int = 1, progress: Callable[[int], None] | None = None) -> None:
        """Make every output still to do, ``batch_size`` at a time; ``progress(k)`` hears of each k made."""
        for start in range(0, len(self.todo), batch_size):
            chunk = self.todo[start:start + batch_size]
            if len(chunk) == 1:
                self.make(chunk[0])
            else:
                self.make_batch(chunk)
            if progress is not None:
                progress(len(chunk))

    def make(self, index: int, first_attempt: int = 0) -> dict[str, Any] | None:
        """Make output ``index`` (a defect in a normal image), write its files, then append its record.

        An unusable input raises: an unreadable file (:class:`ImageReadError`), an image the augmenter rejects
        (ValueError) or puts no defect in (GenerationError, e.g. one too small). With ``on_error="skip"`` the output
        is skipped instead (None), before any of its files is written.
        """
        source = self.source(index)
        try:
            result, seed = self._defect(index, source, first_attempt)
        except (ValueError, GenerationError) as exc:
            if self.on_error == "error":
                raise
            self._skip(index, source, exc)
            return None
        return self._write(index, source, result, seed)

    def _defect(self, index: int, source: Path, first_attempt: int) -> tuple[Augmented, int]:
        """The first defect the augmenter makes in ``source`` for output ``index``, and its seed."""
        image = _read_source(source)
        for attempt in range(first_attempt, MAX_TRIES):
            seed = mix_seed(self.seed, index, attempt)
            self.augmenter.reseed(seed, index)
            result = self.augmenter.augment(image)
            if result.defect[0]:
                return result, seed
        raise GenerationError(
            f"{self.augmenter_name} made no defect in {source} ({image.shape[-2]}x{image.shape[-1]} px) after "
            f"{MAX_TRIES} tries; check its parameters, or whether the image is large enough for them"
        )

    def _skip(self, index: int, source: Path, exc: Exception) -> None:
        """Note output ``index`` as not made; warn the first time its input fails."""
        self.not_made.append(index)
        if source not in self.skipped:
            self.skipped[source] = " ".join(str(exc).split())
            warnings.warn(f"skipped {source}: {self.skipped[source]}", stacklevel=3)

    def make_batch(self, indices: list[int]) -> list[dict[str, Any] | None]:
        """Make several outputs at once where the augmenter can batch them (``augment_each``: a diffusion model
        samples them together); every output has the draws ``make(i)`` would use. With ``on_error="skip"`` a
        batch that fails is made one output at a time, so that only the unusable inputs are skipped."""
        sources = [self.source(i) for i in indices]
        seeds = [mix_seed(self.seed, i, 0) for i in indices]
        try:
            results = self.augmenter.augment_each([_read_source(s) for s in sources], seeds, indices)
        except (ValueError, GenerationError):
            if self.on_error == "error":
                raise
            return [self.make(i) for i in indices]
        return [self._write(i, source, result, seed) if result.defect[0] else self.make(i, first_attempt=1)
                for i, source, result, seed in zip(indices, sources, results, seeds)]

    def _write(self, index: int, source: Path, result: Augmented, seed: int) -> dict[str, Any]:
        """Write output ``index``'s files, then append its record to the manifest."""
        name = f"{index:06d}.png"
        write_png(result.image[0], self.out / "images" / name)
        mask = None
        if result.mask[0].any():  # else a weak label: a defect somewhere, no pixel mask
            mask = f"masks/{name}"
            write_png(result.mask[0].to(torch.uint8) * 255, self.out / mask)
        record = {"index": index, "image": f"images/{name}", "mask": mask, "source": str(source),
                  "augmenter": self.augmenter_name, "params": self.params, "seed": seed,
                  "drawn": result.params[0]}
        with open(self._manifest, "a", encoding="utf-8") as manifest:
            manifest.write(json.dumps(record) + "\n")
        self.done[index] = record
        return record


def normal_images(root: Path, layout: str = "auto", split: str = "train",
                  options: dict[str, Any] | None = None) -> tuple[list[Path], dict[str, Any]]:
    """The normal images to augment, and where they came from.

    ``layout`` "auto" opens ``root`` as a dataset layout when it holds one (then the normal images of
    ``split``), else as a plain folder; "images" always takes every image below ``root``; a layout name
    (ksdd2, ksdd, mvtec, magnetic_tile, folder) insists on it. ``options`` go to the layout (e.g. category).
    """
    if layout == "auto":
        try:
            layout = detect_layout(root)
        except LayoutError:
            layout = "images"
    if layout == "images":
        if options:
            raise ValueError(f"dataset options {sorted(options)} need a dataset layout, but {root} is a plain folder")
        return list_images(root), {"layout": "images"}
    dataset = open_dataset(root, layout, split, **(options or {}))
    normals = [record.image for record in dataset.normals()]
    if not normals:
        raise LayoutError(f"split {split!r} of the {layout} dataset {root} holds no normal images to augment")
    return normals, {"layout": layout, "split": split, "options": dataset.options()}


def outside_runs(paths: list[Path], root: Path, keep: tuple[Path, ...] = ()) -> list[Path]:
    """``paths`` but those inside the folder of a generate run below ``root`` (other than ``root`` and ``keep``):
    defects made from a folder's images are not more of its normal images."""
    runs = _generate_folders(_absolute(root), skip=(_absolute(root), *map(_absolute, keep)))
    return [p for p in paths if not any(run in _absolute(p).parents for run in runs)]


def _generate_folders(root: Path, skip: tuple[Path, ...]) -> list[Path]:
    """Folders below ``root`` (but those in ``skip``) that hold a generate run: a ``run.json`` of its settings."""
    found = []
    for run_file in root.rglob(RUN_FILE):
        if run_file.parent in skip:
            continue
        try:
            settings = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):  # another tool's file of that name
            continue
        if written_by_generate(settings):
            found.append(run_file.parent)
    return found


def written_by_generate(settings: Any) -> bool:
    """Whether ``settings``, a parsed ``run.json``, is one that generate wrote (not another tool's of that name)."""
    return isinstance(settings, dict) and {"augmenter", "sources"} <= settings.keys()


def _read_source(path: Path) -> torch.Tensor:
    """A run's normal image as (1, C, H, W) uint8; an unreadable one raises, saying how the run can go on."""
    try:
        return read_image(path)[None]
    except ImageReadError as exc:
        fix = "replace it with a readable image" if exc.fix == REPLACE_OR_REMOVE else exc.fix
        raise ImageReadError(
            path, exc.reason, f"{fix} of the same name and run again to resume (removing it changes this run's "
            "inputs, which needs another --out), or skip unusable inputs with --on-error skip"
        ) from exc


def _absolute(path: str | os.PathLike) -> Path:
    """An absolute, normalised path that still names a symbolic link itself (resolve() would follow it)."""
    return Path(os.path.abspath(path))


def _lock(out: Path, shard: tuple[int, int]) -> IO:
    """Hold an exclusive lock on ``out/.lock`` (per shard: ``.lock.shard-K-of-N``; where the platform has flock);
    refuse one in use."""
    handle = lock(out / (".lock" if shard[1] == 1 else f".lock.shard-{shard[0]}-of-{shard[1]}"))
    if handle is None:
        raise GenerationError(f"another run is writing to {out}; wait for it or use another --out")
    return handle
