"""The ``inout-aug`` command line: list, info, info-data, finetune, generate, export, bench, preview, demo."""

from __future__ import annotations

import functools
import inspect
import json
import os
import shlex
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import inout_aug
from inout_aug.core import registry
from inout_aug.core.errors import PluginError, raised_on_purpose
from inout_aug.core.io import write_png
from inout_aug.core.settings import SettingsError, parse_pairs
from inout_aug.data.bank import Bank
from inout_aug.data.layouts import LAYOUTS, format_summary, open_dataset
from inout_aug.data.manifest import read_manifest
from inout_aug.tools.export import FORMATS, export
from inout_aug.tools.generate import (
    ON_ERROR,
    RUN_FILE,
    GenerationError,
    GenerationJob,
    normal_images,
    outside_runs,
    written_by_generate,
)
from inout_aug.tools.preview import preview_folder
from inout_aug.tools.surfaces import make_surfaces

# Errors that the toolkit raises on purpose about the user's input: shown as one line, without a traceback.
USER_ERRORS = (OSError, ValueError, TypeError, LookupError, ImportError, GenerationError)
#: Where the toolkit's own code lives: a ``raise`` statement there is a message for the user.
OWN_CODE = (str(Path(inout_aug.__file__).parent), str(Path(__file__).parent))
BUG_NOTE = ("inout-aug: the error above is a bug in inout-aug, not a problem with your input; please report it to the "
            "inout-aug developers with the command you ran and this traceback")
PLUGIN_BUG_NOTE = ("inout-aug: the error above was raised in the code of the plugin {plugin!r}: please report it to "
                   "that plugin's authors with the command you ran and this traceback")
SEED = click.IntRange(0, 2**63 - 1)
LAYOUT_CHOICE = click.Choice(["auto", "images", *LAYOUTS])


def _one_line_errors(command: Callable) -> Callable:
    """Show errors raised on purpose as one line (INOUT_AUG_DEBUG=1 shows the traceback), anything else with its
    traceback and a line saying it is a bug to report; warnings as one line each."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return command(*args, **kwargs)
            except click.ClickException:
                raise
            except Exception as exc:
                frames = _plugin_frames(exc)
                plugin = next((source for source in reversed(frames) if source is not None), None)
                plugins_message = bool(frames) and frames[-1] is not None and isinstance(exc, USER_ERRORS) and \
                    raised_on_purpose(exc)
                if os.environ.get("INOUT_AUG_DEBUG") or not (_on_purpose(exc) or plugins_message):
                    if not os.environ.get("INOUT_AUG_DEBUG"):
                        traceback.print_exc()
                        click.echo(BUG_NOTE if plugin is None else PLUGIN_BUG_NOTE.format(plugin=plugin), err=True)
                        sys.exit(1)
                    raise
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                if plugins_message:  # raised on purpose in the plugin's own code: its message, and whose it is
                    message = f"{message} (from the plugin {plugin!r})"
                raise click.ClickException(" ".join(str(message).split())) from None

    return run


def _on_purpose(exc: BaseException) -> bool:
    """Whether ``exc`` is a message for the user: a file error naming its file, or an error of ``USER_ERRORS``
    raised by a ``raise`` statement of the toolkit's own code (not, say, a ValueError from a failed unpacking)."""
    if isinstance(exc, (GenerationError, PluginError)) or (isinstance(exc, OSError) and exc.filename is not None):
        return True
    return isinstance(exc, USER_ERRORS) and raised_on_purpose(exc, OWN_CODE)


def _plugin_frames(exc: BaseException) -> list[str | None]:
    """For each frame of ``exc``'s traceback, outermost first, the distribution of the plugin whose code it runs, or
    None (inout-aug's, a library's, or no plugin to name when the registry itself failed)."""
    code = {}  # a plugin package's folder (ending in a separator) or a single-module plugin's file -> distribution
    try:
        loaded = registry.entries()
    except Exception:  # the registry itself failed: no plugin to name
        loaded = []
    for found in loaded:
        module = sys.modules.get(found.cls.__module__.split(".")[0]) if found.cls is not None else None
        if found.source != registry.OWN_DISTRIBUTION and getattr(module, "__file__", None):
            package = hasattr(module, "__path__")
            code[str(Path(module.__file__).parent) + os.sep if package else module.__file__] = found.source

    def owner(filename: str) -> str | None:
        return next((source for where, source in code.items()
                     if filename == where or (where.endswith(os.sep) and filename.startswith(where))), None)

    return [owner(frame.f_code.co_filename) for frame, _ in traceback.walk_tb(exc.__traceback__)]


def _show_warning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    click.echo(f"warning: {message}", err=True)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``K/N`` as (K, N); by default the process's place under ``accelerate launch`` or torchrun, else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise click.BadParameter(f"expected K/N with 0 <= K < N, e.g. 0/4, got {text!r}", param_hint="--shard")
    return int(k), int(n)


def parse_params(pairs: tuple[str, ...], option: str) -> dict[str, Any]:
    """``key=value`` pairs as a dict (:func:`inout_aug.core.settings.parse_pairs`); a malformed pair is a usage
    error naming ``option``."""
    try:
        return parse_pairs(pairs)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _echo_table(rows: list[tuple[str, ...]], indent: str = "") -> None:
    """Print rows of text in aligned columns (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [f"{cell:<{width}}" for cell, width in zip(row, widths)]
        click.echo(indent + "  ".join([*cells, row[-1]]))


def _run(job: GenerationJob, batch_size: int = 1) -> None:
    """Make the job's outstanding outputs, ``batch_size`` at a time, with a progress bar on stderr."""
    label = f"{job.augmenter_name} -> {job.out}"
    with click.progressbar(length=len(job.todo), label=label, file=sys.stderr) as bar:
        job.run(batch_size, bar.update)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(inout_aug.__version__, prog_name="inout-aug")
def cli() -> None:
    """Make defective training images for industrial surface inspection (In&Out augmentation)."""


@cli.command("list")
@click.argument("pattern", default="*")
@_one_line_errors
def list_command(pattern: str) -> None:
    """List registered augmenters (PATTERN is a wildcard such as 'mem*'): the name that inout_aug.create, --augmenter
    and InOutMix take, the class to import, its distribution and description."""
    rows = []
    for entry in registry.entries(pattern):
        try:
            summary = entry.summary
        except LookupError:
            summary = f"(broken: {entry.error})"
        attr = entry.target.rpartition(":")[2]
        exported = attr in inout_aug.__all__ and entry.cls is not None and getattr(inout_aug, attr) is entry.cls
        public = f"inout_aug.{attr}" if exported else entry.target.replace(":", ".")
        rows.append((entry.name, public, entry.source, summary))
    if not rows:
        raise LookupError(f"no augmenter matches {pattern!r}")
    _echo_table([("NAME", "CLASS", "SOURCE", "DESCRIPTION"), *rows])


@cli.command()
@click.argument("name")
@_one_line_errors
def info(name: str) -> None:
    """Show an augmenter's description and parameters (name, type, default)."""
    cls = registry.get(name)
    entry = registry.entry(name)
    click.echo(f"{name}  ({entry.source}, {entry.target})\n")
    click.echo((inspect.getdoc(cls) or "").strip() + "\n")
    rows = [
        (key, str(param.annotation) if param.annotation is not inspect.Parameter.empty else "any",
         "(required)" if param.default is inspect.Parameter.empty else f"default {param.default!r}")
        for key, param in registry.parameters(name).items()
    ]
    click.echo("Parameters:")
    _echo_table(rows, indent="  ")


@cli.command()
@click.option("--augmenter", "-a", required=True, help="Registered augmenter name (see `inout-aug list`).")
@click.option("--input", "-i", "input_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of normal (defect-free) images, searched recursively.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Output folder: images/, masks/, manifest.jsonl, run.json.")
@click.option("-n", "--num", "n", type=int, default=None, help="Number of outputs [default: one per input image].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the whole run.")
@click.option("--param", "-p", "param_pairs", multiple=True, metavar="KEY=VALUE",
              help="Augmenter parameter, repeatable (see `inout-aug info NAME`).")
@click.option("--textures", type=click.Path(path_type=Path), default=None,
              help="Folder of texture images (e.g. DTD) for augmenters with a `textures` parameter.")
@click.option("--layout", type=LAYOUT_CHOICE, default="auto", show_default=True,
              help="How to read --input: a dataset layout (detected by 'auto'), or 'images' for a plain folder.")
@click.option("--split", default="train", show_default=True,
              help="Dataset split whose normal images are augmented (dataset layouts only).")
@click.option("--data-option", "-d", "data_pairs", multiple=True, metavar="KEY=VALUE",
              help="Dataset layout option, repeatable (e.g. category=bottle, fold=1, seed=0).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Outputs made together where the augmenter can batch them (diffusion models); same bytes.")
@click.option("--shard", default=None, metavar="K/N",
              help="Make only the outputs whose index is K modulo N [default: RANK/WORLD_SIZE under accelerate "
                   "launch or torchrun, else 0/1].")
@click.option("--on-error", type=click.Choice(ON_ERROR), default="error", show_default=True,
              help="An unreadable input, or one the augmenter cannot use (e.g. too small): stop with the error, or "
                   "skip its outputs with one warning line per input (a rerun tries them again).")
@_one_line_errors
def generate(augmenter: str, input_dir: Path, out: Path, n: int | None, seed: int,
             param_pairs: tuple[str, ...], textures: Path | None, layout: str, split: str,
             data_pairs: tuple[str, ...], batch_size: int, shard: str | None, on_error: str) -> None:
    """Write defective images, masks and a manifest made from normal images.

    --input is a plain folder of normal images, or a dataset (KolektorSDD2, KolektorSDD, MVTec AD, magnetic
    tile, folder layout) whose normal images of --split are used. An interrupted run resumes where it
    stopped when run again with the same options.
    """
    params = parse_params(param_pairs, "--param")
    if textures is not None:
        params["textures"] = str(textures.resolve())
    with GenerationJob(augmenter, input_dir, out, n=n, seed=seed, params=params, layout=layout, split=split,
                       data_options=parse_params(data_pairs, "--data-option"), shard=parse_shard(shard),
                       on_error=on_error) as job:
        if job.data["layout"] != "images":
            click.echo(f"{job.data['layout']} dataset, split {split}: {len(job.sources)} normal images", err=True)
        _run(job, batch_size)
    made, (k, shards) = len(job.todo) - len(job.not_made), job.shard
    if shards == 1:
        click.echo(f"{len(job.done)} outputs in {out} ({made} made now)")
    else:  # the other shards may still be writing: count this one's outputs only
        own, planned = sum(1 for i in job.done if i % shards == k), len(range(k, job.n, shards))
        click.echo(f"shard {k}/{shards}: {own} of its {planned} outputs in {out} ({made} made now)")
    if job.skipped and not job.done:
        source, why = next(iter(job.skipped.items()))
        raise GenerationError(f"every input was skipped as unusable ({len(job.skipped)}; the first, {source}: {why}): "
                              "check the inputs and the augmenter's parameters")
    if job.skipped:
        click.echo(f"skipped {len(job.skipped)} unusable input(s): {len(job.not_made)} output(s) not made", err=True)


@cli.command("export")
@click.argument("bank", type=click.Path(path_type=Path))
@click.option("--format", "-f", "format_", type=click.Choice(FORMATS), required=True, help="Layout to write.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="New or empty folder to write (mvtec: the data set root; the category folder goes below it).")
@click.option("--normals", type=click.Path(path_type=Path), default=None,
              help="Normal images to add (a folder, or a data set's training normals): mvtec train/good and "
                   "test/good, yolo-seg and coco images without defects.")
@click.option("--test-normals", type=click.FloatRange(0, 1), default=None,
              help="mvtec: share of --normals put in test/good [default: 0.2].")
@click.option("--category", default=None, help="mvtec: category folder below --out [default: the bank folder's name].")
@click.option("--defect-type", default=None,
              help="Defect type of every entry (mvtec test/ and ground_truth/ folder, yolo-seg and coco class) "
                   "[default: each entry's augmenter].")
@_one_line_errors
def export_command(bank: Path, format_: str, out: Path, normals: Path | None, test_normals: float | None,
                   category: str | None, defect_type: str | None) -> None:
    """Write the defect bank BANK (`generate`'s output) for other tools: mvtec (the MVTec AD layout of anomalib's
    MVTecAD and Folder datamodules), yolo-seg (polygon labels) or coco (RLE instance masks).

    Entries with a weak label (no pixel mask) are skipped and counted. The folder is written whole or not at all.
    """
    entries = Bank(bank, cache=False)
    extra = [] if normals is None else outside_runs(normal_images(normals)[0], normals)
    with click.progressbar(length=len(entries) + len(extra), label=f"{format_} -> {out}", file=sys.stderr) as bar:
        done = export(entries, out, format_, normals=extra, defect_type=defect_type, category=category,
                      test_normals=test_normals, progress=bar.update)
    objects = "masks" if format_ == "mvtec" else "objects"
    click.echo(f"{done.defects} defect images ({done.objects} {objects}) and {done.normals} normal images "
               f"in {done.folder}")
    if done.weak:
        click.echo(f"skipped {done.weak} weak-label entries: no pixel mask for {format_}", err=True)


@cli.command()
@click.option("--backend", type=click.Choice(["ddpm", "sd"]), required=True,
              help="ddpm: a small model trained from scratch here; sd: a LoRA on a local Stable Diffusion checkpoint.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Dataset folder (see `info-data`).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Folder for the model.")
@click.option("--setting", type=click.Choice(["zero", "few", "full"]), default="few", show_default=True)
@click.option("--shots", type=click.IntRange(min=1), default=5, show_default=True, help="Real defects (few-shot).")
@click.option("--defect-type", default=None, help="Train on defects of this type only (see `info-data`).")
@click.option("--layout", type=click.Choice(["auto", *LAYOUTS]), default="auto", show_default=True)
@click.option("--split", default="train", show_default=True)
@click.option("--data-option", "-d", "data_pairs", multiple=True, metavar="KEY=VALUE", help="Dataset layout option.")
@click.option("--preset", default=None,
              help="Named settings [ddpm: default, smoke, inpaint (v2), inpaint-smoke; sd: paper, smoke].")
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
              help="Override one setting of the preset, repeatable (e.g. --set steps=2000 --set rank=16).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="sd: local Stable Diffusion checkpoint (diffusers folder or single .safetensors file).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@_one_line_errors
def finetune(backend: str, data: Path, out: Path, setting: str, shots: int, defect_type: str | None, layout: str,
             split: str, data_pairs: tuple[str, ...], preset: str | None, set_pairs: tuple[str, ...],
             checkpoint: Path | None, seed: int) -> None:
    """Adapt a diffusion model to a dataset's defects (zero-, few- or full-shot) for the `diffusion` augmenter."""
    from inout_aug.models.finetune import finetune as run_finetune

    written = run_finetune(backend, data, out, setting=setting, shots=shots, defect_type=defect_type,
                           layout=None if layout == "auto" else layout, split=split,
                           data_options=parse_params(data_pairs, "--data-option"), preset=preset,
                           overrides=parse_params(set_pairs, "--set"), checkpoint=checkpoint, seed=seed)
    use = f"-p model={written}" if backend == "ddpm" else \
        f"-p backend=sd -p mode=txt2img -p model={checkpoint} -p lora={written}"
    tail = "" if backend == "ddpm" else " (or -p mode=inpaint with an inpainting checkpoint as the model)"
    click.echo(f"model in {written}; use it with: inout-aug generate -a diffusion {use} ...{tail}")


def _csv(text: str | None, kind: Callable[[str], Any] = str) -> tuple | None:
    """A comma-separated option value as a tuple (None when not given)."""
    return None if text is None else tuple(kind(part.strip()) for part in text.split(",") if part.strip())


@cli.command()
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Dataset folder (see `info-data`).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Folder for the runs, the report and the diffusion banks; a rerun resumes there.")
@click.option("--preset", type=click.Choice(["paper", "cpu", "smoke"]), default=None,
              help="Named settings when no CONFIG file is given [default: cpu].")
@click.option("--model", default=None, help="Any timm model name instead of the preset's.")
@click.option("--weights", default=None, help="Local weights file of --model (or 'package' for efficientnet_lite0).")
@click.option("--detector", type=click.Choice(["classifier", "segdec"]), default=None,
              help="classifier: image labels only; segdec: the segmentation-decision network on --model, which also "
                   "learns from pixel masks and adds pixel AP and AUPRO (runs named segdec-...) [default: classifier].")
@click.option("--methods", default=None, metavar="A,B", help="Methods: none and registry names (wildcards work).")
@click.option("--settings", default=None, metavar="zero,few,full", help="Training setups.")
@click.option("--shots", type=click.IntRange(min=1), default=None, help="Real defects in few-shot.")
@click.option("--seeds", default=None, metavar="0,1,2", help="Seeds; results are mean ± std over them.")
@click.option("--in-ratio-sweep", is_flag=True, help="Add InOutMix at in_ratio 0, 0.25, 0.5, 0.75 and 1.")
@click.option("--layout", type=click.Choice(["auto", *LAYOUTS]), default=None, help="Dataset layout [default: auto].")
@click.option("--data-option", "-d", "data_pairs", multiple=True, metavar="KEY=VALUE", help="Dataset layout option.")
@click.option("--folds", type=click.Choice(["one", "all"]), default=None,
              help="all: every fold of a layout split by folds (ksdd) as the test fold in turn, results pooled; "
                   "one: the fold of -d fold=K [default: one].")
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, repeatable (e.g. --set epochs=10 --set image_size=(160,160)).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes that run the sweep side by side in --out, longest runs first, each with an equal "
                   "share of the CPU threads (the same results as one process with that many threads, so resume a "
                   "sweep with the same --jobs).")
@_one_line_errors
def bench(config: Path | None, data: Path, out: Path, preset: str | None, model: str | None, weights: str | None,
          detector: str | None, methods: str | None, settings: str | None, shots: int | None, seeds: str | None,
          in_ratio_sweep: bool, layout: str | None, data_pairs: tuple[str, ...], folds: str | None,
          set_pairs: tuple[str, ...], jobs: int) -> None:
    """Train a defect classifier per method x setting x seed and report AP, AUROC, precision, recall and F1.

    CONFIG is a JSON file of settings (see benchmarks/configs/); options override it. Writes runs/*.json,
    summary.md, summary.json, pr-SETTING.png and positives-SETTING.png to --out (with --detector segdec named
    segdec-summary.md etc., and heatmaps-RUN.png); with --folds all, each fold's to --out/foldK and the pooled
    summary to --out.
    """
    from inout_aug.bench.config import BenchConfig, load_config
    from inout_aug.bench.report import write_fold_report, write_report
    from inout_aug.bench.runner import fold_benchmarks, run_in_processes

    if config is not None and preset is not None:
        raise click.UsageError("give a CONFIG file or --preset, not both (a config file names its preset)")
    given = {"model": model, "weights": weights, "detector": detector, "methods": _csv(methods),
             "settings": _csv(settings), "shots": shots, "seeds": _csv(seeds, int),
             "layout": None if layout == "auto" else layout,
             "in_ratios": (0.0, 0.25, 0.5, 0.75, 1.0) if in_ratio_sweep else None,
             "all_folds": None if folds is None else folds == "all"}
    overrides = {k: v for k, v in given.items() if v is not None}
    if data_pairs:
        overrides["data_options"] = parse_params(data_pairs, "--data-option")
    overrides.update(parse_params(set_pairs, "--set"))
    bench_config = load_config(config, **overrides) if config else BenchConfig.preset(preset or "cpu", **overrides)
    benches = fold_benchmarks(bench_config, data, out, log=lambda text: click.echo(text, err=True))
    where = f" in each of {len(benches)} folds" if bench_config.all_folds else ""
    click.echo(f"{len(benches[0].runs)} runs{where} ({len(benches[0].skipped)} method/setting pairs not run) -> {out}",
               err=True)
    if jobs > 1:
        run_in_processes(bench_config, data, out, jobs)
    results = [runner.run_all() for runner in benches]  # after --jobs: every run found finished
    command = "inout-aug " + shlex.join(sys.argv[1:])
    written = [path for runner, done in zip(benches, results) for path in write_report(runner, done, command)]
    if bench_config.all_folds:
        written += write_fold_report(bench_config, benches, results, out, command)
    click.echo((out / f"{bench_config.report_prefix}summary.md").read_text(encoding="utf-8"))
    click.echo("wrote " + ", ".join(str(p) for p in written))


@cli.command("info-data")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--layout", type=click.Choice(["auto", *LAYOUTS]), default="auto", show_default=True)
@click.option("--split", default="all", show_default=True, help="Split to describe: all, train or test.")
@click.option("--data-option", "-d", "data_pairs", multiple=True, metavar="KEY=VALUE",
              help="Dataset layout option, repeatable (e.g. category=bottle, fold=1, test_fraction=0.3).")
@_one_line_errors
def info_data(path: Path, layout: str, split: str, data_pairs: tuple[str, ...]) -> None:
    """Show the dataset at PATH: detected layout, images per class and label, image sizes."""
    options = parse_params(data_pairs, "--data-option")
    dataset = open_dataset(path, None if layout == "auto" else layout, split, **options)
    click.echo(format_summary(dataset.summary()))


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="PNG to write [default: FOLDER/preview.png].")
@click.option("--limit", type=click.IntRange(min=1), default=16, show_default=True, help="Number of images shown.")
@click.option("--columns", type=click.IntRange(min=1), default=4, show_default=True, help="Image pairs per row.")
@_one_line_errors
def preview(folder: Path, out: Path | None, limit: int, columns: int) -> None:
    """Write a PNG contact sheet of generated images beside their masks overlaid in red."""
    written = preview_folder(folder, out or folder / "preview.png", limit=limit, columns=columns)
    click.echo(f"wrote {written}")


@cli.command()
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("inout-aug-demo"), show_default=True)
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=16, show_default=True,
              help="Number of defective images.")
@click.option("--augmenter", "-a", default="memseg", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--param", "-p", "param_pairs", multiple=True, metavar="KEY=VALUE",
              help="Augmenter parameter, repeatable (see `inout-aug info NAME`).")
@_one_line_errors
def demo(out: Path, n: int, augmenter: str, seed: int, param_pairs: tuple[str, ...]) -> None:
    """Built-in demo: make procedural metal surfaces, turn them into defective images, write a preview."""
    normal = out / "normal"
    _check_demo_folder(out, normal, augmenter, n, seed)
    for i, surface in enumerate(make_surfaces(n, seed=seed)):
        write_png(surface, normal / f"surface_{i:03d}.png")
    params = parse_params(param_pairs, "--param")
    with GenerationJob(augmenter, normal, out, n=n, seed=seed, params=params) as job:
        _run(job)
    sheet = preview_folder(out, out / "preview.png", limit=n)
    click.echo(f"normal images: {normal}\ndefects: {out / 'images'}, masks: {out / 'masks'}, "
               f"manifest: {out / 'manifest.jsonl'}\npreview: {sheet}")


def _check_demo_folder(out: Path, normal: Path, augmenter: str, n: int, seed: int) -> None:
    """Refuse an --out that holds anything but a demo run of these settings, before the demo writes its surfaces."""
    if out.exists() and not out.is_dir():
        raise GenerationError(f"--out {out} is a file: give a folder (new or empty) for the demo")
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
            previous = None
        if not written_by_generate(previous):
            raise GenerationError(f"{out} holds a {RUN_FILE} that generate did not write: give another --out")
        if read_manifest(out):  # (a run that made nothing yet begins again, as generate's does)
            if previous.get("input") != os.path.abspath(normal):
                raise GenerationError(f"{out} holds a generate run that is not a demo's: give another --out")
            count = previous["sources"].get("count") if isinstance(previous["sources"], dict) else None
            made = (previous["augmenter"], count, previous.get("seed"))
            if made != (augmenter, n, seed):
                raise GenerationError(f"{out} holds a demo run of -a {made[0]} -n {made[1]} --seed {made[2]}: run "
                                      "the demo with those settings to resume it, or give another --out")
    elif out.is_dir() and any(p != normal and not p.name.startswith(".lock") for p in out.iterdir()):
        raise GenerationError(f"--out {out} already holds files but no demo run: give a new or empty folder")
