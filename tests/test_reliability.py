"""Fault injection: kills, unreachable or silent servers, bad options, bad files, duplicates, damaged outputs.

Each case provokes one failure and asserts the defined outcome: nothing lost, nothing silently wrong, or one clear
line naming the file or option. `docs/reliability.md` lists the cases.
"""

import contextlib
import csv
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from earlens.datamodules import AMIVADDataModule, BengaleseFinchDataModule
from earlens.datamodules.folder import FolderDataModule
from earlens.io.audio import load_audio
from earlens.io.paths import data_root
from earlens.lightning_modules import cli
from earlens.lightning_modules.checkpointing import read_checkpoint
from earlens.lightning_modules.classifier import AudioClassifier
from earlens.lightning_modules.cli import create_run_dir

REPO = Path(__file__).resolve().parent.parent
TINY = ["--trainer.limit_train_batches", "6", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
        "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "16", "--trainer.callbacks", "[]"]


def train(cwd: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"} | (env or {})
    command = [sys.executable, str(REPO / "train.py"), *args]
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=environment, **popen)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def summary_of(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


# ------------------------------------------------------------------------------------------------ data loss


SAVE_FOREVER = """
import os, sys, torch
from earlens.lightning_modules.checkpointing import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
for _ in sys.stdin:  # one forked saver per line: the imports are paid once, not once per kill
    saver = os.fork()
    if saver == 0:
        for step in range(10**6):
            io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), float(step))}, "step": step}, path)
            if step == 0:
                print(os.getpid(), flush=True)  # one save has finished
        os._exit(0)
    os.waitpid(saver, 0)
    print("killed", flush=True)
"""


def test_checkpoint_saves_survive_kill_9_at_random_instants(tmp_path):
    """20 kills at random instants of a process that keeps rewriting last.ckpt: it always loads, whole."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    rng = np.random.default_rng(0)
    forker = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    saver = None  # the running saver's pid, unreaped (so not reused) until the forker prints "killed"
    try:
        for _ in range(20):
            forker.stdin.write("save\n")
            forker.stdin.flush()
            saver = int(forker.stdout.readline())
            time.sleep(rng.uniform(0, 0.15))  # a save takes ~10-50 ms: the kill lands inside one most of the time
            os.kill(saver, signal.SIGKILL)
            assert forker.stdout.readline() == "killed\n"  # the saver is gone before last.ckpt is read
            saver = None
            checkpoint = read_checkpoint(path)
            assert torch.all(checkpoint["state_dict"]["w"] == checkpoint["step"])  # never a mix of two saves
    finally:
        if saver is not None:  # a failure left it saving
            with contextlib.suppress(ProcessLookupError):
                os.kill(saver, signal.SIGKILL)
        forker.stdin.close()
        try:
            forker.wait(timeout=60)
        finally:
            forker.kill()
            forker.stdout.close()
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert all(".tmp-" in name for name in leftovers)  # only temporaries, which a resume deletes


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    made, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        made.append(create_run_dir("gabor_vad", root=tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never replies; yields its URL."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept_forever():
        with contextlib.suppress(OSError):  # the listening socket closed: the test is over
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


@pytest.mark.slow
@pytest.mark.parametrize("server", ["closed port", "silent server"])
def test_unreachable_or_silent_wandb_server_falls_back_to_offline_quickly(tmp_path, silent_server, server):
    """Online W&B whose server refuses connections, or accepts them and never answers: one warning, an offline W&B
    run, the CSV log and summary.json (`WANDB_INIT_TIMEOUT` 2 s keeps the wait short)."""
    if server == "closed port":
        with socket.socket() as probe:  # a local port that nobody listens on
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    else:
        url = silent_server
    began = time.time()
    proc = train(tmp_path, "--config", "mel_speaker", "--trainer.max_epochs", "1", *TINY,
                 env={"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": url,
                      "WANDB_INIT_TIMEOUT": "2"})
    summary = summary_of(proc)
    assert time.time() - began < 120
    assert proc.stderr.count("logging offline") == 1
    run_dir = Path(summary["run_dir"])
    assert list(run_dir.glob("csv/version_*/metrics.csv")) and list(run_dir.glob("wandb/offline-run-*"))


def test_any_wandb_init_failure_ends_offline_or_without_wandb(monkeypatch):
    """`start_wandb_run`: a failed online init is retried offline after W&B's service is restarted (it still holds
    the run id of the failed init); a failed offline init gives None, the caller's cue to log without W&B."""
    import wandb

    calls = []

    def init(mode, **kwargs):
        calls.append(mode)
        if mode == "online" or fail_offline:
            raise RuntimeError(f"{mode} init refused")
        return "offline run"

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "teardown", lambda: calls.append("teardown"))
    monkeypatch.setattr(cli, "_wandb_server_answers", lambda timeout: None)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    for fail_offline, expected, order in ((False, "offline run", ["online", "teardown", "offline"]),
                                          (True, None, ["online", "teardown", "offline", "teardown"])):
        monkeypatch.setenv("WANDB_MODE", "online")
        calls.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cli.start_wandb_run(project="p") == expected
        assert calls == order and os.environ["WANDB_MODE"] == "offline"
        said = [str(w.message) for w in caught]
        assert "W&B online init failed (RuntimeError: online init refused)" in said[0]
        assert len(said) == 1 + fail_offline and (not fail_offline or "no W&B log" in said[1])


@pytest.mark.slow
def test_killed_run_resumes_after_its_last_finished_epoch_bit_identically(tmp_path):
    """`last.ckpt` follows every epoch whatever the monitored metric does (monitor `epoch`, mode min: nothing
    improves after epoch 0). kill -9 once epoch 1 is checkpointed, then `--config NAME --ckpt_path last`: the
    resumed run rebuilds the ablation (8 filters, the config says 16) from the run's config.yaml, never rewrites it,
    marks the killed attempt "died", trains epoch 2 only, and ends with exactly the weights and metrics of the
    uninterrupted run (RNG state is checkpointed); `predict.py --checkpoint last` runs that final model."""
    args = ["--config", "gabor_speaker", "--trainer.max_epochs", "3", "--model.frontend.init_args.n_filters", "8",
            "--checkpoint.monitor", "epoch", "--checkpoint.mode", "min", *TINY]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = summary_of(train(tmp_path / "a", *args))
    final = read_checkpoint(Path(straight["run_dir"]) / "checkpoints" / "last.ckpt")
    assert straight["best_epoch"] == 0 and (final["epoch"], final["global_step"]) == (2, 3 * 6)  # not stale
    child = train(tmp_path / "b", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, last = time.time() + 300, tmp_path / "b" / "runs" / "gabor_speaker"
    while time.time() < deadline:
        found = list(last.glob("*/checkpoints/last.ckpt"))
        if found and read_checkpoint(found[0])["epoch"] >= 1:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    run_dir = next(last.glob("*"))
    config_before = (run_dir / "config.yaml").read_text()
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1  # epoch 1 did not improve
    resumed = summary_of(train(tmp_path / "b", "--config", "gabor_speaker", "--ckpt_path", "last"))
    assert resumed["run_dir"] == str(run_dir) and (run_dir / "config.yaml").read_text() == config_before
    assert [a["status"] for a in resumed["attempts"]] == ["died", "finished"]
    with open(run_dir / "csv" / "version_1" / "metrics.csv") as file:
        validated = {row["epoch"] for row in csv.DictReader(file) if row.get("val/acc_macro")}
    assert validated == {"2"}  # the resumed attempt trained and validated epoch 2 only
    assert resumed["test_metrics"] == straight["test_metrics"]
    b = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert b["global_step"] == final["global_step"]
    assert all(torch.equal(final["state_dict"][k], b["state_dict"][k]) for k in final["state_dict"])

    clips = [data_root(dataset="fsdd") / "recordings" / f"{d}_jackson_0.wav" for d in (1, 2)]
    out = tmp_path / "predicted"
    proc = subprocess.run([sys.executable, str(REPO / "predict.py"), str(run_dir), *map(str, clips), "--checkpoint",
                           "last", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = AudioClassifier.load_from_checkpoint(Path(straight["run_dir"]) / "checkpoints" / "last.ckpt").eval()
    with open(out / "predictions.csv") as file:
        rows = list(csv.DictReader(file))
    for row, clip in zip(rows, clips):
        wave = torch.from_numpy(load_audio(clip, 16000))[None]
        with torch.no_grad():
            expected = model(wave, torch.tensor([wave.shape[1]])).softmax(-1)[0].numpy()
        names = model.hparams.class_names
        np.testing.assert_allclose([float(row[f"p_{name}"]) for name in names], expected, atol=1e-3)


# --------------------------------------------------------------------------------------- clear, early errors


@functools.cache
def load_script(name: str):
    """`train.py`, `probe.py` or `predict.py` as a module, to call its `main` in this process."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bad_inputs(tmp_path, monkeypatch) -> Path:
    """A working folder holding the inputs the bad-option cases name (upper-case names)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EARLENS_RUN_DIR", raising=False)  # main() sets it for DDP ranks; restored afterwards
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NO_RECORDINGS" / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "RANDOM.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "EMPTY.ckpt").write_bytes(b"")
    (tmp_path / "A_FILE").write_text("a file where a folder is needed")
    (tmp_path / "READ_ONLY").mkdir(mode=0o555)
    (tmp_path / "tmp").mkdir()
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["--trainer.max_epochs", "0"], "would train nothing"),
    (["--trainer.max_epochs", "-1"], "trains forever"),
    (["--trainer.max_epochs", "abc"], "--trainer.max_epochs: Expected int (got abc)"),
    (["--model.frontend.init_args.n_filters", "0"], "n_filters must be >= 1"),
    (["--model.lr", "-1"], "--model.lr -1.0: must be >= 0"),
    (["--data.init_args.sample_rate", "8000"], "--data.init_args.sample_rate 8000 != --model.frontend"),
    (["--data.init_args.root", "EMPTY"], "dataset fsdd not found"),
    (["--data.init_args.root", "NO_RECORDINGS"], "no audio files in"),
    (["--config", "gabor_folder"], "folder: --data.init_args.root DIR is required"),
    (["--ckpt_path", "RANDOM.ckpt"], "not a readable PyTorch checkpoint"),
    (["--ckpt_path", "EMPTY.ckpt"], "empty file (0 bytes)"),
    (["--run_dir", "A_FILE/run"], "--run_dir A_FILE/run: cannot write to"),
    pytest.param(["--run_dir", "READ_ONLY/run"], "--run_dir READ_ONLY/run: cannot write to",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")),
])
def test_bad_options_fail_in_one_line_and_leave_no_run_folder(bad_inputs, args, message):
    """Refused before any data are decoded or W&B starts: the error `train.py` prints (`user_error`) is one line
    naming the option, and the working folder is as it was (no runs/)."""
    train_script = load_script("train")
    before = sorted(p.name for p in bad_inputs.iterdir())
    config = [] if "--config" in args else ["--config", "gabor_speaker"]
    with pytest.raises(Exception) as caught:
        train_script.main([*config, *args])
    cause = train_script.user_error(caught.value)
    assert cause is not None and "\n" not in str(cause) and message in str(cause), caught.value
    assert sorted(p.name for p in bad_inputs.iterdir()) == before


@pytest.mark.parametrize("args, message", [
    (["--config", "gabor_folder"], "train.py: folder: --data.init_args.root DIR is required"),
    (["--config", "gabor_speaker", "--run_dir", "A_FILE/run"], "train.py: --run_dir A_FILE/run: cannot write to"),
])
@pytest.mark.slow
def test_train_cli_prints_one_line_and_leaves_nothing_outside(bad_inputs, args, message):
    """The real command: exit status 1, the one line last, no traceback, no run folder, and nothing in the
    temporary folder (W&B writes its offline run there when the run folder is not writable)."""
    before = sorted(p.name for p in bad_inputs.iterdir())
    proc = train(bad_inputs, *args, env={"TMPDIR": str(bad_inputs / "tmp")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert sorted(p.name for p in bad_inputs.iterdir()) == before
    assert {p.name for p in (bad_inputs / "tmp").iterdir()} <= {".ses"}  # onnxruntime's session id, on import


# -------------------------------------------------------------------------------------------- bad audio files


def _tone(seconds: float, rate: int, channels: int = 1, hz: float = 440.0) -> np.ndarray:
    """A sine; files meant as different recordings get different `hz` (equal audio would be left out as a copy)."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * hz * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _bad_corpus(root: Path) -> dict[str, str]:
    """A class folder per outcome; returns {file name: expected outcome} ('used' or a reason fragment)."""
    good, bad = root / "good", root / "bad"
    for folder in (good, bad):
        folder.mkdir(parents=True)
    expected = {}

    def write(name, data, rate, folder=good, outcome="used", **kwargs):
        sf.write(folder / name, data, rate, **kwargs)
        expected[name] = outcome

    write("silence.wav", np.zeros(16000), 16000)
    write("short_10ms.wav", _tone(0.01, 16000, hz=300), 16000)
    write("long_10min.flac", _tone(600, 8000, hz=310), 8000)
    write("stereo.wav", _tone(1, 16000, 2, hz=320), 16000)
    write("rate_8k.wav", _tone(1, 8000, hz=330), 8000)
    write("rate_96k.wav", _tone(1, 96000, hz=340), 96000)
    write("depth_24bit.wav", _tone(1, 16000, hz=350), 16000, subtype="PCM_24")
    write("UPPER.WAV", _tone(1, 16000, hz=360), 16000)
    write("nön-ascii_名前.wav", _tone(1, 16000, hz=370), 16000)
    sf.write(good / "tmp.mp3", _tone(1, 16000, hz=380), 16000, format="MP3")
    (good / "tmp.mp3").rename(good / "mp3_inside.wav")  # read by its content
    expected["mp3_inside.wav"] = "used"
    sf.write(good / "full.wav", _tone(1, 16000, hz=390), 16000)
    (good / "truncated.wav").write_bytes((good / "full.wav").read_bytes()[:20000])  # what is there is used
    expected |= {"full.wav": "used", "truncated.wav": "used"}
    (bad / "zero_bytes.wav").write_bytes(b"")
    (bad / "random_bytes.wav").write_bytes(np.random.default_rng(1).bytes(5000))
    (bad / "m4a_inside.wav").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    write("nan.wav", np.full(16000, np.nan), 16000, folder=bad, outcome="NaN", subtype="FLOAT")
    write("inf.wav", np.full(16000, np.inf), 16000, folder=bad, outcome="NaN", subtype="FLOAT")
    (bad / "dangling.wav").symlink_to(bad / "nowhere.wav")
    (bad / "folder.wav").mkdir()
    expected |= {"zero_bytes.wav": "unreadable", "random_bytes.wav": "unreadable", "m4a_inside.wav": "unreadable",
                 "dangling.wav": "dangling symbolic link", "folder.wav": "a directory named like an audio file"}
    return expected


def test_bad_corpus_every_case_is_used_or_skipped_with_its_reason(tmp_path):
    expected = _bad_corpus(tmp_path / "corpus")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = FolderDataModule(str(tmp_path / "corpus"), min_class_items=1, clip_seconds=0.5)
        data.setup()
    skipped = {Path(path).name: reason for path, reason in data.skipped}
    used = {Path(p).name for split in data.split_files.values() for p in split}
    for name, outcome in expected.items():
        if outcome == "used":
            assert name in used, (name, skipped.get(name))
        else:
            assert outcome in skipped[name], (name, skipped.get(name))
            assert any(name in str(w.message) for w in caught)  # each skip is also a warning naming the file
    assert data.class_names == ["good"]  # "bad" has no usable file, so it is no class


def test_rare_classes_are_dropped_and_group_splits_are_disjoint(tmp_path):
    for k, (label, n) in enumerate((("common", 12), ("other", 12), ("rare", 1))):
        (tmp_path / label).mkdir()
        for i in range(n):
            sf.write(tmp_path / label / f"spk{i % 4}_{i}.wav", _tone(0.2, 16000, hz=200 + 100 * k + 7 * i), 16000)
    with pytest.warns(UserWarning, match="rare"):
        data = FolderDataModule(str(tmp_path), group_pattern=r"^(spk\d)_", clip_seconds=0.2)
        assert data.class_names == ["common", "other"] and data.num_classes == 2
    groups = {split: {Path(p).name.split("_")[0] for p in files} for split, files in data.split_files.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])


# --------------------------------------------------------------------------------------------- annotations


def test_bad_rttm_rows_are_skipped_named_and_counted(tmp_path):
    for uri in ("a", "b", "c"):
        sf.write(tmp_path / f"{uri}.wav", _tone(10, 16000), 16000)
    for split, uri in (("train", "a"), ("development", "b"), ("test", "c")):
        (tmp_path / f"debug.{split}.lst").write_text(f"{uri}\n")
        (tmp_path / f"debug.{split}.uem").write_text(f"{uri} 1 0.0 10.0\n")
        (tmp_path / f"debug.{split}.rttm").write_text(
            f"SPEAKER {uri} 1 1.00 2.00 <NA> <NA> s1 <NA> <NA>\n")
    (tmp_path / "database.yml").write_text(
        "Protocols:\n  Debug:\n    SpeakerDiarization:\n      Debug:\n" + "".join(
            f"        {split}:\n          uri: debug.{split}.lst\n          annotation: debug.{split}.rttm\n"
            f"          annotated: debug.{split}.uem\n" for split in ("train", "development", "test"))
        + "Databases:\n  Debug: ./{uri}.wav\n")
    rttm = tmp_path / "debug.train.rttm"
    rttm.write_text("SPEAKER a 1 1.00 2.00 <NA> <NA> s1 <NA> <NA>\n"
                    "SPEAKER a 1 4.00 -3.00 <NA> <NA> s2 <NA> <NA>\n"  # negative duration
                    "SPEAKER a 1 oops 1.00 <NA> <NA> s2 <NA> <NA>\n"  # not a number
                    "SPEAKER a 1 12.00 1.00 <NA> <NA> s2 <NA> <NA>\n")  # after the end of a.wav (10 s)
    root = tmp_path.parent / "vadroot"
    (root / "ami_mini").mkdir(parents=True)
    for path in tmp_path.iterdir():
        (root / "ami_mini" / path.name).symlink_to(path)
    with pytest.warns(UserWarning, match=f"{rttm.name}:2"):
        data = AMIVADDataModule(root=str(root))
        data.setup()
    where = [w for w, _ in data.skipped]
    assert any(w.endswith("debug.train.rttm:2") for w in where) and any(w.endswith(":3") for w in where)
    assert any("starts after the end" in reason for _, reason in data.skipped) and len(data.skipped) == 3
    labels = data.split("train").labels[0]
    assert (labels == 1).sum() == 2 * 16000  # only the one valid turn is speech


def test_bird_annotations_with_string_labels_and_bad_notes(tmp_path):
    bird = tmp_path / "bengalese_finch" / "Bird0"
    (bird / "Wave").mkdir(parents=True)
    notes, sequences = [], []
    for song in range(12):
        sf.write(bird / "Wave" / f"{song}.wav", _tone(2, 32000), 32000)
        notes = "".join(f"<Note><Position>{3200 * k}</Position><Length>1600</Length><Label>{'ab'[k % 2]}</Label>"
                        "</Note>" for k in range(8))
        if song == 0:
            notes += ("<Note><Position>-999999</Position><Length>1600</Length><Label>a</Label></Note>"
                      "<Note><Position>x</Position><Length>1600</Length><Label>a</Label></Note>"
                      "<Note><Position>100</Position><Length>1600</Length><Label>once</Label></Note>")
        sequences.append(f"<Sequence><WaveFileName>{song}.wav</WaveFileName><Position>100</Position>"
                         f"<Length>60000</Length>{notes}</Sequence>")
    (bird / "Annotation.xml").write_text(f"<AnnotationSequences>{''.join(sequences)}</AnnotationSequences>")
    with pytest.warns(UserWarning):
        data = BengaleseFinchDataModule(root=str(tmp_path), sample_rate=16000)
        assert data.class_names == ["a", "b"]  # "once" is below min_class_items
    reasons = dict(data.skipped)
    assert any(w.endswith("sequence 1 note 9") and r == "negative start" for w, r in reasons.items())
    assert any(w.endswith("sequence 1 note 10") and "unreadable field" in r for w, r in reasons.items())
    assert "class 'once'" in reasons


# ------------------------------------------------------------------------------ duplicates: one recording, one split


def test_folder_and_manifest_leave_out_copies_of_a_recording(tmp_path):
    """A recording copied under another name (another class even) or listed twice is kept once: the first copy stays,
    the others are listed in `duplicates`, and no audio appears in two splits."""
    from earlens.datamodules import ManifestDataModule
    from earlens.io.audio import audio_fingerprint

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(10):
            sf.write(tmp_path / label / f"{i}.wav", rng.standard_normal(8000) * 0.1, 16000, subtype="FLOAT")
    (tmp_path / "b" / "copy_of_a0.wav").write_bytes((tmp_path / "a" / "0.wav").read_bytes())
    sf.write(tmp_path / "b" / "a1_as_flac.flac", sf.read(tmp_path / "a" / "1.wav")[0], 16000, subtype="PCM_24")
    with pytest.warns(UserWarning, match="repeat the audio"):
        folder = FolderDataModule(str(tmp_path), clip_seconds=0.5)
        folder.setup()
    assert sorted((Path(c).name, Path(k).name) for c, k in folder.duplicates) == [("copy_of_a0.wav", "0.wav")]
    # 24-bit FLAC is not bit-identical to the float WAV: a different recording as far as the content goes
    assert sum(folder.split_sizes.values()) == 21

    rows = ["path,label"] + [f"a/{i}.wav,a" for i in range(10)] + [f"b/{i}.wav,b" for i in range(10)]
    rows += ["a/3.wav,a", "b/copy_of_a0.wav,a"]  # listed twice; a copy under another name
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="2 item"):
        manifest = ManifestDataModule(str(tmp_path / "m.csv"), clip_seconds=0.5)
        manifest.setup()
    assert sorted(Path(c.split(" ")[0]).name for c, _ in manifest.duplicates) == ["m.csv:22", "m.csv:23"]
    digests = {split: {audio_fingerprint(w) for w in manifest.split(split).waves} for split in ("train", "val",
                                                                                                   "test")}
    assert sum(map(len, digests.values())) == sum(manifest.split_sizes.values()) == 20
    assert not (digests["train"] & digests["test"]) and not (digests["train"] & digests["val"])


def _notes_table(folder: Path, repeat: int) -> Path:
    """Rendered piano and guitar notes as files with a labels.csv listing each `repeat` times."""
    from earlens.stimuli.rendering import render_stimuli

    notes = render_stimuli("notes", midi_pitches=list(range(48, 72)), programs=[0, 24])
    folder.mkdir(exist_ok=True)
    rows = ["path,midi_pitch,pitch_class"]
    for i, (wave, pitch) in enumerate(zip(notes.waves, notes.labels["midi_pitch"])):
        sf.write(folder / f"note_{i}.wav", wave, 16000)
        rows += [f"note_{i}.wav,{pitch},{pitch % 12}"] * repeat
    table = folder / f"labels_{repeat}.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def test_duplicated_stimuli_rows_give_the_deduplicated_probe_scores(tmp_path, monkeypatch):
    """Every file listed twice: without deduplication copies fall on both sides of the split (MFCC and log-CQT test
    accuracy 0.67 and 1.0 here); with it the probe sees the 48 clips once and its scores equal the clean table's
    (0.0 and 0.6 on this small split), layer by layer."""
    probe_script = load_script("probe")
    monkeypatch.chdir(tmp_path)
    scores = {}
    for repeat in (1, 2):
        table = _notes_table(tmp_path / "notes", repeat)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = probe_script.main(["--config", "notes_handcrafted", "--stimuli.concept", "manifest",
                                      "--stimuli.options", json.dumps({"manifest": str(table)}),
                                      "--backbone.layers", "[mfcc, log_cqt]",
                                      "--probes.linear.targets", "[pitch_class]", "--probes.helix.enabled", "false",
                                      "--progress", "false",
                                      "--run_dir", str(tmp_path / f"run_{repeat}")])
        summary = json.loads(path.read_text())
        assert summary["stimuli"]["n_clips"] == 48
        assert summary["stimuli"]["duplicates"]["count"] == 48 * (repeat - 1)
        assert (repeat == 2) == any("repeat the audio of an earlier row" in str(w.message) for w in caught)
        with open(tmp_path / f"run_{repeat}" / "layers.csv") as file:
            scores[repeat] = [row["pitch_class/test_accuracy"] for row in csv.DictReader(file)]
    assert scores[2] == scores[1] and min(map(float, scores[1])) < 1.0  # copies in test would lift these


# ------------------------------------------------------------------ small data, without W&B: a finished run to use


BROKEN_WANDB = """
import os, runpy, sys, wandb
def refuse(*args, **kwargs):
    raise RuntimeError("W&B refused to start")
wandb.init = refuse
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python train.py` would: this checkout's earlens
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, Path]:
    """`train.py --config mel_folder` on 3 classes x 8 half-second tones plus one copy, with `wandb.init` failing:
    returns the run folder, the finished process and the data folder."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    for k, label in enumerate(("low", "mid", "high")):
        (root / "data" / label).mkdir(parents=True)
        for i in range(8):
            wave = _tone(0.5, 16000, hz=220 * 2 ** k * (1 + 0.02 * i)) + 0.01 * rng.standard_normal(8000)
            sf.write(root / "data" / label / f"{label}_{i}.wav", wave, 16000, subtype="FLOAT")
    (root / "data" / "high" / "copy.wav").write_bytes((root / "data" / "low" / "low_0.wav").read_bytes())
    environment = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"}
    proc = subprocess.run([sys.executable, "-c", BROKEN_WANDB, str(REPO / "train.py"), "--config", "mel_folder",
                           "--data.init_args.root", str(root / "data"), "--data.init_args.clip_seconds", "0.5",
                           "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
                           "--trainer.callbacks", "[]"], cwd=root, env=environment, capture_output=True, text=True,
                          timeout=600)
    summary = summary_of(proc)
    return Path(summary["run_dir"]), proc, root / "data"


@pytest.mark.slow
def test_small_data_run_reports_splits_warns_and_survives_without_wandb(small_run):
    run_dir, proc, _ = small_run
    summary = json.loads((run_dir / "summary.json").read_text())
    splits = summary["splits"]
    assert sum(splits.values()) == 24
    assert f"items per split: train {splits['train']}, val {splits['val']}, test {splits['test']}" in proc.stdout
    assert summary["duplicates"]["count"] == 1  # the first by path stays: high/copy.wav, low/low_0.wav is left out
    assert [Path(p).name for p in summary["duplicates"]["items"][0]] == ["low_0.wav", "copy.wav"]
    assert "fewer than 20 training items" in proc.stderr and "lower --data.init_args.batch_size" in proc.stderr
    assert proc.stderr.count("this run has no W&B log") == 1 and not (run_dir / "wandb").exists()
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as file:
        assert len([row for row in csv.DictReader(file) if row.get("val/acc_macro")]) == 2
    assert summary["test_metrics"]["test/acc"] >= 0 and Path(summary["best_checkpoint"]).is_file()


# ---------------------------------------------------------------------------------- predict.py: nothing processed


@pytest.mark.slow
def test_predict_fails_when_nothing_was_processed_whatever_the_input(small_run, tmp_path):
    """Missing files (with or without an audio extension), a folder without audio, a list of missing files, files
    that do not decode: each is one line on stderr, and a call that processed nothing fails (a non-zero exit) with
    no predictions table; one usable file among them is enough to succeed."""
    run_dir, _, data = small_run
    predict_script = load_script("predict")
    (tmp_path / "no_audio").mkdir()
    (tmp_path / "no_audio" / "notes.txt").write_text("not audio")
    (tmp_path / "gone.lst").write_text("missing_a.wav\nmissing_b\n")
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    for case, (inputs, message) in enumerate((
            ([tmp_path / "missing.wav", tmp_path / "missing", tmp_path / "missing.txt"], "nothing to process: 3 input"),
            ([tmp_path / "no_audio"], "no audio files in this folder"),
            ([tmp_path / "gone.lst"], "gone.lst:1"),
            ([tmp_path / "broken.wav"], "none of the 1 file(s) could be decoded"))):
        out = tmp_path / f"out_{case}"
        with pytest.raises(predict_script.NothingProcessed, match=re.escape(message)):
            predict_script.main([str(run_dir), *map(str, inputs), "--out", str(out)])
        assert not (out / "predictions.csv").exists()
    path = predict_script.main([str(run_dir), str(data / "mid" / "mid_0.wav"), str(tmp_path / "missing.wav"),
                                str(tmp_path / "broken.wav"), "--out", str(tmp_path / "mixed")])
    summary = json.loads(path.read_text())
    assert summary["n_processed"] == 1 and summary["skipped"]["count"] == 2

    proc = subprocess.run([sys.executable, str(REPO / "predict.py"), str(run_dir), str(tmp_path / "missing.wav")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("predict.py: nothing to process: 1 input(s) gave no audio")


# ------------------------------------------------------------------------------------------ report: damaged runs


def test_report_names_what_it_cannot_read_and_skips_a_cut_off_row(small_run, tmp_path):
    from earlens.report import ReportError, read_run

    run_dir = small_run[0]
    copy = tmp_path / "runs" / "mel_folder" / run_dir.name
    shutil.copytree(run_dir, copy)
    metrics = copy / "csv" / "version_0" / "metrics.csv"
    whole = read_run(copy)["epochs"]
    metrics.write_text(metrics.read_text().rstrip("\n")[:-3])  # a writer killed in the middle of the last row
    with pytest.warns(UserWarning, match=f"{re.escape(str(metrics))}: the last row is incomplete"):
        assert read_run(copy)["epochs"] == whole[:-1]

    summary = copy / "summary.json"
    summary.write_text(summary.read_text()[:200])  # cut short
    with pytest.raises(ReportError, match=f"{re.escape(str(summary))}: unreadable"):
        read_run(copy)

    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "earlens.report", str(run_dir), str(not_a_run), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not out.exists()
    assert proc.stderr.strip().splitlines() == [f"earlens.report: {not_a_run}: not a run folder (no summary.json); "
                                                "give folders that train.py or probe.py wrote, such as "
                                                "runs/<config>/<stamp>"]


# ------------------------------------------------------------------------------------ feature cache, attempts


def test_feature_cache_entry_with_an_emptied_manifest_is_rebuilt(tmp_path):
    from earlens.probing.features import extract_features
    from earlens.probing.handcrafted import HandcraftedBackbone

    waves = np.stack([_tone(0.5, 16000, hz=hz) for hz in (220, 330, 440)]).astype(np.float32)
    backbone = HandcraftedBackbone(layers=["mel"], sample_rate=16000)
    first = np.array(extract_features(backbone, waves, 16000, cache_dir=tmp_path))
    manifest = next(tmp_path.glob("*/manifest.json"))
    manifest.write_text("")
    with pytest.warns(UserWarning, match=f"{re.escape(str(manifest))} is unreadable .*rebuilding the entry"):
        again = extract_features(backbone, waves, 16000, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first)
    assert json.loads(manifest.read_text())["shape"] == list(first.shape)


def test_a_dead_attempt_is_marked_died_and_a_live_one_refuses_a_second_process(tmp_path):
    from earlens.lightning_modules.cli import UsageError, close_dead_attempt, record_attempt

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    deadline = time.monotonic() + 10  # until the child runs its own program (cmdline is the parent's before exec)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # no /proc, or another pid namespace's: nothing to wait for
            if b"sleep" not in Path(f"/proc/{other.pid}/cmdline").read_bytes():
                time.sleep(0.05)
                continue
        break
    try:
        record_attempt(tmp_path, config="x")
        attempts = json.loads((tmp_path / "attempts.json").read_text())
        attempts[-1]["pid"] = other.pid  # as if that process had started the attempt
        (tmp_path / "attempts.json").write_text(json.dumps(attempts))
        with pytest.raises(UsageError, match=f"being trained by process {other.pid}"):
            close_dead_attempt(tmp_path)
    finally:
        other.kill()
        other.wait()
    assert [a["status"] for a in close_dead_attempt(tmp_path)] == ["died"]
    assert [a["status"] for a in record_attempt(tmp_path, config="x")] == ["died", "running"]


# ------------------------------------------------------------------------------------------ probe.py: bad input


def _pitch_table(folder: Path, bad_pitch: str) -> Path:
    """A stimuli table whose row 2 names a file that does not exist and whose row 3 has `bad_pitch` as midi_pitch:
    an error about the pitch proves the table was checked before any audio was decoded."""
    folder.mkdir()
    for i in (0, 2):
        sf.write(folder / f"{i}.wav", _tone(0.5, 16000, hz=220 + 50 * i), 16000)
    rows = ["path,midi_pitch,pitch_class", "0.wav,57,9", "missing.wav,60,0", f"2.wav,{bad_pitch},0"]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("args, message", [
    (["--stimuli.concept", "folder", "--stimuli.options", "ROOT", "--probes.linear.targets", "[pitch_class]"],
     "labels.csv: column 'midi_pitch' row 3 holds 'C4', not a MIDI note number (integer)"),
    (["--stimuli.concept", "folder", "--stimuli.options", "ROOT", "--probes.linear.targets", "[instrument]"],
     "labels.csv: no label column ['instrument'] for --probes.linear.targets"),
    (["--config", "notes_crepe", "--backbone.name_or_path", "small"],
     "CREPE comes as full and tiny only (--backbone.name_or_path), got 'small'"),
    (["--probes.linear.max_epochs", "abc"], "--probes.linear.max_epochs: Expected int. Got value: abc"),
])
def test_probe_refuses_bad_input_in_one_line_before_extraction(tmp_path, monkeypatch, args, message):
    probe_script = load_script("probe")
    monkeypatch.chdir(tmp_path)
    root = _pitch_table(tmp_path / "mine", "C4")
    args = [json.dumps({"root": str(root)}) if a == "ROOT" else a for a in args]
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        config = [] if "--config" in args else ["--config", "notes_handcrafted"]
        probe_script.main([*config, "--features.cache_dir", str(tmp_path / "cache"), *args])
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_probe_cli_error_is_one_line_and_leaves_no_run_folder(tmp_path):
    root = _pitch_table(tmp_path / "mine", "sixty")
    proc = subprocess.run([sys.executable, str(REPO / "probe.py"), "--config", "notes_handcrafted", "--stimuli.concept",
                           "folder", "--stimuli.options", json.dumps({"root": str(root)}),
                           "--probes.linear.targets", "[pitch_class]"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        f"probe.py: {root / 'labels.csv'}: column 'midi_pitch' row 3 holds 'sixty', not a MIDI note number (integer); "
        "fix the column or pass --probes.helix.enabled false")
