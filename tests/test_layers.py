"""The package's layers (docs/architecture.md): imports go down, no cycles, no torch below models, lean serve/."""

import importlib.util
import sys

from conftest import REPO


def _layers():
    spec = importlib.util.spec_from_file_location("layers", REPO / "scripts" / "layers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["layers"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_import_goes_down_and_there_are_no_cycles():
    problems = _layers().violations()
    assert not problems, "\n".join(problems)


def test_the_checker_finds_a_cycle_and_an_upward_import():
    layers = _layers()
    assert layers.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert layers.cycles({"a": {"b"}, "b": set()}) == []
    g = layers.graph()
    assert "runtime.model" in g and "features" in g["runtime.model"]  # the graph sees real imports
