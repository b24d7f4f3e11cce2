"""Fault injection: kills, unreachable servers, bad options, bad files and bad annotations.

Each case provokes one failure the earlier version handled badly and asserts the defined outcome: nothing lost,
nothing silently wrong, or one clear line naming the file or option.
"""

import json
import os
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
from earlens.lightning_modules.checkpointing import read_checkpoint
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
import sys, torch
from earlens.lightning_modules.checkpointing import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
for step in range(10**6):
    io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), float(step))}, "step": step}, path)
    print(step, flush=True)
"""


def test_checkpoint_saves_survive_kill_9_at_random_instants(tmp_path):
    """20 kills at random instants of a process that keeps rewriting last.ckpt: it always loads, whole."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    rng = np.random.default_rng(0)
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                                 text=True)
        child.stdout.readline()  # one save has finished
        time.sleep(rng.uniform(0, 0.15))  # a save takes ~10-50 ms: the kill lands inside one most of the time
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        checkpoint = read_checkpoint(path)
        assert torch.all(checkpoint["state_dict"]["w"] == checkpoint["step"])  # never a mix of two saves
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


def test_unreachable_wandb_server_falls_back_to_offline_quickly(tmp_path):
    with socket.socket() as probe:  # a local port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    began = time.time()
    proc = train(tmp_path, "--config", "mel_speaker", "--trainer.max_epochs", "1", *TINY,
                 env={"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40,
                      "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port}"})
    summary = summary_of(proc)
    assert time.time() - began < 120
    assert proc.stderr.count("logging offline") == 1
    run_dir = Path(summary["run_dir"])
    assert list(run_dir.glob("csv/version_*/metrics.csv")) and list(run_dir.glob("wandb/offline-run-*"))


def test_killed_run_resumes_bit_identically_from_its_own_config(tmp_path):
    """kill -9 after the first checkpoint, then `--config NAME --ckpt_path last`: the resumed run rebuilds the
    ablation (8 filters, the config says 16) from the run's config.yaml, never rewrites it, records both attempts,
    and ends with exactly the weights and metrics of the uninterrupted run (RNG state is checkpointed)."""
    args = ["--config", "gabor_speaker", "--trainer.max_epochs", "3", "--model.frontend.init_args.n_filters", "8",
            "--trainer.logger", "false", *TINY]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = summary_of(train(tmp_path / "a", *args))
    child = train(tmp_path / "b", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((tmp_path / "b").glob("runs/*/*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    run_dir = next((tmp_path / "b").glob("runs/gabor_speaker/*"))
    config_before = (run_dir / "config.yaml").read_text()
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] < 2
    resumed = summary_of(train(tmp_path / "b", "--config", "gabor_speaker", "--ckpt_path", "last"))
    assert resumed["run_dir"] == str(run_dir) and (run_dir / "config.yaml").read_text() == config_before
    assert [a["status"] for a in resumed["attempts"]] == ["running", "finished"]  # the first never ended
    assert resumed["test_metrics"] == straight["test_metrics"]
    a = read_checkpoint(Path(straight["run_dir"]) / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------- clear, early errors


@pytest.mark.parametrize("args, message", [
    (["--trainer.max_epochs", "0"], "would train nothing"),
    (["--trainer.max_epochs", "-1"], "trains forever"),
    (["--model.frontend.init_args.n_filters", "0"], "n_filters must be >= 1"),
    (["--data.init_args.root", "EMPTY"], "dataset fsdd not found"),
    (["--data.init_args.root", "NO_RECORDINGS"], "no audio files in"),
    (["--ckpt_path", "RANDOM.ckpt"], "not a readable PyTorch checkpoint"),
    (["--ckpt_path", "EMPTY.ckpt"], "empty file (0 bytes)"),
])
def test_bad_options_fail_in_one_line_and_leave_no_run_folder(tmp_path, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NO_RECORDINGS" / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "RANDOM.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "EMPTY.ckpt").write_bytes(b"")
    args = [str(tmp_path / a) if a.isupper() or a.endswith(".ckpt") else a for a in args]
    proc = train(tmp_path, "--config", "gabor_speaker", *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("train.py: ") and message in proc.stderr
    assert not list(tmp_path.glob("runs/*/*"))


# -------------------------------------------------------------------------------------------- bad audio files


def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
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
    write("short_10ms.wav", _tone(0.01, 16000), 16000)
    write("long_10min.flac", _tone(600, 8000), 8000)
    write("stereo.wav", _tone(1, 16000, 2), 16000)
    write("rate_8k.wav", _tone(1, 8000), 8000)
    write("rate_96k.wav", _tone(1, 96000), 96000)
    write("depth_24bit.wav", _tone(1, 16000), 16000, subtype="PCM_24")
    write("UPPER.WAV", _tone(1, 16000), 16000)
    write("nön-ascii_名前.wav", _tone(1, 16000), 16000)
    sf.write(good / "tmp.mp3", _tone(1, 16000), 16000, format="MP3")
    (good / "tmp.mp3").rename(good / "mp3_inside.wav")  # read by its content
    expected["mp3_inside.wav"] = "used"
    sf.write(good / "full.wav", _tone(1, 16000), 16000)
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
    for label, n in (("common", 12), ("other", 12), ("rare", 1)):
        (tmp_path / label).mkdir()
        for i in range(n):
            sf.write(tmp_path / label / f"spk{i % 4}_{i}.wav", _tone(0.2, 16000), 16000)
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
