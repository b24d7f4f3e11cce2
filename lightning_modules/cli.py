"""Conventions shared by `train.py` and `probe.py`: `--config NAME`, run folders, loggers, `summary.json`."""

from __future__ import annotations

import json
import netrc
import os
import sys
import time
from importlib import metadata
from pathlib import Path

from earlens.paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"
VERSIONED_PACKAGES = ("earlens", "torch", "pytorch-lightning", "torchmetrics", "numpy", "librosa", "wandb",
                      "transformers")


def resolve_config(name_or_path: str) -> Path:
    """`gabor_vad` → `configs/gabor_vad.yaml`; an existing path is returned as is."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config {name_or_path!r} is neither a file nor configs/<name>.yaml; known: {known}")


def expand_config_args(argv: list[str]) -> tuple[list[str], str | None]:
    """Rewrite every `--config NAME` / `--config=NAME` to a path; return the new argv and the first config's name."""
    out, name = [], None
    args = iter(argv)
    for arg in args:
        if arg == "--config" or arg.startswith("--config="):
            value = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            path = resolve_config(value)
            name = name or path.stem
            out += ["--config", str(path)]
        else:
            out.append(arg)
    return out, name


def run_dir_for(config_name: str | None, root: str | os.PathLike = "runs") -> Path:
    """A fresh folder `runs/<config>/<timestamp>` for one run's logs, checkpoints and summary."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / (config_name or "adhoc") / stamp
    suffix = 0
    while path.exists():
        suffix += 1
        path = Path(root) / (config_name or "adhoc") / f"{stamp}-{suffix}"
    return path


def ensure_wandb_mode() -> str:
    """Run W&B offline unless the user chose a mode or has credentials (env key or ~/.netrc)."""
    if "WANDB_MODE" not in os.environ:
        has_key = bool(os.environ.get("WANDB_API_KEY"))
        if not has_key:
            try:
                has_key = netrc.netrc().authenticators("api.wandb.ai") is not None
            except (FileNotFoundError, netrc.NetrcParseError):
                has_key = False
        if not has_key:
            os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_summary(directory: str | os.PathLike, **fields) -> Path:
    """Write `directory/summary.json` (the caller's fields plus package versions) and return its path."""
    path = Path(directory) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {**fields, "versions": package_versions()}
    path.write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_offline_wandb_history(run_dir: str | os.PathLike) -> list[dict]:
    """Logged rows of the offline W&B run under `run_dir` (`wandb/offline-run-*/run-*.wandb`).

    The file is a LevelDB-style log (7-byte file header, 32 KiB blocks, records split FULL/FIRST/MIDDLE/LAST)
    of `wandb_internal_pb2.Record` protobufs; no server and no W&B summary file are needed.
    """
    import json

    from wandb.proto import wandb_internal_pb2

    files = sorted(Path(run_dir).glob("**/offline-run-*/run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no offline W&B run file under {run_dir}")
    rows = []
    for file in files:
        for payload in _leveldb_log_records(file.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def _leveldb_log_records(data: bytes, block_size: int = 32768, header_size: int = 7):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    pos, pending = header_size, b""
    while pos + 7 <= len(data):
        left_in_block = block_size - pos % block_size
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # FULL
            yield chunk
        elif kind == 2:  # FIRST
            pending = chunk
        elif kind == 3:  # MIDDLE
            pending += chunk
        elif kind == 4:  # LAST
            yield pending + chunk
            pending = b""
        else:
            break
