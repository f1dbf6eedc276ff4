"""``python -m inout_aug_cli``: the same as the ``inout-aug`` command."""

from inout_aug_cli.main import cli

cli(prog_name="inout-aug")
