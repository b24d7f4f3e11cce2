"""Conventions shared by `train.py` and `probe.py`: `--config NAME`, run folders, loggers, `summary.json`."""

from __future__ import annotations

import json
import netrc
import os
import socket
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import yaml

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


def quiet_startup() -> None:
    """Drop start-up noise that says nothing about the run (Lightning's LitLogger tip, W&B's console chatter)."""
    import logging

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "litlogger" not in record.getMessage().lower())
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended to run from within")


def list_configs() -> list[tuple[str, str]]:
    """(name, first comment line) of every `configs/*.yaml`, for short `--help` screens."""
    found = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        found.append((path.stem, first))
    return found


def short_help(usage: str, options: list[tuple[str, str]], prefixes: tuple[str, ...] = ()) -> str:
    """A one-screen help: usage, the configs (those starting with `prefixes`, all if empty) and the common options."""
    configs = [(name, about) for name, about in list_configs() if not prefixes or name.startswith(prefixes)]
    width = max(len(name) for name, _ in configs + options)
    lines = [usage, "", "configs (--config NAME, or a path to a YAML file):"]
    lines += [f"  {name:<{width}}  {about[:110 - width]}" for name, about in configs]
    lines += ["", "common options:"] + [f"  {flag:<{width}}  {about}" for flag, about in options]
    return "\n".join(lines)


def expand_config_args(argv: list[str]) -> tuple[list[str], str | None]:
    """Rewrite every `--config NAME` / `--config=NAME` to a path, a composed config (a YAML whose only key is
    `compose: [task/vad, frontend/gabor]`) to one `--config` per part, in order (later parts override earlier ones);
    return the new argv and the run's name (the config's name; several: their names joined by `+`)."""
    out, names = [], []
    args = iter(argv)
    for arg in args:
        if arg == "--config" or arg.startswith("--config="):
            value = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            path = resolve_config(value)
            names.append(path.stem)
            out += [item for part in composed_parts(path) for item in ("--config", str(part))]
        else:
            out.append(arg)
    return out, "+".join(names) if names else None


def composed_parts(path: Path) -> list[Path]:
    """The files a config stands for: itself, or the parts listed by its `compose:` key (resolved like `--config`)."""
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return [path]  # not ours to judge: the parser reports it with the file's name
    if isinstance(content, dict) and set(content) == {"compose"}:
        return [resolve_config(str(part)) for part in content["compose"]]
    return [path]


class UsageError(ValueError):
    """A bad option or configuration, reported as one line before any heavy work."""


def create_run_dir(config_name: str | None, root: str | os.PathLike = "runs") -> Path:
    """Create a new folder `runs/<config>/<timestamp>[-N]` exclusively: two runs started in the same second get
    two folders (`mkdir` either creates the folder or fails, so no two processes can both own one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = Path(root) / (config_name or "adhoc")
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(10_000):
        path = parent / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            path.mkdir()
            return path.resolve()
        except FileExistsError:
            continue
    raise UsageError(f"could not create a new run folder under {parent}")


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        return netrc.netrc().authenticators(host or "api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _wandb_server_reachable(timeout: float) -> str | None:
    """None if a TCP connection to the W&B server opens within `timeout` seconds, else why not."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port} unreachable ({err.strerror or type(err).__name__})"


def ensure_wandb_mode(timeout: float = 5.0) -> str:
    """Decide W&B's mode once, before any run starts, so W&B can never block or lose a run.

    Offline unless the user set `WANDB_MODE` or has credentials; an online mode whose key is missing or whose
    server does not answer within `timeout` seconds falls back to offline with one warning (sync later with
    `wandb sync`). The decision is stored in `WANDB_MODE`, so DDP ranks and later calls agree.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        mode = "online" if _wandb_has_key() else "offline"
    elif mode in ("online", "run"):
        problem = None if _wandb_has_key() else "no API key (WANDB_API_KEY or ~/.netrc)"
        problem = problem or _wandb_server_reachable(timeout)
        if problem:
            warnings.warn(f"W&B online mode not possible: {problem}; logging offline instead "
                          "(upload later with `wandb sync <run>/wandb/offline-run-*`)", stacklevel=2)
            mode = "offline"
    os.environ["WANDB_MODE"] = mode
    return mode


def start_wandb_run(**init_kwargs):
    """`wandb.init` that cannot hang or crash a run: a 10 s init timeout, then offline on any failure."""
    import wandb

    mode = ensure_wandb_mode()
    settings = wandb.Settings(init_timeout=10, silent=True)
    try:
        return wandb.init(mode=mode, settings=settings, **init_kwargs)
    except Exception as err:  # noqa: BLE001 - any W&B failure must fall back, never end the run
        if mode == "offline":
            raise
        warnings.warn(f"W&B init failed ({type(err).__name__}: {err}); logging offline instead", stacklevel=2)
        os.environ["WANDB_MODE"] = "offline"
        return wandb.init(mode="offline", settings=settings, **init_kwargs)


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_attempts(run_dir: str | os.PathLike) -> list[dict]:
    """The attempts recorded in `run_dir/attempts.json` (one per start or resume), oldest first."""
    path = Path(run_dir) / "attempts.json"
    return json.loads(path.read_text()) if path.is_file() else []


def record_attempt(run_dir: str | os.PathLike, **fields) -> list[dict]:
    """Start a new attempt (`status="running"`) or, with `status` given, update the last one; atomic."""
    attempts = read_attempts(run_dir)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    if fields.get("status", "running") == "running":
        attempts.append({"attempt": len(attempts) + 1, "started": now, **fields, "status": "running"})
    else:
        attempts[-1].update(fields, ended=now)
    _atomic_write_text(Path(run_dir) / "attempts.json", json.dumps(attempts, indent=1) + "\n")
    return attempts


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
    _atomic_write_text(path, json.dumps(summary, indent=2, default=_jsonable) + "\n")
    return path.resolve()


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def offline_wandb_records(run_dir: str | os.PathLike) -> list:
    """Every `wandb_internal_pb2.Record` of the offline W&B runs under `run_dir` (`wandb/offline-run-*/run-*.wandb`).

    The file is a LevelDB-style log (7-byte file header, 32 KiB blocks, records split FULL/FIRST/MIDDLE/LAST)
    of protobuf records; W&B 0.31 ships no reader for it, and no server or summary file is needed.
    """
    from wandb.proto import wandb_internal_pb2

    files = sorted(Path(run_dir).glob("**/offline-run-*/run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no offline W&B run file under {run_dir}")
    records = []
    for file in files:
        for payload in _leveldb_log_records(file.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
    return records


def read_offline_wandb_history(run_dir: str | os.PathLike) -> list[dict]:
    """Logged rows (`run.log` calls) of the offline W&B runs under `run_dir`, as dicts of flattened keys."""
    import json

    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in offline_wandb_records(run_dir) if record.WhichOneof("record_type") == "history"]


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


def load_run(run_dir: Path, checkpoint: str = "best"):
    """The trained model of a `train.py` run folder (`best`, `last` or a checkpoint path) and its data config."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (not a train.py run folder)")
    data = (yaml.safe_load(config_path.read_text()).get("data") or {}).get("init_args") or {}
    if checkpoint == "best":
        summary = run_dir / "summary.json"
        best = json.loads(summary.read_text()).get("best_checkpoint") if summary.is_file() else None
        path = Path(best) if best else run_dir / "checkpoints" / "last.ckpt"
    elif checkpoint == "last":
        path = run_dir / "checkpoints" / "last.ckpt"
    else:
        path = Path(checkpoint)
    from earlens.lightning_modules.checkpointing import read_checkpoint
    from earlens.lightning_modules.classifier import AudioClassifier

    checkpoint = read_checkpoint(path)  # one clear line for a missing or damaged file
    extra = {}
    frontend = (yaml.safe_load(config_path.read_text()).get("model") or {}).get("frontend")
    if frontend and not checkpoint.get("hyper_parameters", {}).get("frontend_spec"):  # runs older than the spec
        extra["frontend_spec"] = {"class_path": frontend["class_path"], "init_args": frontend.get("init_args", {})}
    model = AudioClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=False, **extra).eval()
    return model, {**data, "checkpoint": str(path)}
