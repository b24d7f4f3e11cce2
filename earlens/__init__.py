"""earlens: framework-free science for looking inside what audio models hear.

The Lightning glue lives beside this folder (`callbacks/`, `datamodules/`, `lightning_modules/`) and is imported as
`earlens.callbacks`, `earlens.datamodules`, `earlens.lightning_modules`: installed there by pyproject's package-dir
mapping, and found there in a source checkout by `_SourceGlueFinder` below.
"""

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_GLUE = ("callbacks", "datamodules", "lightning_modules")


class _SourceGlueFinder(importlib.abc.MetaPathFinder):
    """Find `earlens.<glue>` in the source checkout's folder of that name, and nothing else there (adding the
    checkout's root to `__path__` would also make `earlens.tests`, `earlens.earlens`, ... importable)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != __name__ or name not in _GLUE:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(_SOURCE_ROOT)])


_INSTALLED = (Path(__file__).resolve().parent / "lightning_modules").is_dir()  # a wheel holds the glue inside
if not _INSTALLED and (_SOURCE_ROOT / "lightning_modules" / "__init__.py").is_file() and not any(
        type(finder).__name__ == "_SourceGlueFinder" for finder in sys.meta_path):  # a checkout; once per process
    sys.meta_path.insert(0, _SourceGlueFinder())  # before an editable install of another checkout


def _hide_unusable_torchaudio() -> None:
    """Hide a torchaudio that cannot import, so transformers (which imports it when installed) still works.

    PyPI's torchaudio wheels are CUDA-linked and fail against a CPU-only torch; `torchcrepe` pulls one in.
    A None entry in `sys.modules` makes `find_spec` report it absent; transformers caches that check.
    """
    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = None
        import_utils = sys.modules.get("transformers.utils.import_utils")
        if import_utils is not None:
            import_utils.is_torchaudio_available.cache_clear()


_hide_unusable_torchaudio()
