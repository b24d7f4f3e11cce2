"""The source checkout's import layout (`earlens/__init__.py`): the Lightning glue is
`earlens.{callbacks,datamodules,lightning_modules}`, taken from the folders beside `earlens/`, and nothing else
beside it becomes part of the package (appending the checkout root to `earlens.__path__` once made
`earlens.tests`, `earlens.earlens`, ... importable and `pkgutil.walk_packages` recurse forever)."""

import importlib
import pkgutil
from pathlib import Path

import pytest

import earlens

REPO = Path(__file__).resolve().parent.parent
BESIDE = ["tests", "bench", "configs", "earlens", "docs"]  # folders beside the package that are not part of it


@pytest.mark.parametrize("name", ["callbacks", "datamodules", "lightning_modules"])
def test_glue_comes_from_this_checkout(name):
    module = importlib.import_module(f"earlens.{name}")
    assert Path(module.__file__).resolve() == REPO / name / "__init__.py"


@pytest.mark.parametrize("name", BESIDE)
def test_nothing_else_beside_the_package_imports_through_it(name):
    assert (REPO / name).is_dir()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"earlens.{name}")


def test_walking_the_package_ends_and_finds_only_its_modules():
    names = [info.name for info in pkgutil.walk_packages(earlens.__path__, "earlens.")]
    assert {"earlens.frontend.gabor", "earlens.models.pretrained", "earlens.models.pretrained.silero"} <= set(names)
    assert not any(name.split(".")[1] in BESIDE for name in names)
