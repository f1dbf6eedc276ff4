"""A real third-party plugin (plugins/cutpaste), installed into a throw-away environment, then uninstalled.

The environment is a new virtual environment that sees this one's packages (torch, inout-aug) through a
``.pth`` file, so installing and uninstalling the plugin there never touches the environment under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from helpers import gradient_image
from inout_aug.core.io import write_png

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "cutpaste"

def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    _installed("inout-aug-cutpaste"),
    reason="inout-aug-cutpaste is installed in the test environment itself; uninstall it to run these tests",
)


class PluginEnv:
    """A virtual environment layered on the current one, with pip driven from outside."""

    def __init__(self, root: Path):
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        self.python = str(venv / "bin" / "python")
        own_site = subprocess.check_output(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
        inherited = sysconfig.get_paths()["purelib"]
        Path(own_site, "_inherit.pth").write_text(f"import site; site.addsitedir({inherited!r})\n")
        self.source = root / "src"
        shutil.copytree(PLUGIN, self.source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))

    def pip(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "pip", "--python", self.python, "-q", *args], check=True,
                       capture_output=True)

    def install(self) -> None:
        self.pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(self.source))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, *args], capture_output=True, text=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "inout_aug_cli", *args)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> PluginEnv:
    plugin_env = PluginEnv(tmp_path_factory.mktemp("plugin"))
    plugin_env.install()
    return plugin_env


def test_listed_with_its_distribution_and_description(env):
    result = env.cli("list")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("cutpaste_scar"))
    assert row.split()[1:3] == ["inout_aug_cutpaste.CutPasteScar", "inout-aug-cutpaste"] and "CutPaste scar" in row
    assert "memseg" in result.stdout and "warning" not in result.stderr


def test_created_by_name_and_used_in_compose(env):
    script = textwrap.dedent("""
        import json, torch
        from torchvision import tv_tensors
        from torchvision.transforms import v2
        import inout_aug

        image = tv_tensors.Image(torch.arange(3 * 64 * 80).reshape(3, 64, 80).remainder(251).to(torch.uint8))
        scar = inout_aug.create("cutpaste_scar", seed=0)
        plain = inout_aug.create("cutpaste_scar", seed=0)({"image": image, "label": 0})
        out = v2.Compose([scar, v2.RandomHorizontalFlip(p=1.0)])({"image": image, "label": 0})
        print(json.dumps({
            "type": type(scar).__name__, "label": out["label"], "mask_type": type(out["mask"]).__name__,
            "mask_pixels": int(out["mask"].sum()),
            "flipped": bool(torch.equal(out["mask"], plain["mask"].flip(-1))
                            and torch.equal(out["image"], plain["image"].flip(-1))),
        }))
    """)
    result = env.run("-c", script)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["type"] == "CutPasteScar" and report["label"] == 1 and report["mask_type"] == "Mask"
    assert report["mask_pixels"] > 0 and report["flipped"]


def test_used_by_the_cli(env, tmp_path):
    info = env.cli("info", "cutpaste_scar")
    assert info.returncode == 0 and "jitter" in info.stdout and "default 0.1" in info.stdout
    normal = tmp_path / "normal"
    for i in range(3):
        write_png(gradient_image(h=64, w=80).roll(i, -1), normal / f"{i}.png")
    out = tmp_path / "out"
    result = env.cli("generate", "-a", "cutpaste_scar", "-i", str(normal), "-o", str(out), "-n", "4",
                     "--param", "jitter=0.0")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["augmenter"] == "cutpaste_scar" for r in records)
    assert all(r["params"]["jitter"] == 0.0 and "angle" in r["drawn"] for r in records)


def test_uninstalling_removes_it_cleanly(tmp_path):
    plugin_env = PluginEnv(tmp_path)
    plugin_env.install()
    assert "cutpaste_scar" in plugin_env.cli("list").stdout
    plugin_env.pip("uninstall", "-y", "inout-aug-cutpaste")
    result = plugin_env.cli("list")
    assert result.returncode == 0 and "cutpaste_scar" not in result.stdout and "memseg" in result.stdout
    assert result.stderr == "", "no warning may be left behind"
    missing = plugin_env.cli("info", "cutpaste_scar")
    assert missing.returncode != 0 and "unknown augmenter 'cutpaste_scar'" in missing.stderr
