"""The ``inout-aug`` command line (installed as the package ``inout_aug_cli``)."""
