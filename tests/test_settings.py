"""One settings loader: every settings dataclass refuses unknown keys with the same SettingsError."""

from __future__ import annotations

import json
from dataclasses import dataclass

import PIL.Image
import pytest
import torch

from inout_aug.bench.config import BenchConfig, load_config
from inout_aug.core.settings import SettingsError, parse_pairs, settings_from_dict, settings_from_preset
from inout_aug.models import sd
from inout_aug.models.ddpm import DDPMConfig
from inout_aug.models.finetune import finetune


@dataclass
class _Toy:
    steps: int = 1
    rate: float = 0.1
    flag: bool = False
    limit: float | None = None


def test_unknown_key_names_it_the_closest_and_the_valid_keys():
    assert settings_from_dict(_Toy, {"steps": 3}) == _Toy(steps=3)
    with pytest.raises(SettingsError, match=r"^unknown toy setting step \(did you mean steps\?\); valid: flag, limit, "
                                            r"rate, steps$"):
        settings_from_dict(_Toy, {"step": 3}, what="toy")
    with pytest.raises(SettingsError, match=r"^unknown settings colour, zzz; valid: flag, limit, rate, steps$"):
        settings_from_dict(_Toy, {"zzz": 1, "colour": 2})
    assert issubclass(SettingsError, ValueError)


def test_flags_integers_and_numbers_are_checked_by_the_kind_of_their_default():
    assert settings_from_dict(_Toy, {"steps": 2, "rate": 1, "flag": True, "limit": None}) == \
        _Toy(steps=2, rate=1, flag=True)
    for key, value, wanted in [("steps", "abc", "an integer"), ("steps", 2.5, "an integer"),
                               ("steps", True, "an integer"), ("rate", float("nan"), "a finite number"),
                               ("rate", "0.1", "a finite number"), ("flag", "yes", "True or False"),
                               ("limit", float("inf"), "a finite number")]:
        with pytest.raises(SettingsError, match=f"^toy setting {key} must be {wanted}, got "):
            settings_from_dict(_Toy, {key: value}, what="toy")


def test_presets_take_overrides_and_name_the_valid_presets():
    presets = {"small": {"steps": 2}, "large": {"steps": 9}}
    assert settings_from_preset(_Toy, presets, "large", {"rate": 0.5}) == _Toy(steps=9, rate=0.5)
    with pytest.raises(SettingsError, match="unknown toy preset 'huge'; choose one of small, large"):
        settings_from_preset(_Toy, presets, "huge", what="toy")
    with pytest.raises(SettingsError, match="unknown setting stepz"):
        settings_from_preset(_Toy, presets, "small", {"stepz": 1})


def test_key_value_strings_become_literals_or_strings():
    assert parse_pairs(["steps=3", "size=(1, 2)", "name=crack", "seed=None", " rate =0.5", "path=a=b"]) == \
        {"steps": 3, "size": (1, 2), "name": "crack", "seed": None, "rate": 0.5, "path": "a=b"}
    for bad in ("novalue", "=3"):
        with pytest.raises(SettingsError, match="expected key=value"):
            parse_pairs([bad])


def test_ddpm_config_goes_through_the_loader():
    with pytest.raises(SettingsError, match=r"unknown ddpm setting stepz \(did you mean steps\?\); valid: .*window"):
        DDPMConfig.from_dict({"stepz": 3})
    with pytest.raises(SettingsError, match="unknown ddpm setting stepz"):
        DDPMConfig.preset("smoke", stepz=3)
    with pytest.raises(SettingsError, match="unknown ddpm preset"):
        DDPMConfig.preset("huge")


def test_lora_settings_go_through_the_loader():
    assert sd.LoraSettings.preset("smoke", rank=8).rank == 8
    with pytest.raises(SettingsError, match=r"unknown LoRA setting rnk \(did you mean rank\?\); valid: .*seed"):
        sd.LoraSettings.preset("paper", rnk=8)
    with pytest.raises(SettingsError, match="unknown LoRA preset 'fast'; choose one of paper, smoke"):
        sd.LoraSettings.preset("fast")


def test_bench_config_goes_through_the_loader(tmp_path):
    with pytest.raises(SettingsError, match=r"unknown benchmark setting epoch \(did you mean epochs\?\)"):
        BenchConfig.from_dict({"epoch": 3})
    with pytest.raises(SettingsError, match="unknown benchmark setting epoch"):
        BenchConfig.preset("cpu", epoch=3)
    (tmp_path / "config.json").write_text(json.dumps({"preset": "smoke", "epoch": 3}))
    with pytest.raises(SettingsError, match="unknown benchmark setting epoch"):
        load_config(tmp_path / "config.json")


@pytest.fixture
def dataset(tmp_path):
    """A folder layout: two normal images, one defect with its mask."""
    image = torch.full((16, 16), 120, dtype=torch.uint8).numpy()
    mask = torch.zeros(16, 16, dtype=torch.uint8)
    mask[4:8, 4:8] = 255
    for path, pixels in [("normal/n0.png", image), ("normal/n1.png", image), ("defect/scratch/d0.png", image),
                         ("masks/scratch/d0.png", mask.numpy())]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(pixels).save(tmp_path / path)
    return tmp_path


@pytest.mark.parametrize(("backend", "preset", "key"), [("ddpm", "smoke", "stepz"), ("sd", "smoke", "rnk")])
def test_finetune_settings_go_through_the_loader(dataset, tmp_path, backend, preset, key):
    with pytest.raises(SettingsError, match=f"unknown .*setting {key} "):
        finetune(backend, dataset, tmp_path / "out", setting="few", shots=1, preset=preset, overrides={key: 1},
                 checkpoint=tmp_path / "no-checkpoint" if backend == "sd" else None, split="all", progress=False)
