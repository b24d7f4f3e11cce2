"""Where data and caches live: one place to resolve them, with errors that say where we looked."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

DOWNLOADS = {
    "fsdd": "https://github.com/Jakobovski/free-spoken-digit-dataset (recordings/ folder)",
    "esc10": "https://github.com/karolpiczak/ESC-50 (the ESC-10 subset, one folder per class)",
    "ami_mini": "pyannote.audio's AMI debug protocol (tutorials/data_preparation), with RTTM/UEM/lst files",
    "bengalese_finch": "https://figshare.com/articles/BirdsongRecognition/3470165 (Bird0/Wave, Annotation.xml)",
    "models/lyra": "https://github.com/google/lyra (model_coeffs/*.tflite)",
}


def data_root(root: str | os.PathLike | None = None, dataset: str | None = None) -> Path:
    """Folder holding the datasets (`fsdd/`, `esc10/`, ...), or one dataset inside it.

    An explicit `root` is the only place looked at; otherwise `$EARLENS_DATA`, then `../shared/data` beside the
    checkout.
    """
    if root:
        candidates = [Path(root)]
    elif os.environ.get("EARLENS_DATA"):
        candidates = [Path(os.environ["EARLENS_DATA"])]
    else:
        candidates = [REPO_ROOT.parent / "shared" / "data"]
    for base in candidates:
        path = base / dataset if dataset else base
        if path.is_dir():
            return path
    looked = ", ".join(str(c / dataset if dataset else c) for c in candidates)
    hint = f" Download it from {DOWNLOADS[dataset]} into <root>/{dataset}." if dataset in DOWNLOADS else ""
    raise FileNotFoundError(
        f"dataset {dataset or '(root)'} not found; looked in: {looked}. "
        f"Pass --data.init_args.root or set EARLENS_DATA to the folder holding it.{hint}"
    )


def cache_dir(name: str = "") -> Path:
    """Writable cache folder (`$EARLENS_CACHE`, default `~/.cache/earlens`), created on demand."""
    path = Path(os.environ.get("EARLENS_CACHE", Path.home() / ".cache" / "earlens")) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
