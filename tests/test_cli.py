"""The ``inout-aug`` command line: list, info, generate (resume, atomic outputs, errors), preview, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import inout_aug
from helpers import FAULTY_ENTRIES, FAULTY_MODULE, TOY_MODULE, gradient_image, kill_after, make_distribution
from inout_aug.core import registry
from inout_aug.core.io import lock, read_image, write_png
from inout_aug.tools.generate import GenerationJob
from inout_aug.tools.surfaces import make_surfaces
from inout_aug_cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def normals(tmp_path) -> Path:
    folder = tmp_path / "normal"
    for i in range(5):
        write_png(gradient_image(h=48 + 8 * i, w=64).roll(i * 7, -1), folder / f"n{i}.png")
    write_png(gradient_image(c=1, h=40, w=40), folder / "sub" / "grey.png")
    return folder


@pytest.fixture
def toy_site(tmp_path, monkeypatch):
    """A fake installed plugin with a slow toy augmenter, importable here and in subprocesses."""
    site = tmp_path / "site"
    make_distribution(site, "fake-toy", "fake_toy", TOY_MODULE, {"toy": "fake_toy:Toy"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    registry.refresh()
    yield site
    sys.modules.pop("fake_toy", None)
    registry.refresh()


@pytest.fixture
def faulty_site(tmp_path, monkeypatch):
    """A fake installed plugin with mistakes (tests/helpers.py FAULTY_MODULE)."""
    site = tmp_path / "site"
    make_distribution(site, "fake-faulty", "fake_faulty", FAULTY_MODULE, FAULTY_ENTRIES)
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    yield site
    sys.modules.pop("fake_faulty", None)
    registry.refresh()


def test_a_plugins_mistakes_are_blamed_on_the_plugin(faulty_site, normals, tmp_path):
    result = run("generate", "-a", "ring", "-i", str(normals), "-o", str(tmp_path / "a"), "-p", "radius=-1")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "Error: augmenter 'ring' (from 'fake-faulty'): radius must be positive"
    result = run("generate", "-a", "broken_init", "-i", str(normals), "-o", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "Error: augmenter 'broken_init' from 'fake-faulty' failed to build" in result.output
    result = run("generate", "-a", "ring", "-i", str(normals), "-o", str(tmp_path / "c"))
    assert result.exit_code == 1 and "KeyError: 'no such key'" in result.output
    assert "raised in the code of the plugin 'fake-faulty': please report it to that plugin's authors" in result.output
    assert "bug in inout-aug" not in result.output
    narrow = tmp_path / "narrow"
    write_png(gradient_image(h=8, w=4), narrow / "n.png")
    result = run("generate", "-a", "ring", "-i", str(narrow), "-o", str(tmp_path / "d"))
    assert result.exit_code == 1 and result.output.splitlines()[-1] == \
        "Error: ring needs images 8 pixels wide or more, got 4 (from the plugin 'fake-faulty')"


def test_list_names_a_plugins_own_class_even_when_it_shares_a_builtin_name(faulty_site):
    result = run("list", "ring_*")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:3] == ["ring_transplant", "fake_faulty.Transplant", "fake-faulty"]


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and inout_aug.__version__ in result.output


def test_list_shows_name_class_source_and_description():
    result = run("list")
    assert result.exit_code == 0
    header, *rows = result.output.splitlines()
    assert header.split() == ["NAME", "CLASS", "SOURCE", "DESCRIPTION"]
    memseg = next(r for r in rows if r.startswith("memseg "))
    assert memseg.split()[1:3] == ["inout_aug.MemSegRegion", "inout-aug"] and len(memseg.split()) > 4
    assert next(r for r in rows if r.startswith("inout ")).split()[1] == "inout_aug.InOutMix"
    assert run("list", "mem*").output.count("\n") == 2
    assert run("list", "zzz*").exit_code != 0


def test_errors_raised_on_purpose_are_one_line_and_bugs_show_a_traceback(monkeypatch):
    on_purpose = run("generate", "-a", "memseg", "-i", "/no/such/folder", "-o", "/tmp/never", "-n", "1")
    assert on_purpose.exit_code == 1 and on_purpose.output.strip() == "Error: dataset folder not found: /no/such/folder"

    def unpack_bug(pattern):
        name, source = ["only one"]  # a ValueError that no raise statement meant for the user
        return [name, source]

    monkeypatch.setattr(registry, "entries", unpack_bug)
    bug = CliRunner().invoke(cli, ["list"])
    assert bug.exit_code == 1
    assert "Traceback" in bug.output and "not enough values to unpack" in bug.output
    assert bug.output.rstrip().splitlines()[-1].startswith("inout-aug: the error above is a bug in inout-aug")

    monkeypatch.setattr(registry, "entries", lambda pattern: 1 / 0)
    assert "ZeroDivisionError" in run("list").output and "is a bug" in run("list").output


def test_info_shows_parameters_defaults_and_types():
    result = run("info", "memseg")
    assert result.exit_code == 0, result.output
    assert "inout_aug.augmenters.memseg:MemSegRegion" in result.output
    assert "Parameters:" in result.output
    line = next(r for r in result.output.splitlines() if r.strip().startswith("p "))
    assert "float" in line and "default 1.0" in line


def test_generate_writes_images_masks_and_manifest(normals, tmp_path):
    out = tmp_path / "out"
    result = run("generate", "--augmenter", "memseg", "--input", str(normals), "--out", str(out), "-n", "8",
                 "--seed", "3", "--param", "delta_range=(0.5, 1.0)")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(8))
    assert len(list((out / "images").iterdir())) == 8 and len(list((out / "masks").iterdir())) == 8
    for record in records:
        assert record["augmenter"] == "memseg" and record["params"]["delta_range"] == [0.5, 1.0]
        assert isinstance(record["seed"], int) and Path(record["source"]).is_file()
        image, mask, source = (read_image(out / record["image"]), read_image(out / record["mask"])[0],
                               read_image(record["source"]))
        assert image.shape == source.shape and mask.shape == image.shape[1:]
        assert set(mask.unique().tolist()) <= {0, 255} and (mask == 255).any()
        outside = mask == 0
        assert torch.equal(image[:, outside], source[:, outside])
    assert len({r["seed"] for r in records}) == 8


def test_generate_is_reproducible_and_resumes_byte_identical(normals, tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(full), "-n", "6").exit_code == 0
    part = tmp_path / "part"
    import inout_aug.tools.generate as generation

    calls = {"n": 0}
    real_write = generation.write_png

    def crash_on_seventh(*args):
        calls["n"] += 1
        if calls["n"] == 7:  # after three complete outputs, between an image and its mask
            raise KeyboardInterrupt
        real_write(*args)

    monkeypatch.setattr(generation, "write_png", crash_on_seventh)
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(part), "-n", "6").exit_code != 0
    assert len((part / "manifest.jsonl").read_text().splitlines()) == 3
    monkeypatch.setattr(generation, "write_png", real_write)
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(part), "-n", "6")
    assert result.exit_code == 0 and "3 made now" in result.output
    for folder in ("images", "masks"):
        names = sorted(p.name for p in (part / folder).iterdir())
        assert names == sorted(p.name for p in (full / folder).iterdir())
        for name in names:
            assert (part / folder / name).read_bytes() == (full / folder / name).read_bytes()


@pytest.mark.slow
def test_killed_generation_resumes_to_exactly_n_valid_outputs(normals, tmp_path, toy_site):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "inout_aug_cli", "generate", "-a", "toy", "-i", str(normals), "-o", str(out),
               "-n", "30", "--param", "delay=0.05"]
    manifest = out / "manifest.jsonl"
    kill_after(command, manifest, 5)
    assert len(manifest.read_text().splitlines()) < 30, "the run finished before it could be killed"
    subprocess.run(command, check=True, capture_output=True)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(30))
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(30)]
    for record in records:
        assert read_image(out / record["image"]).shape[0] in (1, 3)
        assert (read_image(out / record["mask"]) == 255).all()


def test_generate_with_a_texture_folder(normals, tmp_path, textures):
    out = tmp_path / "out"
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "6", "--textures",
                 str(textures), "--param", "texture_prob=1.0")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(r["params"]["textures"] == str(textures) and r["drawn"]["source"] == "TextureFolder"
               for r in records)


def test_generate_refuses_a_folder_of_another_run(normals, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "1").exit_code == 0
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "1", "--seed", "9")
    assert result.exit_code != 0 and "holds a run with other settings" in result.output
    seeded = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(tmp_path / "seeded"), "-p", "seed=5")
    assert seeded.exit_code == 1 and "-p seed (or generator) is not an augmenter setting here" in seeded.output


def test_a_run_that_failed_before_its_first_output_may_begin_again_with_other_settings(faulty_site, normals,
                                                                                       tmp_path):
    out = tmp_path / "out"
    failed = run("generate", "-a", "ring", "-i", str(normals), "-o", str(out), "-n", "2")
    assert failed.exit_code == 1 and (out / "run.json").is_file()  # it failed after claiming the folder
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["augmenter"] == "memseg"
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2
    shards = tmp_path / "shards"
    assert run("generate", "-a", "ring", "-i", str(normals), "-o", str(shards), "--shard", "1/2").exit_code == 1
    with closing(lock(shards / ".lock.shard-1-of-2")):  # that shard runs again, and has made nothing yet
        other = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(shards), "--shard", "0/2")
    assert other.exit_code == 1 and "holds a run with other settings" in other.output  # not begun again under it


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["-a", "memseg", "-i", "{tmp}/missing"], "folder not found"),
        (["-a", "memseg", "-i", "{tmp}/empty"], "no images"),
        (["-a", "memseg", "-i", "{tmp}/corrupt"], "cannot read image"),
        (["-a", "nope", "-i", "{normals}"], "unknown augmenter 'nope'"),
        (["-a", "memseg", "-i", "{normals}", "--param", "bogus=1"], "has no parameter 'bogus'"),
        (["-a", "memseg", "-i", "{normals}", "--param", "novalue"], "expected key=value"),
        (["-a", "memseg", "-i", "{normals}", "--param", "p=2"], "p must be a probability"),
        (["-a", "memseg", "-i", "{normals}", "--param", "threshold=abc"],
         "augmenter 'memseg' failed to build from seed=0, threshold='abc', p=1.0: could not convert string to float"),
        (["-a", "transplant", "-i", "{normals}"], "augmenter 'transplant' needs defects=..."),
        (["-a", "memseg", "-i", "{normals}/n0.png"], "n0.png is a file, not a dataset folder: give the folder"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, text, normals, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    args = [a.format(tmp=tmp_path, normals=normals) for a in args]
    process = subprocess.run([sys.executable, "-m", "inout_aug_cli", "generate", *args, "-o", str(tmp_path / "o")],
                             capture_output=True, text=True)
    assert process.returncode != 0
    assert "Traceback" not in process.stderr
    error_lines = [line for line in process.stderr.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and text in error_lines[0], process.stderr
    if "corrupt" in args[-1]:
        assert "bad.png" in error_lines[0]


def test_preview_writes_a_contact_sheet(normals, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "5").exit_code == 0
    result = run("preview", str(out), "--columns", "2")
    assert result.exit_code == 0, result.output
    sheet = read_image(out / "preview.png")
    # 5 images + 5 overlays, 4 tiles of 160 px per row: 3 rows, 4 columns (4 px padding).
    assert sheet.shape == (3, 3 * 164 + 4, 4 * 164 + 4)
    assert (sheet[0] > sheet[1] + 60).any(), "the masks are overlaid in red"


def test_demo_runs_on_the_embedded_default(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", str(out), "-n", "4")
    assert result.exit_code == 0, result.output
    assert len(list((out / "normal").glob("*.png"))) == 4
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4
    assert (out / "preview.png").is_file() and "preview:" in result.output


def test_demo_passes_augmenter_parameters(tmp_path):
    result = run("demo", "--out", str(tmp_path / "mix"), "-n", "2", "-a", "inout", "-p", "in_augmenter=memseg")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "mix" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["params"]["in_augmenter"] == "memseg" and r["drawn"]["side"] in ("in", "out") for r in records)


def test_demo_refuses_another_run_before_writing_anything(tmp_path):
    out = tmp_path / "demo"
    assert run("demo", "--out", str(out), "-n", "2").exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for args in (["-n", "3"], ["-n", "2", "--seed", "1"]):
        result = run("demo", "--out", str(out), *args)
        assert result.exit_code == 1
        assert f"Error: {out} holds a demo run of -a memseg -n 2 --seed 0: run the demo with those" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing added or overwritten
    assert run("demo", "--out", str(out), "-n", "2").exit_code == 0  # the same settings resume it
    used = tmp_path / "used"
    (used / "notes.txt").parent.mkdir()
    (used / "notes.txt").write_text("mine")
    result = run("demo", "--out", str(used), "-n", "2")
    assert "already holds files but no demo run" in result.output and sorted(used.iterdir()) == [used / "notes.txt"]
    mine = tmp_path / "mine"  # a user's generate run that happens to match the demo's settings
    assert run("generate", "-a", "memseg", "-i", str(out / "normal"), "-o", str(mine), "-n", "2").exit_code == 0
    result = run("demo", "--out", str(mine), "-n", "2")
    assert result.exit_code == 1 and "holds a generate run that is not a demo's" in result.output
    (out / "manifest.jsonl").unlink()  # as if the demo run had failed before its first output
    assert run("demo", "--out", str(out), "-n", "3", "--seed", "1").exit_code == 0  # it begins again


def test_generate_on_real_magnetic_tiles(magnetic_tile, tmp_path):
    normal = tmp_path / "normal"
    normal.mkdir()
    for path in sorted((magnetic_tile / "MT_Free" / "Imgs").glob("*.jpg"))[:4]:
        (normal / path.name).symlink_to(path)
    out = tmp_path / "out"
    assert run("generate", "-a", "memseg", "-i", str(normal), "-o", str(out), "-n", "4").exit_code == 0
    for record in map(json.loads, (out / "manifest.jsonl").read_text().splitlines()):
        image, source = read_image(out / record["image"]), read_image(record["source"])
        assert image.shape == source.shape and image.shape[0] == 1


def test_outputs_get_the_usual_file_permissions(normals, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "1").exit_code == 0
    finally:
        os.umask(old)
    for path in (out / "images" / "000000.png", out / "masks" / "000000.png", out / "manifest.jsonl"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_a_folder_in_use_is_refused(normals, tmp_path):
    out = tmp_path / "out"
    with GenerationJob("memseg", normals, out, n=2):
        result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2")
    assert result.exit_code != 0 and "another run is writing to" in result.output
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2").exit_code == 0


def test_fewer_outputs_than_the_folder_holds_is_refused(normals, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "4").exit_code == 0
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2")
    assert result.exit_code != 0 and "already holds 4 outputs" in result.output and "use -n 4" in result.output
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "7").exit_code == 0
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 7


def test_a_folder_holding_other_files_is_refused_and_left_as_it_was(normals, tmp_path):
    out = tmp_path / "mine"
    write_png(gradient_image(), out / "images" / "000000.png")
    (out / ".draft.tmp").write_text("keep me")
    (out / "manifest.jsonl").write_text('{"my": "own log"}\n')
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2")
    assert result.exit_code == 1
    assert f"Error: {out} already holds files (.draft.tmp, images, manifest.jsonl) but no generate run" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".lock")} == before


def test_an_out_path_that_is_a_file_is_refused(normals, tmp_path):
    (tmp_path / "out.png").write_bytes(b"mine")
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(tmp_path / "out.png"))
    assert result.exit_code == 1 and f"Error: --out {tmp_path / 'out.png'} is a file: give a folder" in result.output
    assert (tmp_path / "out.png").read_bytes() == b"mine"


def test_other_generate_folders_inside_the_input_folder_are_not_inputs(normals, tmp_path):
    first, second = normals / "run1", normals / "run2"
    for out in (first, second):
        assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "4").exit_code == 0
    sources = {json.loads(line)["source"] for line in (second / "manifest.jsonl").read_text().splitlines()}
    assert not any("/run1/" in s for s in sources)
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(first), "-n", "6").exit_code == 0  # resumes


def test_a_folder_where_another_shard_is_writing_its_run_file_is_not_refused(normals, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock.shard-1-of-2").touch()
    (out / ".run.json.x1y2z3.tmp").write_text("{")  # another shard, between its lock and its run.json
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2").exit_code == 0


def test_only_generate_runs_below_the_input_are_left_out_and_older_runs_keep_their_inputs(normals, tmp_path):
    (normals / "labels").mkdir()
    (normals / "labels" / "run.json").write_text('{"tool": "a labelling session"}')
    write_png(gradient_image(), normals / "labels" / "shot.png")
    with GenerationJob("memseg", normals, tmp_path / "elsewhere", n=1) as job:
        assert normals / "labels" / "shot.png" in job.sources  # another tool's run.json is no generate run
    first = normals / "first"  # made before its run.json, as if the older run below had been read as inputs
    write_png(gradient_image(), first / "images" / "000000.png")
    with GenerationJob("memseg", normals, tmp_path / "second", n=2) as job:
        before = list(job.sources)
        assert first / "images" / "000000.png" in before
        job.run()
    (first / "run.json").write_text(json.dumps({"augmenter": "memseg", "sources": {}}))
    with GenerationJob("memseg", normals, tmp_path / "second", n=4) as job:  # extends with the same inputs
        assert job.sources == before
        job.run()
    with GenerationJob("memseg", normals, tmp_path / "third", n=1) as job:  # a new run leaves it out
        assert not any(first in p.parents for p in job.sources)


def test_outputs_inside_the_input_folder_are_not_inputs(normals, tmp_path):
    out = normals / "out"
    for n in ("3", "9"):
        assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", n).exit_code == 0
    sources = {json.loads(line)["source"] for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert len(sources) == 6 and not any("/out/" in s for s in sources)
    assert all(Path(s).is_absolute() for s in sources)


def test_a_job_on_chosen_sources_uses_only_them_and_reports_progress(normals, tmp_path):
    chosen = [normals / "n1.png", normals / "n3.png"]
    ticks = []
    with GenerationJob("memseg", normals, tmp_path / "out", n=5, seed=2, sources=chosen) as job:
        job.run(batch_size=2, progress=ticks.append)
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert ticks == [2, 2, 1] and len(records) == 5
    assert {r["source"] for r in records} == {str(p) for p in chosen}
    assert json.loads((tmp_path / "out" / "run.json").read_text())["data"] == {"layout": "list"}


def test_a_changed_input_folder_is_refused(normals, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2").exit_code == 0
    (normals / "n0.png").unlink()
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "4")
    assert result.exit_code != 0 and "changed since the run" in result.output


def test_stale_temporary_files_and_malformed_records_are_cleaned(normals, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "2").exit_code == 0
    (out / "images" / ".000002.png.abc.tmp").write_bytes(b"half")
    with open(out / "manifest.jsonl", "a") as manifest:
        manifest.write('7\n{"index": 5}\n{"index": 3, "image": "images/0000')
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "3").exit_code == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert [json.loads(line)["index"] for line in (out / "manifest.jsonl").read_text().splitlines()] == [0, 1, 2]


@pytest.mark.parametrize("content", ["", "7", "{not json"])
def test_corrupt_run_file_is_named(normals, tmp_path, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(content)
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(out), "-n", "1")
    assert result.exit_code != 0 and "run.json is corrupt" in result.output


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    PIL.Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (1, 32, 48) and image.dtype == torch.uint8
    assert torch.equal(image[0], torch.from_numpy(np.round(ramp / 65535 * 255).astype(np.uint8)))


def test_preview_of_a_plain_folder_skips_its_own_sheet(normals):
    for _ in range(2):
        assert run("preview", str(normals), "--columns", "10").exit_code == 0
    assert read_image(normals / "preview.png").shape[-1] == 6 * 164 + 4


def test_preview_frames_a_weak_label_in_red(tmp_path):
    write_png(torch.full((3, 40, 40), 128, dtype=torch.uint8), tmp_path / "bank" / "images" / "000000.png")
    record = {"index": 0, "image": "images/000000.png", "mask": None, "source": "txt2img", "augmenter": "diffusion",
              "params": {}, "seed": 0, "drawn": {}}
    (tmp_path / "bank" / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    assert run("preview", str(tmp_path / "bank")).exit_code == 0
    sheet = read_image(tmp_path / "bank" / "preview.png").int()
    image, overlay = sheet[:, 4:164, 4:164], sheet[:, 4:164, 168:328]  # the image, then its overlay tile
    assert (overlay[0, :2] > overlay[1, :2] + 40).all() and torch.equal(overlay[:, 80, 80], image[:, 80, 80])
    assert (image[0] - image[1]).abs().max() <= 1  # the image itself is grey


def test_preview_of_a_file_a_missing_or_an_empty_folder_says_what_it_takes(normals, tmp_path):
    (tmp_path / "empty").mkdir()
    for path, text in [(normals / "n0.png", "is a file"), (tmp_path / "nope", "does not exist"),
                       (tmp_path / "empty", "holds no images to preview")]:
        result = run("preview", str(path))
        assert result.exit_code == 1 and result.output.startswith(f"Error: {path} {text}")


def test_demo_surfaces_depend_only_on_seed_and_index():
    assert torch.equal(make_surfaces(4, size=(32, 32))[:2], make_surfaces(2, size=(32, 32)))


@pytest.mark.parametrize("args", [["preview", ".", "--limit", "0"], ["preview", ".", "--columns", "0"],
                                  ["demo", "-n", "0"], ["generate", "-a", "memseg", "-i", ".", "-o", "o",
                                                        "--seed", str(2**64)]])
def test_out_of_range_options_are_usage_errors(args):
    result = run(*args)
    assert result.exit_code == 2 and "Invalid value" in result.output


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A folder layout: 10 normal images and 4 defective ones with masks."""
    root = tmp_path / "data"
    for i in range(10):
        write_png(gradient_image(h=40, w=48).roll(i * 5, -1), root / "normal" / f"n{i}.png")
    for i in range(4):
        write_png(gradient_image(h=40, w=48).roll(i, -2), root / "defect" / f"d{i}.png")
        write_png(torch.ones(1, 40, 48, dtype=torch.uint8) * 255, root / "masks" / f"d{i}.png")
    return root


def test_info_data_prints_the_detected_layout_and_counts(dataset):
    result = run("info-data", str(dataset), "--split", "train", "-d", "test_fraction=0.5")
    assert result.exit_code == 0, result.output
    assert "layout  folder" in result.output and "split   train (test_fraction=0.5, seed=0)" in result.output
    assert "images  7: 5 normal (label 0), 2 defective (label 1)" in result.output
    assert "H 40-40, W 48-48" in result.output
    empty = dataset / "empty"
    empty.mkdir()
    result = run("info-data", str(empty))
    assert result.exit_code == 1 and "no known layout" in result.output and "found: an empty folder" in result.output


def test_generate_from_a_dataset_augments_the_normals_of_the_split(dataset, tmp_path):
    out = tmp_path / "out"
    result = run("generate", "-a", "memseg", "-i", str(dataset), "-o", str(out), "-n", "6", "-d", "test_fraction=0.5")
    assert result.exit_code == 0, result.output
    assert "folder dataset, split train: 5 normal images" in result.output
    sources = {json.loads(line)["source"] for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert len(sources) == 5 and all("/normal/" in s for s in sources)
    settings = json.loads((out / "run.json").read_text())
    assert settings["data"] == {"layout": "folder", "split": "train", "options": {"test_fraction": 0.5, "seed": 0}}
    plain = run("generate", "-a", "memseg", "-i", str(dataset), "-o", str(tmp_path / "all"), "-n", "1",
                "--layout", "images")
    assert plain.exit_code == 0 and "split train" not in plain.output


def test_generate_with_in_out_mix(normals, tmp_path):
    out = tmp_path / "out"
    result = run("generate", "-a", "inout", "-i", str(normals), "-o", str(out), "-n", "6",
                 "-p", "in_augmenter=memseg", "-p", "in_params={'texture_prob': 1.0}",
                 "-p", "out_params={'texture_prob': 0.0}")
    assert result.exit_code == 0, result.output
    drawn = [json.loads(line)["drawn"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(d["side"] for d in drawn) == ["in"] * 3 + ["out"] * 3
    assert {d["source"] for d in drawn if d["side"] == "in"} == {"ProceduralTexture"}
    assert {d["source"] for d in drawn if d["side"] == "out"} == {"StructuralSource"}


def test_shards_fill_one_folder_without_overlap_and_match_an_unsharded_run(normals, tmp_path):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert run("generate", "-a", "memseg", "-i", str(normals), "-o", str(whole), "-n", "7").exit_code == 0
    processes = [subprocess.Popen([sys.executable, "-m", "inout_aug_cli", "generate", "-a", "memseg", "-i",
                                   str(normals), "-o", str(sharded), "-n", "7", "--shard", f"{k}/3"])
                 for k in range(3)]  # at the same time, as under `accelerate launch`
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    for k in range(3):
        own = (sharded / f"manifest.shard-{k}-of-3.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["index"] for line in own) == list(range(k, 7, 3))
    for name in (f"{i:06d}.png" for i in range(7)):
        for part in ("images", "masks"):
            assert (sharded / part / name).read_bytes() == (whole / part / name).read_bytes()
    assert run("preview", str(sharded)).exit_code == 0  # the shards read as one bank
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(sharded), "-n", "7", "--shard", "3/3")
    assert result.exit_code == 2 and "expected K/N" in result.output
    again = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(sharded), "-n", "7", "--shard", "1/3")
    assert again.output.splitlines()[-1] == f"shard 1/3: 2 of its 2 outputs in {sharded} (0 made now)"



@pytest.fixture
def mixed(normals) -> Path:
    """The normals plus a corrupt PNG (garbage bytes) and a one-pixel image, too small for a defect."""
    (normals / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage bytes")
    write_png(gradient_image(h=1, w=1), normals / "tiny.png")
    return normals


def test_generate_stops_at_a_corrupt_input_by_default(normals, tmp_path):
    (normals / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage bytes")
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    error = result.output.splitlines()[-1]
    assert error.startswith("Error: cannot read image") and str(normals / "bad.png") in error
    assert "replace it with a readable image of the same name and run again to resume" in error
    assert "or skip unusable inputs with --on-error skip" in error


def test_generate_on_error_skip_fails_when_every_input_is_skipped(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage bytes")
    result = run("generate", "-a", "memseg", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--on-error", "skip")
    assert result.exit_code == 1
    error = result.output.splitlines()[-1]
    assert error.startswith("Error: every input was skipped as unusable (1; the first, ") and "bad.png" in error


def test_generate_on_error_skip_skips_unusable_inputs_and_resumes(mixed, tmp_path):
    out = tmp_path / "out"
    result = run("generate", "-a", "memseg", "-i", str(mixed), "-o", str(out), "--on-error", "skip")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("warning: skipped")]
    assert len(skipped) == 2
    assert any(f"{mixed / 'bad.png'}: cannot read image" in line for line in skipped)
    assert any(f"{mixed / 'tiny.png'}: memseg made no defect in" in line for line in skipped)
    assert "6 outputs in" in result.output and "(6 made now)" in result.output
    assert result.output.splitlines()[-1] == "skipped 2 unusable input(s): 2 output(s) not made"
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6 and not {Path(r["source"]).name for r in records} & {"bad.png", "tiny.png"}
    made = sorted(p.name for p in (out / "images").iterdir())  # nothing (half-)written for the skipped ones
    assert made == sorted(Path(r["image"]).name for r in records) == sorted(p.name for p in (out / "masks").iterdir())

    again = run("generate", "-a", "memseg", "-i", str(mixed), "-o", str(out), "--on-error", "skip")
    assert again.exit_code == 0 and "(0 made now)" in again.output
    assert sum(line.startswith("warning: skipped") for line in again.output.splitlines()) == 2
    stop = run("generate", "-a", "memseg", "-i", str(mixed), "-o", str(out))
    assert stop.exit_code == 1 and stop.output.splitlines()[-1].startswith("Error: ")
    assert "bad.png" in stop.output or "tiny.png" in stop.output
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 6


def test_skip_in_batches_skips_only_the_unusable_inputs(mixed, tmp_path):
    whole, batched = tmp_path / "whole", tmp_path / "batched"
    for out, size in ((whole, "1"), (batched, "4")):
        result = run("generate", "-a", "memseg", "-i", str(mixed), "-o", str(out), "-n", "16", "--on-error", "skip",
                     "--batch-size", size)
        assert result.exit_code == 0, result.output
        assert "2 unusable input(s): 4 output(s) not made" in result.output
    assert (whole / "manifest.jsonl").read_text() == (batched / "manifest.jsonl").read_text()
