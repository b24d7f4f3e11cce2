"""`train.py` end to end on real FSDD: summary.json, checkpoints, CSV + offline W&B logs, resume, 2-process DDP."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from earlens.lightning_modules.cli import (expand_config_args, offline_wandb_records, read_offline_wandb_history,
                                   resolve_config)

REPO = Path(__file__).resolve().parent.parent
TINY = ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
        "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "8"]


def run_train(cwd: Path, *args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.name == "summary.json" and path.is_file(), proc.stdout[-2000:]
    return json.loads(path.read_text())


def csv_rows(run_dir: Path) -> list[dict]:
    """Rows of every attempt's CSV log (`csv/version_N/metrics.csv`; a resumed run adds a version)."""
    rows = []
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def test_config_names_resolve_to_files_and_compositions_to_their_parts():
    assert resolve_config("gabor_vad") == REPO / "configs" / "gabor_vad.yaml"
    argv, name = expand_config_args(["--config", "mel_scene", "--trainer.max_epochs=1"])
    parts = [str(REPO / "configs" / "task" / "scene.yaml"), str(REPO / "configs" / "frontend" / "mel.yaml")]
    assert name == "mel_scene" and argv == ["--config", parts[0], "--config", parts[1], "--trainer.max_epochs=1"]
    argv, name = expand_config_args(["--config", "task/scene", "--config=frontend/mel"])
    assert name == "scene+mel" and argv == ["--config", parts[0], "--config", parts[1]]
    argv, name = expand_config_args(["--config", "gabor_speaker_interp"])  # a whole config stays one file
    assert argv == ["--config", str(REPO / "configs" / "gabor_speaker_interp.yaml")]
    with pytest.raises(FileNotFoundError, match="gabor_vad"):
        resolve_config("no_such_experiment")


@pytest.mark.slow
def test_fit_test_summary_and_logs(tmp_path):
    proc = run_train(tmp_path, "--config", "gabor_speaker", "--trainer.max_epochs", "2", *TINY)
    summary = summary_of(proc)
    run_dir = Path(summary["run_dir"])
    assert summary["config"] == "gabor_speaker"
    assert summary["epochs_run"] == 2 and summary["best_epoch"] in (0, 1)
    assert {"test/acc", "test/acc_macro", "test/f1_macro"} <= set(summary["test_metrics"])
    assert all(0.0 <= v <= 1.0 for k, v in summary["test_metrics"].items() if k != "test/loss")
    assert {"torch", "pytorch-lightning", "python"} <= set(summary["versions"])
    assert Path(summary["data_root"]).name == "fsdd" and summary["skipped"]["count"] == 0
    assert summary["params"]["frontend"] > 0 and summary["wall_time_s"] > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and Path(summary["best_checkpoint"]).is_file()
    best = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=False)
    assert best["epoch"] == summary["best_epoch"]

    # The CSV log and the offline W&B run file hold the same per-epoch validation values.
    csv_val = [float(r["val/acc_macro"]) for r in csv_rows(run_dir) if r.get("val/acc_macro")]
    wandb_val = [r["val/acc_macro"] for r in read_offline_wandb_history(run_dir) if "val/acc_macro" in r]
    assert len(csv_val) == 2 and wandb_val == pytest.approx(csv_val)
    assert summary["best_score"] == pytest.approx(max(csv_val))

    # the best checkpoint, config and summary are one W&B model artifact, recorded offline for `wandb sync`
    artifacts = [sorted(m.path for m in record.artifact.manifest.contents) for record in offline_wandb_records(run_dir)
                 if record.WhichOneof("record_type") == "artifact" and record.artifact.type == "model"]
    assert artifacts == [sorted([Path(summary["best_checkpoint"]).name, "config.yaml", "summary.json"])]


@pytest.mark.slow
def test_resume_of_a_finished_run_does_nothing_and_ablations_resume_from_their_own_config(tmp_path):
    """`--ckpt_path last` rebuilds the newest run from its own config.yaml (an ablation with 8 filters, not the
    config's 16), never rewrites it, and a finished run is left alone."""
    first = summary_of(run_train(tmp_path, "--config", "gabor_speaker", "--trainer.max_epochs", "1",
                                 "--model.frontend.init_args.n_filters", "8", *TINY))
    run_dir = Path(first["run_dir"])
    config_before = (run_dir / "config.yaml").read_text()
    again = run_train(tmp_path, "--config", "gabor_speaker", "--ckpt_path", "last")
    assert "is finished" in again.stdout and "nothing to do" in again.stdout
    same = run_train(tmp_path, "--config", str(run_dir / "config.yaml"), "--ckpt_path", "last")
    assert "is finished" in same.stdout
    assert (run_dir / "config.yaml").read_text() == config_before
    assert json.loads((run_dir / "summary.json").read_text())["wall_time_s"] == first["wall_time_s"]


@pytest.mark.slow
def test_two_process_ddp_fit(tmp_path):
    proc = run_train(tmp_path, "--config", "gabor_speaker", "--trainer.max_epochs", "1", "--trainer.accelerator",
                     "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", *TINY)
    summary = summary_of(proc)
    assert summary["world_size"] == 2
    assert proc.stdout.count("summary.json") == 1  # only rank 0 writes and prints the summary
    assert 0.0 <= summary["test_metrics"]["test/acc"] <= 1.0


@pytest.mark.slow
def test_missing_data_is_a_clear_error(tmp_path):
    proc = run_train(tmp_path, "--config", "gabor_speaker", "--data.init_args.root", str(tmp_path / "nowhere"),
                     expect_ok=False)
    assert proc.returncode != 0
    assert "nowhere" in proc.stderr and "EARLENS_DATA" in proc.stderr
