"""Fine-tuning and generation on several processes: torchrun on the CPU (gloo), the code a GPU server runs.

Each test starts ``torchrun --nproc-per-node 2`` (two worker processes on one thread each) and compares the result
with one process run here: the same weights at twice the batch, the same bank file by file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from helpers import gradient_dataset, gradient_image
from inout_aug.core.io import digest, write_png
from inout_aug.data.manifest import read_manifest
from inout_aug_cli.main import cli

psutil = pytest.importorskip("psutil")
pytest.importorskip("accelerate")
tiny = pytest.importorskip("inout_aug.testing.tiny_sd")
from safetensors.torch import load_file  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
# Weights of 2 processes at batch b against 1 process at batch 2b: the same samples, noise and steps; only the
# order of float sums differs (a batch of 2b against two all-reduced halves of it). Measured: up to 3e-7 (a few
# roundings of weights about 1 in size) where training moves weights by about 1e-2.
ATOL = 1e-5
# Attention key biases have no gradient in exact arithmetic (softmax ignores a shift shared by every key): AdamW
# scales their float-noise gradients to steps of about the learning rate, different in every run, so they are left
# out of the comparison.
ZERO_GRADIENT = ("to_k.bias",)
# Wraps the command line: notes the RANK of every process that saves a model in the file named first.
SPY = """
import os
import sys

from inout_aug.models import ddpm, sd

log = sys.argv.pop(1)


def spy(real):
    def save(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write(os.environ["RANK"] + "\\n")
        return real(*args, **kwargs)
    return save


ddpm.DDPMDefectModel.save = spy(ddpm.DDPMDefectModel.save)
sd._save = spy(sd._save)
from inout_aug_cli.main import cli  # noqa: E402

cli(prog_name="inout-aug")
"""


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def torchrun(*args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    """Start ``torchrun --nproc-per-node 2`` with ``args`` (a script or ``-m module``, then its arguments)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr, text=True)


def finished(process: subprocess.Popen) -> None:
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors


def finetune_on_two(root: Path, *args: str) -> list[str]:
    """Run ``finetune ARGS`` on 2 processes; the ranks of the processes that saved a model."""
    script, log = root / "spy.py", root / "saved-by.txt"
    script.write_text(SPY)
    log.unlink(missing_ok=True)
    finished(torchrun(str(script), str(log), "finetune", *args))
    return log.read_text().split()


def kill(process: subprocess.Popen, rank: int | None = None) -> None:
    """SIGKILL torchrun's worker of ``rank`` (every worker when None; torchrun then stops the others) and wait."""
    for worker in psutil.Process(process.pid).children():
        if rank is None or worker.environ().get("RANK") == str(rank):
            worker.send_signal(signal.SIGKILL)
    process.communicate(timeout=120)
    assert process.returncode != 0


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest difference between weights of the same name, attention key biases left out; same names."""
    assert a.keys() == b.keys()
    return max(float((a[key] - b[key]).abs().max()) for key in a if not key.endswith(ZERO_GRADIENT))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    data = gradient_dataset(root / "data")
    return root, data


@pytest.fixture(scope="module")
def ddpm_models(setup) -> dict[str, Path]:
    """ddpm models (smoke preset, 10 steps): one process at batch 8 and at batch 4, two processes at batch 4."""
    root, data = setup
    common = ["--backend", "ddpm", "--data", str(data), "--shots", "2", "--preset", "smoke", "--set", "steps=10",
              "-d", "test_fraction=0.25"]
    models = {"one at 8": root / "ddpm-1x8", "one at 4": root / "ddpm-1x4", "two at 4": root / "ddpm-2x4"}
    run("finetune", *common, "--set", "batch_size=8", "--out", str(models["one at 8"]))
    run("finetune", *common, "--set", "batch_size=4", "--out", str(models["one at 4"]))
    assert finetune_on_two(root, *common, "--set", "batch_size=4", "--out", str(models["two at 4"])) == ["0"]
    return models


def test_ddpm_on_two_processes_trains_as_one_at_twice_the_batch(ddpm_models):
    def weights(name: str) -> dict[str, torch.Tensor]:
        return load_file(ddpm_models[name] / "unet" / "diffusion_pytorch_model.safetensors")

    one = weights("one at 8")
    assert largest_difference(weights("two at 4"), one) <= ATOL
    assert largest_difference(weights("one at 4"), one) > 100 * ATOL  # the check can fail
    records = [json.loads((ddpm_models[name] / "training_data.json").read_text()) for name in ("two at 4", "one at 8")]
    assert records[0] == records[1] and sum("/defect/" in f["image"] for f in records[0]["files"]) == 2
    configs = [json.loads((ddpm_models[name] / "config.json").read_text()) for name in ("two at 4", "one at 8")]
    assert (configs[0].pop("batch_size"), configs[1].pop("batch_size")) == (4, 8) and configs[0] == configs[1]
    assert sorted(p.name for p in ddpm_models["two at 4"].parent.iterdir() if p.name.startswith(".")) == []


def test_sd_lora_on_two_processes_trains_as_one_at_twice_the_batch(setup):
    root, data = setup
    base = tiny.save_tiny_checkpoint(root / "sd")
    common = ["--backend", "sd", "--checkpoint", str(base), "--data", str(data), "--shots", "2", "--preset", "smoke",
              "-d", "test_fraction=0.25"]
    one, two = root / "lora-1x2", root / "lora-2x1"
    run("finetune", *common, "--set", "batch_size=2", "--out", str(one))
    assert finetune_on_two(root, *common, "--set", "batch_size=1", "--out", str(two)) == ["0"]
    assert largest_difference(load_file(two / "lora.safetensors"), load_file(one / "lora.safetensors")) <= ATOL
    assert digest(two / "class_images") == digest(one / "class_images")  # rank 0 made the one batch of class images
    infos = [json.loads((folder / "lora.json").read_text()) for folder in (two, one)]
    assert infos[0]["steps"] == infos[1]["steps"] == 2
    assert (infos[0]["settings"]["batch_size"], infos[1]["settings"]["batch_size"]) == (1, 2)
    assert json.loads((two / "training_data.json").read_text()) == json.loads((one / "training_data.json").read_text())
    assert sorted(p.name for p in two.iterdir()) == ["class_images", "lora.json", "lora.safetensors",
                                                     "training_data.json"]


def test_a_two_process_finetune_killed_during_training_keeps_the_previous_model(setup, ddpm_models):
    root, data = setup
    out = root / "ddpm-killed"
    shutil.copytree(ddpm_models["two at 4"], out)
    before = digest(out)
    log = root / "killed.log"
    with open(log, "w") as errors:
        process = torchrun("-m", "inout_aug_cli", "finetune", "--backend", "ddpm", "--data", str(data), "--shots", "2",
                           "--preset", "smoke", "--set", "steps=100000", "-d", "test_fraction=0.25", "--out", str(out),
                           stderr=errors)
        try:
            wait_for(lambda: "training ddpm" in log.read_text(), "training to start")
            time.sleep(1)
        finally:
            kill(process)
    assert digest(out) == before
    assert not [p.name for p in root.iterdir() if p.name.startswith(f".{out.name}")]


def test_two_process_generation_fills_one_bank_like_one_process_and_resumes(setup):
    root, _ = setup
    normals = root / "normals"
    for i in range(4):
        write_png(gradient_image(3, 64, 64).roll(5 * i, -1), normals / f"n{i}.png")
    args = ["generate", "-a", "memseg", "-i", str(normals), "-n", "120", "--seed", "3", "-o"]
    one, two, killed = root / "bank-1", root / "bank-2", root / "bank-killed"
    run(*args, str(one))
    finished(torchrun("-m", "inout_aug_cli", *args, str(two)))
    shard = killed / "manifest.shard-1-of-2.jsonl"
    process = torchrun("-m", "inout_aug_cli", *args, str(killed))
    try:
        wait_for(lambda: shard.exists() and len(shard.read_text().splitlines()) >= 2, "rank 1's first outputs")
    finally:
        kill(process, rank=1)
    assert len(read_manifest(killed)) < 120, "the run finished before it could be killed"
    finished(torchrun("-m", "inout_aug_cli", *args, str(killed)))

    expected = read_manifest(one)
    assert sorted(expected) == list(range(120))
    for bank in (two, killed):
        assert read_manifest(bank) == expected
        for k in range(2):
            assert sorted(read_manifest(bank, (k, 2))) == list(range(k, 120, 2))
        assert not (bank / "manifest.jsonl").exists()
        for part in ("images", "masks"):
            names = sorted(p.name for p in (one / part).iterdir())
            assert sorted(p.name for p in (bank / part).iterdir()) == names
            assert all((bank / part / name).read_bytes() == (one / part / name).read_bytes() for name in names)
