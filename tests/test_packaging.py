"""Packaging: every package is shipped, no top-level `cli` or `plugins`, dependencies are ranges."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed():
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "inout_aug").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


def test_no_top_level_cli_or_plugins_package(tmp_path):
    probe = "import importlib.util as u; print([n for n in ('cli', 'plugins') if u.find_spec(n)])"
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
    assert "cli" not in PROJECT["tool"]["setuptools"]["packages"]


def test_dependencies_are_version_ranges():
    for requirement in PROJECT["project"]["dependencies"]:
        assert re.search(r">=|~=", requirement) and "==" not in requirement, requirement



def test_import_inout_aug_loads_only_the_core_and_the_classes_on_first_use(tmp_path):
    probe = (
        "import sys, inout_aug\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('inout_aug.', 'kornia', 'diffusers', 'sklearn')))\n"
        "print(loaded)\n"
        "from inout_aug import DiffusionDefect, InOutMix, MemSegRegion, Transplant\n"
        "print([c.name for c in (DiffusionDefect, InOutMix, MemSegRegion, Transplant)])\n"
    )
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    loaded, names = found.stdout.splitlines()
    core = ["inout_aug.core", "inout_aug.core.augmenter", "inout_aug.core.errors", "inout_aug.core.registry",
            "inout_aug.core.sample"]
    assert loaded == repr(core)
    assert names == "['diffusion', 'inout', 'memseg', 'transplant']"


def test_the_core_runs_without_kornia_and_transplant_names_its_extra(tmp_path):
    probe = (
        "import sys\n"
        "sys.modules['kornia'] = None  # as if it were not installed\n"
        "import inout_aug\n"
        "print('transplant' in inout_aug.list_augmenters())\n"
        "inout_aug.create('memseg', seed=0)\n"
        "try:\n"
        "    inout_aug.Transplant(defects='anywhere')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    missing = 'the transplant augmenter needs kornia: pip install "inout-aug[kornia]"'
    assert found.stdout.splitlines() == ["True", missing]
