"""Files on disk: find and read images with clear errors, write atomically, hash files and folders."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # no flock on this platform (Windows): locks are not enforced
    fcntl = None  # type: ignore[assignment]

import numpy as np
import PIL.Image
import torch
from torchvision.transforms.v2 import functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


_UMASK = os.umask(0)
os.umask(_UMASK)


#: Whether :func:`lock` excludes other processes here (flock exists: not on Windows).
LOCKING = fcntl is not None


def lock(path: Path, wait: bool = False) -> IO | None:
    """An exclusive lock on the file ``path`` (made if missing), held until the returned handle is closed or its
    process ends; None when another process holds it and ``wait`` is False. Granted at once where the platform
    has no flock (:data:`LOCKING` False). A holder may delete the file before releasing it: the lock is then
    taken on the file that stands at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a")
        if fcntl is None:
            return handle
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        except BaseException:
            handle.close()
            raise
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # locked a file its holder deleted meanwhile: lock the one at ``path`` now


#: The fix an :class:`ImageReadError` names unless a caller knows a better one.
REPLACE_OR_REMOVE = "replace or remove the file"


class ImageReadError(ValueError):
    """An image file that cannot be decoded: ``path``, the ``reason``, and the ``fix`` that ends the message."""

    def __init__(self, path: str | os.PathLike, reason: object, fix: str = REPLACE_OR_REMOVE):
        super().__init__(f"cannot read image {path}: {reason}; {fix}")
        self.path, self.reason, self.fix = path, reason, fix

    def __reduce__(self) -> tuple:  # rebuilt from its parts, e.g. when it crosses a process boundary
        return type(self), (self.path, self.reason, self.fix)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted; a missing or image-less folder raises."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {root}; point to a folder of normal images"
        )
    return files


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode ``path`` into a (C, H, W) uint8 tensor, C = 1 for grey images and 3 otherwise."""
    try:
        with PIL.Image.open(path) as img:
            img.load()
            if img.mode in _FULL_SCALE:
                return _to_8_bit(img, path)
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            return F.pil_to_tensor(img)
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        raise ImageReadError(path, exc) from exc


# Grey modes of more than 8 bits, and the value that stands for white in each.
_FULL_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def _to_8_bit(img: PIL.Image.Image, path: str | os.PathLike) -> torch.Tensor:
    """A 16-bit or float grey image scaled (not clipped) to (1, H, W) uint8."""
    values = np.asarray(img, dtype=np.float64) / _FULL_SCALE[img.mode]
    if values.size and not (values.min() >= 0 and values.max() <= 1):
        raise ImageReadError(path, f"mode {img.mode} values lie outside 0..{_FULL_SCALE[img.mode]:g}",
                             "save it as an 8- or 16-bit image")
    return torch.from_numpy(np.round(values * 255).astype(np.uint8))[None]


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing so that it is either complete or absent, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a (C, H, W) or (H, W) uint8 tensor as PNG, atomically."""
    picture = F.to_pil_image(image if image.ndim == 3 else image[None])
    with atomic_open(path) as handle:
        picture.save(handle, format="PNG")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's files (their relative paths and contents, in sorted order)."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"nothing to hash at {root}")
    total = hashlib.sha256()
    for file in files:
        if file != root:
            total.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                total.update(block)
    return total.hexdigest()
