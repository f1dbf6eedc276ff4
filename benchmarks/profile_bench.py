"""Where one benchmark run's time goes: seconds per phase of ``Benchmark.execute``, and the run's scores.

Each phase's function is wrapped with a timer that charges the time to the innermost running phase, so the
phases add up to the run (decoding is charged where the first read of an image happens; a sweep decodes once).

    python benchmarks/profile_bench.py --data ../shared/data/magnetic_tile --json /tmp/after.json

To time another checkout in the same session, run it from outside the repository with that checkout's source
first on the path: ``cd /tmp && PYTHONPATH=/tmp/before python /work/main/benchmarks/profile_bench.py ...``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.utils.data.dataloader as dataloader

import inout_aug.bench.classifier as classifier
import inout_aug.bench.data as bench_data
import inout_aug.bench.runner as runner
from inout_aug.bench.config import load_config
from inout_aug.data.layouts import Layout

CONFIG = Path(__file__).resolve().parent / "configs" / "magnetic_tile_cpu.json"
#: Phases that take a "predict: " prefix when they run inside predict().
SHARED = ("loader", "decode", "resize", "forward", "model input")


class Phases:
    """Exclusive seconds per phase: time goes to the innermost phase running."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = time.perf_counter()

    def _switch(self, push: str | None) -> None:
        now = time.perf_counter()
        if self.stack:
            self.seconds[self.stack[-1]] += now - self.mark
        if push is None:
            self.stack.pop()
        else:
            self.stack.append(f"predict: {push}" if push in SHARED and "predict" in self.stack else push)
        self.mark = now

    def wrap(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._switch(name)
            try:
                return function(*args, **kwargs)
            finally:
                self._switch(None)
        return timed

    def patch(self, owner: Any, attribute: str, name: str) -> None:
        setattr(owner, attribute, self.wrap(getattr(owner, attribute), name))


def instrument(phases: Phases) -> None:
    """Wrap the functions of a run's phases (module-level names as the runner and classifier call them)."""
    def create(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = create_classifier(*args, **kwargs)
        model.forward = phases.wrap(model.forward, "forward")
        return model

    create_classifier = runner.create_classifier
    runner.create_classifier = phases.wrap(create, "create model")
    phases.patch(runner.Benchmark, "execute", "other (metrics, record)")
    phases.patch(runner, "train_classifier", "train loop (loss, bookkeeping)")
    phases.patch(runner, "predict", "predict")
    phases.patch(dataloader._BaseDataLoaderIter, "__next__", "loader")
    phases.patch(Layout, "read", "decode")
    phases.patch(bench_data.ResizedView, "read", "resize")
    phases.patch(classifier, "augment_batch", "augmentation")
    phases.patch(classifier, "model_input", "model input")
    phases.patch(torch.Tensor, "backward", "backward")
    phases.patch(torch.optim.Adam, "step", "optimizer")
    phases.patch(torch.optim.Adam, "zero_grad", "optimizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the magnetic tile folder")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--method", default="memseg")
    parser.add_argument("--setting", default="few")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resize", choices=("pad", "squash"), help="the images' resize (default: the config's)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    phases = Phases()
    instrument(phases)
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        bench = runner.Benchmark(config, args.data, out, log=print)
        if args.resize:
            bench.data = bench_data.open_bench_data(args.data, config.image_size, config.val_fraction, config.layout,
                                                    config.data_options, resize=args.resize)
        opened = time.perf_counter() - start
        threads = torch.get_num_threads()
        start = time.perf_counter()
        result = bench.execute(runner.Run(args.method, args.setting, args.seed), print)
        seconds = time.perf_counter() - start
    figures = {
        "run": f"{args.method}-{args.setting}-seed{args.seed}", "source": str(Path(bench_data.__file__).parent),
        "resize": getattr(bench.data.train, "resize", "squash"),
        "seconds": seconds, "open_data_seconds": opened, "phases": dict(sorted(phases.seconds.items())),
        "ap": result["metrics"]["ap"], "auroc": result["metrics"]["auroc"], "test_scores": result["scores"]["test"],
        "epochs": result["history"], "threads": [threads, torch.get_num_threads()],
        "load_average": os.getloadavg(), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    for name, spent in sorted(phases.seconds.items(), key=lambda item: -item[1]):
        print(f"{spent:8.2f} s  {name}")
    print(f"{seconds:8.2f} s  run (AP {figures['ap']:.6f}), threads {figures['threads']}, "
          f"load {figures['load_average'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
