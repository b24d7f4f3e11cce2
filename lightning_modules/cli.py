"""Conventions shared by `train.py` and `probe.py`: `--config NAME`, run folders, loggers, `summary.json`."""

from __future__ import annotations

import contextlib
import http.client
import json
import netrc
import os
import re
import shutil
import socket
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import warnings
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import yaml

from earlens.io.paths import REPO_ROOT

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


def quiet_startup(verbose: bool = False) -> None:
    """Drop start-up noise that says nothing about the run (Lightning's LitLogger tip, W&B's console chatter) and,
    unless `verbose` (`--verbose`), Lightning's informational lines (GPU/TPU available, ...) and its known
    deprecation warnings."""
    import logging

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "litlogger" not in record.getMessage().lower())
        if not verbose:
            logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended to run from within")
    if not verbose:
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def pop_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """Remove `--verbose` from argv; whether it was there."""
    return [arg for arg in argv if arg != "--verbose"], "--verbose" in argv


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
    lines += [f"  {name:<{width}}  {textwrap.shorten(about, 110 - width, placeholder=' …')}" for name, about in configs]
    lines += ["", "common options:"]
    for flag, about in options:  # long descriptions continue on indented lines
        wrapped = textwrap.wrap(about, 116 - width) or [""]
        lines += [f"  {flag:<{width}}  {wrapped[0]}"] + [f"  {'':<{width}}  {more}" for more in wrapped[1:]]
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


def is_launcher() -> bool:
    """The process the user started (rank 0 of node 0), as opposed to the DDP ranks Lightning launches."""
    return not os.environ.get("LOCAL_RANK") and int(os.environ.get("NODE_RANK", 0)) == 0


class UsageError(ValueError):
    """A bad option or configuration, reported as one line before any heavy work."""


def create_run_dir(config_name: str | None, root: str | os.PathLike = "runs") -> Path:
    """Create a new folder `runs/<config>/<timestamp>[-N]` exclusively: two runs started in the same second get
    two folders (`mkdir` either creates the folder or fails, so no two processes can both own one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = Path(root) / (config_name or "adhoc")
    _make_writable_folder(parent, "the runs folder")
    for suffix in range(10_000):
        path = parent / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            path.mkdir()
            return path.resolve()
        except FileExistsError:
            continue
    raise UsageError(f"could not create a new run folder under {parent}")


def claim_run_dir(run_dir: str | os.PathLike | None, config_name: str | None) -> tuple[Path, Path | None]:
    """The run's folder, checked writable before any data are decoded or W&B starts: `run_dir` (created if
    missing) or a new `runs/<config>/<timestamp>`. Returns the folder and the top-most folder this call created
    (None if it existed), which `remove_failed_run_dir` takes away again when the start fails."""
    if run_dir is None:
        top = _first_missing(Path("runs") / (config_name or "adhoc"))
        folder = create_run_dir(config_name)
        return folder, top.resolve() if top else folder
    folder = Path(run_dir).resolve()
    top = _first_missing(folder)
    _make_writable_folder(folder, f"--run_dir {run_dir}")
    return folder, top


def _first_missing(path: Path) -> Path | None:
    """The top-most of `path` and its parents that does not exist yet."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _make_writable_folder(folder: Path, what: str) -> None:
    """`mkdir -p folder` and write a probe file in it; any failure is one `UsageError` line naming the folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()  # unique name, gone when closed
    except OSError as err:
        raise UsageError(f"{what}: cannot write to {folder} ({err.strerror or type(err).__name__}); "
                         "choose a writable folder") from None


def remove_failed_run_dir(folder: Path, created: Path | None) -> None:
    """Take away the folders `claim_run_dir` created for a start that failed before the run produced anything
    (no checkpoint, no summary): the run folder, then each created parent left empty (never another run's)."""
    if created is None or any(folder.rglob("*.ckpt")) or (folder / "summary.json").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if not parent.is_relative_to(created):
            break
        with contextlib.suppress(OSError):
            parent.rmdir()  # only if empty


def parse_error_line(message: str) -> str:
    """One line from a jsonargparse error (`Parser key "trainer.max_epochs": ... Given value: abc`): the option,
    the reasons other than 'expected None', and the value given."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)":', lines[0]) if lines else None
    reasons, given = [], None
    for line in lines[1:] if key else lines:
        if line.startswith("Given value:"):
            given = line.split(":", 1)[1].strip()
        elif line.startswith("- "):
            reasons.append(line[2:])
        elif reasons and not line.startswith(("Subtypes:", "Errors:", "Given value type:")):
            reasons[-1] += " " + line  # the continuation of a listed reason
        elif not line.startswith(("Subtypes:", "Errors:", "Given value type:", "Does not validate")):
            reasons.append(line)
    text = "; ".join(dict.fromkeys(r for r in reasons if "NoneType" not in r)) or message.strip()
    text = re.sub(r"(?:an? )?<class '([\w.]+)'>", r"\1", text)
    if given is not None and len(given) < 80 and "Got value" not in text:
        text += f" (got {given})"
    return f"--{key.group(1)}: {text}" if key else text


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        return netrc.netrc().authenticators(host or "api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_timeout() -> float:
    """Seconds the W&B server may take to answer: W&B's own `WANDB_INIT_TIMEOUT` (default 10) bounds both the
    server check and `wandb.init`."""
    return float(os.environ.get("WANDB_INIT_TIMEOUT", 10))


def _wandb_server_answers(timeout: float) -> str | None:
    """None if the W&B server answers an HTTP request (any status) within `timeout` seconds, else why not. A port
    that accepts connections but never replies fails here, before `wandb.init` (and W&B's own analytics) would
    wait on it."""
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # an HTTP error status is an answer
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return f"{url} did not answer within {timeout:g} s ({reason})"
    return None


def ensure_wandb_mode() -> str:
    """Decide W&B's mode once, before any run starts, so W&B can never block or lose a run.

    Offline unless the user set `WANDB_MODE` or has credentials; an online mode whose key is missing or whose
    server does not answer within `wandb_timeout()` seconds falls back to offline with one warning (sync later with
    `wandb sync`). The decision is stored in `WANDB_MODE`, so DDP ranks and later calls agree.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        mode = "online" if _wandb_has_key() else "offline"
    if mode in ("online", "run"):
        problem = None if _wandb_has_key() else "no API key (WANDB_API_KEY or ~/.netrc)"
        problem = problem or _wandb_server_answers(wandb_timeout())
        if problem:
            warnings.warn(f"W&B online mode not possible: {problem}; logging offline instead "
                          "(upload later with `wandb sync <run>/wandb/offline-run-*`)", stacklevel=2)
            mode = "offline"
    os.environ["WANDB_MODE"] = mode
    return mode


def start_wandb_run(**init_kwargs):
    """`wandb.init` that cannot hang or crash a run: online init gives up after `wandb_timeout()` seconds, then
    W&B is restarted offline; if that fails too the run goes on without W&B (returns None),
    its CSV log and `summary.json` unaffected. Every fallback is one warning."""
    import wandb

    mode = ensure_wandb_mode()
    settings = wandb.Settings(init_timeout=wandb_timeout(), silent=True)
    try:
        return wandb.init(mode=mode, settings=settings, **init_kwargs)
    except Exception as err:  # noqa: BLE001 - any W&B failure must fall back, never end the run
        problem = _first_line(err)
    if mode != "offline":
        warnings.warn(f"W&B {mode} init failed ({problem}); logging offline instead", stacklevel=2)
        os.environ["WANDB_MODE"] = "offline"
        try:
            wandb.teardown()  # the service still holds the run id of the failed init ("run ID ... is in use")
            return wandb.init(mode="offline", settings=settings, **init_kwargs)
        except Exception as err:  # noqa: BLE001
            problem = _first_line(err)
    warnings.warn(f"W&B offline init failed ({problem}); this run has no W&B log (CSV log and summary.json "
                  "are written as usual)", stacklevel=2)
    with contextlib.suppress(Exception):
        wandb.teardown()
    return None


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_attempts(run_dir: str | os.PathLike) -> list[dict]:
    """The attempts recorded in `run_dir/attempts.json` (one per start or resume), oldest first."""
    path = Path(run_dir) / "attempts.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise UsageError(f"{path}: not valid JSON ({err}); move it aside to start a new attempt record") from None


def record_attempt(run_dir: str | os.PathLike, **fields) -> list[dict]:
    """Start a new attempt (`status="running"`, with host and pid) or, with `status` given, update the last one;
    atomic. Call `close_dead_attempt` before a new attempt starts."""
    attempts = read_attempts(run_dir)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    if fields.get("status", "running") == "running":
        attempts.append({"attempt": len(attempts) + 1, "started": now, "host": socket.gethostname(),
                         "pid": os.getpid(), **fields, "status": "running"})
    else:
        attempts[-1].update(fields, ended=now)
    _atomic_write_text(Path(run_dir) / "attempts.json", json.dumps(attempts, indent=1) + "\n")
    return attempts


def close_dead_attempt(run_dir: str | os.PathLike) -> list[dict]:
    """Mark a last attempt still "running" whose process is gone (killed, crashed, machine lost) as "died"; refuse
    in one line while that process is alive on this host (two processes must not train into one folder)."""
    attempts = read_attempts(run_dir)
    last = attempts[-1] if attempts else None
    if last is None or last.get("status") != "running":
        return attempts
    if last.get("host") == socket.gethostname() and _process_alive(last.get("pid")):
        raise UsageError(f"{run_dir} is being trained by process {last['pid']} (its attempts.json); wait for it to "
                         "end")
    last.update(status="died", died_noticed=time.strftime("%Y-%m-%dT%H:%M:%S"))
    _atomic_write_text(Path(run_dir) / "attempts.json", json.dumps(attempts, indent=1) + "\n")
    return attempts


def _process_alive(pid) -> bool:
    """Whether `pid` is a live process on this host that may be a Python run: signal 0 decides; where `/proc`
    belongs to this pid namespace, a zombie or a pid reused by another program (its command line names no python)
    counts as gone."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        if int(os.readlink("/proc/self")) != os.getpid():
            return True  # a /proc of another pid namespace says nothing about our pids
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return True
    if state in ("Z", "X"):  # a zombie: exited, not yet reaped
        return False
    return not command or b"python" in command  # empty while a new process is still being exec'd


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
