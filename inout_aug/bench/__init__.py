"""The classifier benchmark (settings, sweep, report) and what it measures with: backbones with offline
weights, image features and distances."""

from inout_aug.bench.config import PRESETS, BenchConfig, load_config
from inout_aug.bench.report import write_report
from inout_aug.bench.runner import Benchmark, Run, plan

__all__ = ["PRESETS", "BenchConfig", "Benchmark", "Run", "load_config", "plan", "write_report"]
