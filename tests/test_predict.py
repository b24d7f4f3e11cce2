"""`predict.py` on new recordings, and the VAD metric against `pyannote.metrics`."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from pyannote.core import Annotation, Segment
from pyannote.database.util import load_rttm, load_uem
from pyannote.metrics.detection import DetectionErrorRate as PyannoteDER

from earlens.io.audio import load_audio
from earlens.io.paths import data_root
from earlens.io.vad import speech_regions
from earlens.lightning_modules.classifier import AudioClassifier, DetectionErrorRate

REPO = Path(__file__).resolve().parent.parent
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--trainer.callbacks", "[]"]


def run(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"}
    proc = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_training_detection_error_rate_equals_pyannote_at_collar_0():
    """Frame decisions at a 10 ms hop, as segments that tile time: the frame-counted metric used in training and
    pyannote.metrics' duration-based one agree exactly."""
    rng = np.random.default_rng(0)
    hop = 0.01
    truth = (np.convolve(rng.random(3000) > 0.5, np.ones(40), "same") > 20).astype(int)  # runs of speech
    prob = np.clip(truth * 0.7 + rng.random(3000) * 0.5, 0, 1)
    ours = DetectionErrorRate()
    ours.update(torch.tensor(prob), torch.tensor(truth))

    def annotation(frames):
        result = Annotation(uri="x")
        edges = np.flatnonzero(np.diff(np.r_[0, frames, 0]))
        for start, stop in edges.reshape(-1, 2):
            result[Segment(start * hop, stop * hop)] = "speech"
        return result

    theirs = PyannoteDER(collar=0.0)(annotation(truth), annotation((prob >= 0.5).astype(int)))
    assert float(ours.compute()) == pytest.approx(theirs, abs=1e-9)


def test_speech_regions_hysteresis_and_minimum_durations():
    p = np.array([0.1, 0.6, 0.45, 0.6, 0.2, 0.2, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.3])
    # onset 0.5 / offset 0.4: 0.45 keeps the first region open; one-frame region at 6 survives without a minimum
    assert speech_regions(p, 1.0, 0.5, 0.4, 0.0, 0.0) == [(0.5, 3.5), (5.5, 6.5), (9.5, 12.5)]
    assert speech_regions(p, 1.0, 0.5, 0.4, 2.0, 0.0) == [(0.5, 3.5), (9.5, 12.5)]  # shorter than 2 s dropped
    assert speech_regions(p, 1.0, 0.5, 0.4, 0.0, 2.5) == [(0.5, 6.5), (9.5, 12.5)]  # 2-s gap filled


@pytest.fixture(scope="module")
def vad_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("vad")
    summary = run("train.py", cwd, "--config", "gabor_vad", *TINY).stdout.strip().splitlines()[-1]
    return Path(json.loads(Path(summary).read_text())["run_dir"])


@pytest.mark.slow
def test_vad_prediction_writes_rttm_and_scores_with_pyannote(vad_run, tmp_path):
    ami = data_root(dataset="ami_mini")
    proc = run("predict.py", tmp_path, str(vad_run), str(ami / "debug.test.lst"), "--out", str(tmp_path / "out"),
               "--reference", str(ami / "debug.test.rttm"), "--uem", str(ami / "debug.test.uem"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(Path(p).name for p in summary["rttm"]) == ["tst00.rttm", "tst01.rttm"]
    assert "detection error rate" in proc.stdout
    # the reported score is pyannote's on the written files
    references, uems = load_rttm(ami / "debug.test.rttm"), load_uem(ami / "debug.test.uem")
    metric = PyannoteDER(collar=0.0)
    for rttm in summary["rttm"]:
        uri = Path(rttm).stem
        hypothesis = next(iter(load_rttm(rttm).values()), Annotation(uri=uri))
        metric(references[uri], hypothesis, uem=uems[uri])
    assert summary["scores"]["detection_error_rate"] == pytest.approx(abs(metric), abs=1e-9)
    frames = list(csv.DictReader(open(tmp_path / "out" / "tst00.frames.csv")))
    duration = len(load_audio(ami / "tst00.wav", 16000)) / 16000
    assert float(frames[-1]["time_s"]) == pytest.approx(duration, abs=0.01)
    assert all(0.0 <= float(r["speech_prob"]) <= 1.0 for r in frames)


@pytest.mark.slow
def test_clip_prediction_matches_the_model_and_survives_bad_files(tmp_path):
    summary = run("train.py", tmp_path, "--config", "gabor_speaker", *TINY).stdout.strip().splitlines()[-1]
    run_dir = Path(json.loads(Path(summary).read_text())["run_dir"])
    recordings = data_root(dataset="fsdd") / "recordings"
    clips = [recordings / f"{d}_theo_0.wav" for d in range(3)]
    long = np.concatenate([load_audio(c, 16000) for c in clips] * 3)  # several windows of the 1 s training clip
    sf.write(tmp_path / "long.wav", long, 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join([*map(str, clips), "long.wav", "broken.wav"]))
    proc = run("predict.py", tmp_path, str(run_dir), str(listing), "--out", str(tmp_path / "out"))
    assert "broken.wav" in proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(rows) == 4 and json.loads((tmp_path / "out" / "summary.json").read_text())["skipped"]["count"] == 1
    model = AudioClassifier.load_from_checkpoint(json.loads(Path(summary).read_text())["best_checkpoint"]).eval()
    names = model.hparams.class_names
    for row, clip in zip(rows[:3], clips):
        wave = torch.from_numpy(load_audio(clip, 16000))[None]
        with torch.no_grad():
            expected = model(wave, torch.tensor([wave.shape[1]])).softmax(-1)[0]
        assert row["label"] == names[int(expected.argmax())] and row["n_windows"] == "1"
        np.testing.assert_allclose([float(row[f"p_{n}"]) for n in names], expected.numpy(), atol=1e-3)
    assert int(rows[3]["n_windows"]) > 1
