"""Record MemSegRegion's mask areas and blend factors, the reference that test_memseg compares its draws with.

It draws with whichever ``inout_aug`` Python imports, so put the reference commit's first on the path (the
record names the commit it drew with):

    git worktree add /tmp/reference REV
    PYTHONPATH=/tmp/reference python tests/data/record_memseg_draws.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from helpers import memseg_draws  # noqa: E402
from inout_aug.bench.runner import git_state  # noqa: E402

SETTINGS = {"n": 1024, "size": 128, "seed": 0}

if __name__ == "__main__":
    areas, deltas = memseg_draws(**SETTINGS)
    record = {"settings": SETTINGS, **git_state(), "mask_area": areas, "delta": deltas}
    (HERE / "memseg_draws.json").write_text(json.dumps(record) + "\n")
