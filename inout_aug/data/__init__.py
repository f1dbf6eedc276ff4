"""Datasets on disk (KolektorSDD2, KolektorSDD, MVTec AD, magnetic tile, folder), training sets, loading."""

from inout_aug.data.layouts import (
    LAYOUTS,
    FolderLayout,
    KolektorSDD,
    KolektorSDD2,
    Layout,
    LayoutError,
    MagneticTile,
    MVTecAD,
    Record,
    StratifiedLayout,
    detect_layout,
    format_summary,
    open_dataset,
    stratified_split,
)
from inout_aug.data.loading import augment_batch, collate, make_loader
from inout_aug.data.training import SETTINGS, TrainingSet, choose_defects

__all__ = [
    "LAYOUTS",
    "FolderLayout",
    "KolektorSDD",
    "KolektorSDD2",
    "Layout",
    "LayoutError",
    "MagneticTile",
    "MVTecAD",
    "Record",
    "StratifiedLayout",
    "detect_layout",
    "format_summary",
    "open_dataset",
    "stratified_split",
    "SETTINGS",
    "TrainingSet",
    "choose_defects",
    "augment_batch",
    "collate",
    "make_loader",
]
