"""Datasets on disk: the KolektorSDD2, KolektorSDD, MVTec AD, magnetic tile and folder layouts."""

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
]
