"""The interp config's three callbacks under 2-process CPU DDP log what 1 process logs, in the CSV and in W&B.

Both runs see the same real FSDD clips, linked into a temporary data root: one training clip (take 0 of one
recording), 120 validation clips (takes 1-2) and 60 test clips (take 3). With a single training clip, the sampler
gives it (and its random crop seed) to both DDP ranks, so every BatchNorm updates its running statistics exactly
as in the 1-process run; lr 0 keeps the weights at their seeded init. Every logged value (filter statistics,
helix fits of layers after BatchNorm, k-means unit counts) is therefore equal in principle. 120 validation clips
split evenly, so DistributedSampler pads nothing.
"""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from earlens.io.paths import data_root
from earlens.lightning_modules.cli import read_offline_wandb_history

REPO = Path(__file__).resolve().parent.parent
TRAIN_CLIP = "0_george_0.wav"
COUNT_FIELDS = ("n_tokens", "vocab_size", "xmin")


def fsdd_subset(root: Path) -> Path:
    """`root/fsdd/recordings`: symlinks to one take-0 recording and every take 1-3 recording (181 clips)."""
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for path in (data_root(dataset="fsdd") / "recordings").glob("*.wav"):
        take = re.fullmatch(r"\d_[A-Za-z]+_(\d+)\.wav", path.name)
        if take and (int(take.group(1)) in (1, 2, 3) or path.name == TRAIN_CLIP):
            (recordings / path.name).symlink_to(path)
    return root


def train(cwd: Path, data: Path, devices: int) -> tuple[dict[str, float], Path]:
    """Run `train.py --config gabor_speaker_interp`; the callbacks' logged values (one row) and the run folder."""
    args = ["--config", "gabor_speaker_interp", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu", "--model.lr", "0.0",
            "--data.init_args.root", str(data), "--data.init_args.val_first_take", "1",
            "--data.init_args.test_first_take", "3", "--data.init_args.batch_size", "30",
            "--trainer.devices", str(devices)]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    env = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"} | {"WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if k.startswith(("filters/", "helix/", "zipf/")) and v}
                for row in csv.DictReader(f)]
    logged = [row for row in rows if row]
    assert len(logged) == 1, logged  # one validation epoch: every callback logs once, in the same row
    return logged[0], run_dir


@pytest.mark.slow
def test_two_process_ddp_logs_what_one_process_logs(tmp_path):
    data = fsdd_subset(tmp_path / "data")
    single, _ = train(tmp_path, data, devices=1)
    double, run_dir = train(tmp_path, data, devices=2)

    layers = ("frontend", "encoder.blocks.7", "encoder.temporal")
    assert {f"helix/{layer}/{name}" for layer in layers for name in ("score", "r2", "null_z", "omega_chroma")} \
        <= set(single)
    assert {"filters/frontend.filterbank/rate_hz_q50", "zipf/alpha_zm", "zipf/trigram_heaps_beta"} <= set(single)
    assert set(single) == set(double)
    # 13 encoder frames per 1 s window; padding frames of the shorter clips are not tokens.
    assert 0 < single["zipf/n_tokens"] == double["zipf/n_tokens"] < 120 * 13
    assert single["zipf/vocab_size"] == 50
    for key, value in single.items():
        if key.endswith(COUNT_FIELDS):
            assert double[key] == value, key
        else:
            assert double[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key

    # Only rank 0 writes W&B: its offline run file holds the same scalars and the callbacks' images.
    history = read_offline_wandb_history(run_dir)
    scalars = {k: v for row in history for k, v in row.items() if k in double}
    assert scalars == pytest.approx(double, rel=1e-6, nan_ok=True)
    media = {k.rsplit("/", 1)[0] for row in history for k in row if k.endswith("/_type")}
    assert {"helix/best_layer", "zipf/rank_frequency", "filters/frontend.filterbank/kernels",
            "filters/frontend.filterbank/rate_scale", "filters/frontend.filterbank/rate_hz"} <= media
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
