"""The registry: entry points (lazy), run-time registration, wildcards, broken plugins, name clashes."""

from __future__ import annotations

import sys
import warnings

import pytest

import inout_aug
from helpers import FAULTY_ENTRIES, FAULTY_MODULE, TOY_MODULE, SquareDefect, make_distribution
from inout_aug.core import registry
from inout_aug.core.errors import PluginError
from inout_aug.core.registry import PluginWarning


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for fake distributions; the registry is re-read before and after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]
    registry._runtime.clear()
    registry.refresh()


def test_builtin_is_declared_as_an_entry_point():
    entry = registry.entries("memseg")[0]
    assert entry.source == "inout-aug" and entry.target == "inout_aug.augmenters.memseg:MemSegRegion"
    assert registry.get("memseg").name == "memseg"


def test_entry_points_load_lazily(site):
    make_distribution(site, "fake-toy", "fake_toy", TOY_MODULE, {"toy": "fake_toy:Toy"})
    assert "toy" in registry.list_augmenters()
    assert "fake_toy" not in sys.modules, "listing must not import plugins"
    augmenter = inout_aug.create("toy", seed=0)
    assert "fake_toy" in sys.modules and type(augmenter).__name__ == "Toy" and augmenter.name == "toy"
    assert registry.entries("toy")[0].source == "fake-toy"


def test_wildcards(site):
    make_distribution(site, "fake-toy", "fake_toy", TOY_MODULE, {"toy_a": "fake_toy:Toy", "toy_b": "fake_toy:Toy"})
    assert registry.list_augmenters("toy_*") == ["toy_a", "toy_b"]
    assert registry.list_augmenters("toy_[b]") == ["toy_b"]
    assert registry.list_augmenters("nothing*") == []


def test_broken_plugin_warns_with_distribution_and_error_and_the_rest_works(site):
    make_distribution(site, "fake-broken", "fake_broken", "import not_a_real_module_xyz\n",
                      {"broken": "fake_broken:Thing"})
    assert "broken" in registry.list_augmenters()
    with pytest.warns(PluginWarning, match=r"'fake-broken'.*ModuleNotFoundError.*not_a_real_module_xyz"):
        with pytest.raises(LookupError, match="pip uninstall fake-broken"):
            registry.get("broken")
    with pytest.raises(LookupError, match="is broken"):
        registry.get("broken")
    assert registry.get("memseg").name == "memseg"


def test_a_plugins_errors_name_the_plugin(site):
    make_distribution(site, "fake-faulty", "fake_faulty", FAULTY_MODULE, FAULTY_ENTRIES)
    with pytest.raises(ValueError, match=r"^augmenter 'ring' \(from 'fake-faulty'\): radius must be positive$"):
        inout_aug.create("ring", radius=-1)
    with pytest.raises(FileNotFoundError, match=r"^augmenter 'ring' \(from 'fake-faulty'\): ring.png not found"):
        inout_aug.create("ring", radius=0)  # a message of any type the plugin raises on purpose
    with pytest.raises(FileNotFoundError) as missing:  # a file error names its file: not the plugin's bug
        inout_aug.create("ring", radius=99)
    assert missing.value.filename == "no-such-ring-file.png"
    with pytest.raises(PluginError, match=r"augmenter 'broken_init' from 'fake-faulty' failed to build \(KeyError: "
                                          r"'setting'\): a bug of 'fake-faulty', to report to its authors"):
        inout_aug.create("broken_init")
    with pytest.raises(PluginError, match="failed to build"):  # installed, so not reported as missing
        inout_aug.InOutMix(in_augmenter="broken_init", seed=0)
    with pytest.raises(ValueError, match=r"^p must be a probability"):  # a built-in's own message stays as it is
        inout_aug.create("memseg", p=2)


def test_a_plugin_that_exits_on_import_or_has_no_name_breaks_nothing_else(site):
    make_distribution(site, "fake-exit", "fake_exit", "raise SystemExit('bye')\n", {"exits": "fake_exit:Thing"})
    noname = site / "fake_noname-1.0.dist-info"
    noname.mkdir()
    (noname / "METADATA").write_text("Metadata-Version: 2.1\nVersion: 1.0\n")
    (noname / "entry_points.txt").write_text(f"[{registry.GROUP}]\nnoname = fake_noname_module:Toy\n")
    assert registry.entries("noname")[0].source == "unknown"
    with pytest.warns(PluginWarning, match=r"'exits' from distribution 'fake-exit' failed to load \(SystemExit: bye\)"):
        with pytest.raises(LookupError, match="pip uninstall fake-exit"):
            registry.get("exits")
    assert inout_aug.create("memseg", seed=0).name == "memseg"
    make_distribution(site, "fake-typo", "fake_typo", "", {"typo": "fake typo:Thing"})
    registry.refresh()
    with pytest.warns(PluginWarning, match=r"'fake-typo' failed to load \(ValueError: its entry point 'fake typo:"
                                           r"Thing' is not of the form 'module:Class'\)"):
        with pytest.raises(LookupError):
            registry.get("typo")


def test_entry_point_that_is_not_an_augmenter(site):
    make_distribution(site, "fake-wrong", "fake_wrong", "Thing = 42\n", {"wrong": "fake_wrong:Thing"})
    with pytest.warns(PluginWarning, match="not a subclass of inout_aug.Augmenter"):
        with pytest.raises(LookupError):
            registry.get("wrong")


def test_name_clash_is_deterministic_with_a_warning(site):
    make_distribution(site, "fake-zeta", "fake_zeta", TOY_MODULE, {"dup": "fake_zeta:Toy", "memseg": "fake_zeta:Toy"})
    make_distribution(site, "fake-alpha", "fake_alpha", TOY_MODULE, {"dup": "fake_alpha:Toy"})
    with pytest.warns(PluginWarning) as caught:
        names = registry.list_augmenters()
    messages = " ".join(str(w.message) for w in caught)
    assert "named 'dup'" in messages and "named 'memseg'" in messages
    assert names.count("dup") == 1
    assert registry.entries("dup")[0].source == "fake-alpha", "the first distribution by name wins"
    assert registry.entries("memseg")[0].source == "inout-aug", "inout-aug's own augmenters win"


def test_register_get_create(site):
    @registry.register(name="square_rt")
    class Square(SquareDefect):
        """Square, registered at run time."""

    assert registry.get("square_rt") is Square
    assert "square_rt" in inout_aug.list_augmenters("square*")
    augmenter = inout_aug.create("square_rt", size=3, seed=1)
    assert isinstance(augmenter, Square) and augmenter.size == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.register(SquareDefect, name="square_rt")
    assert registry.get("square_rt") is Square and "named 'square_rt'" in str(caught[0].message)


def test_register_rejects_non_augmenters():
    with pytest.raises(TypeError, match="expects an Augmenter subclass"):
        registry.register(int, name="int")


def test_unknown_name_and_unknown_parameter_errors():
    with pytest.raises(KeyError, match="unknown augmenter 'nope'; registered: .*memseg"):
        registry.get("nope")
    with pytest.raises(TypeError, match=r"has no parameter 'bogus'; valid: .*seed"):
        inout_aug.create("memseg", bogus=1)


def test_missing_parameters_and_values_an_augmenter_cannot_take_name_the_augmenter():
    with pytest.raises(TypeError, match=r"augmenter 'transplant' needs defects=\.\.\. \(see `inout-aug info"):
        inout_aug.create("transplant")
    with pytest.raises(ValueError, match="augmenter 'memseg' failed to build from threshold='abc': could not "
                                         "convert .*check those values.*report it as a bug") as caught:
        inout_aug.create("memseg", threshold="abc")
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(TypeError, match="augmenter 'memseg' failed to build from grid=None: 'NoneType'"):
        inout_aug.create("memseg", grid=None)  # the error keeps its type
    with pytest.raises(ValueError, match="p must be a probability"):  # the augmenter's own message, as it was
        inout_aug.create("memseg", p=2)


def test_one_class_under_two_names_keeps_each_name(site):
    make_distribution(site, "fake-toy", "fake_toy", TOY_MODULE, {"toy_a": "fake_toy:Toy", "toy_b": "fake_toy:Toy"})
    assert inout_aug.create("toy_a").name == "toy_a" and inout_aug.create("toy_b").name == "toy_b"


def test_self_registration_of_a_reexported_plugin_class_is_no_clash(site):
    package = site / "fake_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from fake_pkg.impl import PkgToy\n")
    (package / "impl.py").write_text(
        "import torch\nfrom inout_aug import Augmenter, register\n\n"
        "@register(name='pkgtoy')\nclass PkgToy(Augmenter):\n    '''Registers itself too.'''\n")
    make_distribution(site, "fake-pkg", "fake_pkg_unused", "", {"pkgtoy": "fake_pkg:PkgToy"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls = registry.get("pkgtoy")
        registry.refresh()
        assert registry.get("pkgtoy") is cls


def test_register_needs_a_name_of_its_own(site):
    class Child(SquareDefect):
        pass

    with pytest.raises(ValueError, match="has no name"):
        registry.register(Child)
    registry.register(Child, name="child")
    assert registry.get("child") is Child and inout_aug.create("child").name == "child"


def test_constructors_taking_kwargs(site):
    @registry.register(name="kw")
    class Keywords(SquareDefect):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    assert inout_aug.create("kw", p=0.5, size=2).size == 2
    assert "kwargs" not in registry.parameters("kw") and "args" not in registry.parameters("kw")


def test_entry_is_an_exact_lookup():
    assert registry.entry("memseg").name == "memseg"
    with pytest.raises(KeyError, match="unknown augmenter 'mem\\*'"):
        registry.entry("mem*")
