"""`probe.py --config notes_crepe` end to end on real CREPE (tiny) and real rendered notes; clear errors for
checkpoints that are not on this machine."""

import csv
import json

import numpy as np
import os
import subprocess
import sys
from pathlib import Path

import pytest

from earlens.io.paths import REPO_ROOT
from earlens.lightning_modules.cli import read_offline_wandb_history

pytestmark = pytest.mark.slow  # every test here runs probe.py in a fresh process (~10 s of imports each)

def run_probe(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "probe.py"), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline", **env})


@pytest.fixture(scope="module")
def crepe_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("probe")
    result = run_probe(["--config", "notes_crepe", "--backbone.name_or_path", "tiny",  # conv1 (16384-d) left out
                        "--backbone.layers", "[conv2, conv3, conv4, conv5, conv6, classifier]",
                        "--stimuli.options", json.dumps({"programs": [0, 24, 40, 73]}),
                        "--probes.helix.n_permutations", "20", "--run_dir", str(tmp_path / "run"),
                        "--threads", "1", "--progress", "false"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "run", result


def test_summary_names_every_result(crepe_run):
    run_dir, result = crepe_run
    summary_path = Path(result.stdout.strip().splitlines()[-1])
    assert summary_path == run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert summary["config"] == "notes_crepe" and summary["backbone"]["name"] == "crepe-tiny"
    assert summary["stimuli"]["n_clips"] == 36 * 4 and summary["stimuli"]["key"]
    assert summary["feature_cache"]["shape"] == [144, 6, 1024] and summary["feature_cache"]["key"]
    for key in ("best_layer", "score_inv_mse", "r2", "z", "omega_chroma"):
        assert key in summary["helix"]
    assert summary["helix"]["n_pitches"] == 36 and summary["wall_time_s"] > 0 and "torch" in summary["versions"]
    pitch_class = summary["probes"]["pitch_class"]
    assert pitch_class["n_classes"] == 12
    assert pitch_class["test_accuracy"] > 0.6  # chance is 1/12 on 22 held-out notes
    assert summary["probes"]["octave"]["test_accuracy"] > 0.6  # chance 1/3


def test_tables_and_plots(crepe_run):
    run_dir, _ = crepe_run
    with open(run_dir / "layers.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["layer_name"] for row in rows] == ["conv2", "conv3", "conv4", "conv5", "conv6", "classifier"]
    assert max(float(row["pitch_class/test_accuracy"]) for row in rows) > 0.6
    assert json.loads((run_dir / "layers.json").read_text())[3]["layer_name"] == "conv5"
    for name in ("scores_vs_layer", "helicality_vs_layer", "helix_best_layer"):
        png = (run_dir / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # the long table: the same values, test accuracy with its Wilson interval over the 22 test notes
    with open(run_dir / "layer_metrics.csv") as file:
        long = {(row["layer"], row["metric"]): row for row in csv.DictReader(file)}
    n_test = json.loads((run_dir / "summary.json").read_text())["probes"]["pitch_class"]["n_train_val_test"][2]
    for row in rows:
        cell = long[(row["layer_name"], "pitch_class/test_accuracy")]
        p, z = float(row["pitch_class/test_accuracy"]), 1.959964
        centre = (p + z * z / (2 * n_test)) / (1 + z * z / n_test)
        half = z / (1 + z * z / n_test) * np.sqrt(p * (1 - p) / n_test + z * z / (4 * n_test ** 2))
        assert float(cell["value"]) == pytest.approx(p)
        interval = (float(cell["ci_low"]), float(cell["ci_high"]))
        assert interval == pytest.approx((centre - half, centre + half), abs=1e-6)
        omega = long[(row["layer_name"], "helix/omega_chroma")]
        assert float(omega["ci_low"]) == pytest.approx(float(row["helix/omega_ci_low"]))


def test_offline_wandb_run_holds_the_per_layer_metrics(crepe_run):
    run_dir, _ = crepe_run
    logged = {int(row["_step"]): row["pitch_class/test_accuracy"] for row in read_offline_wandb_history(run_dir)
              if "pitch_class/test_accuracy" in row}
    with open(run_dir / "layers.csv") as file:
        expected = {int(row["layer"]): float(row["pitch_class/test_accuracy"]) for row in csv.DictReader(file)}
    assert logged == pytest.approx(expected)
    history = read_offline_wandb_history(run_dir)  # metric-against-layer charts and the long table
    charts = {key.split("_table/")[0] for row in history for key in row if key.startswith("charts/")}
    assert {"charts/pitch_class/test_accuracy", "charts/octave/test_accuracy", "charts/helix/r2",
            "charts/helix/p_helix"} <= charts
    assert any(row.get("tables/layer_metrics/_type") == "table-file" for row in history)


@pytest.mark.parametrize("config, checkpoint", [("notes_musicgen_small", "facebook/musicgen-small"),
                                                ("notes_encodec", "facebook/encodec_32khz")])
def test_missing_checkpoint_fails_with_a_clear_message(config, checkpoint, tmp_path):
    result = run_probe(["--config", config], tmp_path, HF_HOME=str(tmp_path / "empty_hf"))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("probe.py: FileNotFoundError") and checkpoint in message
    assert "huggingface-cli download" in message and "HF_HOME" in message
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_probe_on_your_own_recordings_from_a_folder(tmp_path):
    """Real piano notes written as files of different lengths + labels.csv: probe.py loads them with their
    lengths, and the features equal those of the unpadded clips (padding never enters the mean)."""
    import csv as csv_module

    import soundfile as sf

    from earlens.probing.features import extract_features
    from earlens.probing.handcrafted import HandcraftedBackbone
    from earlens.stimuli.rendering import load_stimuli_table, render_stimuli

    notes = render_stimuli("notes", midi_pitches=list(range(48, 72)), programs=[0])
    folder = tmp_path / "my_notes"
    folder.mkdir()
    with open(folder / "labels.csv", "w", newline="") as file:
        writer = csv_module.writer(file)
        writer.writerow(["path", "midi_pitch", "pitch_class"])
        for i, (wave, pitch) in enumerate(zip(notes.waves, notes.labels["midi_pitch"])):
            sf.write(folder / f"note_{i}.wav", wave[: 8000 + 400 * i], 16000)  # lengths differ
            writer.writerow([f"note_{i}.wav", pitch, pitch % 12])
    stimuli = load_stimuli_table(folder / "labels.csv", sample_rate=16000)
    assert list(stimuli.lengths) == [8000 + 400 * i for i in range(24)]
    backbone = HandcraftedBackbone(layers=["mel"], sample_rate=16000)
    padded = extract_features(backbone, stimuli.waves, 16000, lengths=stimuli.lengths, cache_dir=tmp_path / "c")
    alone = extract_features(backbone, stimuli.waves[3:4, : stimuli.lengths[3]], 16000, cache_dir=tmp_path / "c")
    np.testing.assert_allclose(padded[3], alone[0], rtol=1e-5, atol=1e-4)
    result = run_probe(["--config", "notes_handcrafted", "--stimuli.concept", "folder", "--stimuli.options",
                        json.dumps({"root": str(folder)}), "--backbone.layers", "[mel]",
                        "--probes.helix.n_permutations", "5", "--progress", "false"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
    assert summary["stimuli"]["n_clips"] == 24 and Path(summary["tables"]["csv"]).is_file()
    assert list(summary["probes"]) == ["pitch_class"]  # no octave column: the table's own label columns
    header, row = result.stdout.strip().splitlines()[-3:-1]  # the per-layer table printed before the summary path
    assert header.split() == ["layer", "pitch_class/test_accuracy", "helix/r2", "helix/p_helix", "helix/q_helix",
                              "helix/omega_periodic", "helix/p_octave"]
    assert row.split()[0] == "mel" and float(row.split()[1]) == pytest.approx(
        summary["probes"]["pitch_class"]["test_accuracy"], abs=1e-3)


def test_two_process_ddp_extraction_gives_the_same_cache_and_layers(tmp_path):
    """`--trainer.devices 2 --trainer.strategy ddp` (CPU, gloo): each rank writes its share of the shards, rank 0
    assembles and probes; the cache bytes and the layer table equal a one-process run's."""
    common = ["--config", "notes_crepe", "--backbone.name_or_path", "tiny", "--stimuli.options", '{programs: [0]}',
              "--probes.helix.n_surrogates", "19", "--probes.helix.alpha", "0.05", "--threads", "1",
              "--progress", "false"]
    runs = {}
    for name, extra in (("one", []), ("ddp", ["--trainer.devices", "2", "--trainer.strategy", "ddp",
                                              "--trainer.accelerator", "cpu"])):
        result = run_probe([*common, "--features.cache_dir", str(tmp_path / f"cache_{name}"), "--run_dir",
                            str(tmp_path / name), *extra], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "feature cache: 36 clips x 7 layers" in result.stderr  # the size, printed before extracting
        assert f"on {2 if extra else 1} device(s)" in result.stderr
        runs[name] = json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
    entries = [Path(runs[name]["feature_cache"]["path"]) for name in ("one", "ddp")]
    assert entries[0].name == entries[1].name  # the same key
    assert (entries[0] / "features.npy").read_bytes() == (entries[1] / "features.npy").read_bytes()
    assert not list(entries[1].glob("shard_*"))  # assembled and cleaned up
    tables = [(tmp_path / name / "layers.csv").read_text() for name in ("one", "ddp")]
    assert tables[0] == tables[1]

    # streaming probes on 2 ranks, from the cache the DDP run left (no extraction), chosen on validation
    result = run_probe([*common, "--features.cache_dir", str(tmp_path / "cache_ddp"), "--run_dir",
                        str(tmp_path / "streaming"), "--probes.linear.protocol", "streaming", "--trainer.devices", "2",
                        "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
                        "--probes.linear.targets", "[octave]"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "feature cache:" not in result.stderr  # nothing left to extract
    octave = json.loads((tmp_path / "streaming" / "summary.json").read_text())["probes"]["octave"]
    assert octave["protocol"] == "streaming" and octave["test_accuracy"] > 0.6  # chance 1/3


def test_partials_config_writes_layer_table_plot_and_summary(tmp_path):
    """`probe.py --config partials_lyra` on a small stimulus set: real Lyra latents and codes from ../shared/data."""
    result = run_probe(["--config", "partials_lyra", "--stimuli.options", "{n_per_context: 20, n_tones: 24}",
                        "--run_dir", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["random_init_null"] is False  # a TFLite graph has nothing to re-initialise
    latent = summary["partials"]["latent"]
    assert latent["band_auc"] > latent["band_auc_null"] + 0.2  # partials decode from real latents, not from shuffles
    assert {"rvq/codebook_0", "rvq/tuple_0-3"} <= set(summary["partials"])
    with open(tmp_path / "run" / "layers.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["layer"], row["view"]) for row in rows][:2] == [("latent", ""), ("rvq", "codebook_0")]
    assert (tmp_path / "run" / "partials.png").read_bytes()[:4] == b"\x89PNG"


def test_a_model_trained_here_is_probed_against_its_random_initialisation(tmp_path):
    """`train.py --config sample_cnn_speaker` (one short epoch), then `probe.py --config partials_run` on its folder:
    every conv stage of the trained waveform encoder, with the same stages at random initialisation beside it."""
    train = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--config", "sample_cnn_speaker",
                            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                            "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
                            "--trainer.enable_progress_bar", "false", "--run_dir", str(tmp_path / "trained")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "WANDB_MODE": "offline"})
    assert train.returncode == 0, train.stderr[-3000:]
    result = run_probe(["--config", "partials_run", "--backbone.name_or_path", str(tmp_path / "trained"),
                        "--stimuli.options", "{n_bands: 6, n_per_context: 12, n_tones: 16}",
                        "--run_dir", str(tmp_path / "probe")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert summary["random_init_null"] is True and summary["backbone"]["name"].startswith("run:")
    assert list(summary["partials"]) == [f"frontend.blocks.{i}" for i in range(5)]
    with open(tmp_path / "probe" / "layers.csv") as file:
        rows = list(csv.DictReader(file))
    assert all(row["init/invariance"] not in ("", "nan") for row in rows)
    assert any(row["invariance"] != row["init/invariance"] for row in rows)  # trained weights, not the init's


def test_help_screens_are_short_and_list_every_config():
    """`--help` of probe.py and train.py: one screen each, every config of the entry point named, no line over 120
    characters (descriptions shortened at a word)."""
    configs = sorted(path.stem for path in (REPO_ROOT / "configs").glob("*.yaml"))
    training = ("gabor_", "mel_", "sample_cnn_", "ssl_")
    for script, prefixes in (("probe.py", ("notes_", "speaker_", "birdcall_", "vad_", "partials_", "scales_",
                                           "chords_", "tempos_")), ("train.py", training)):
        screen = subprocess.run([sys.executable, str(REPO_ROOT / script), "--help"], capture_output=True, text=True,
                                timeout=120, check=True).stdout
        lines = screen.splitlines()
        assert len(lines) <= 120 and max(map(len, lines)) <= 120, script
        start = next(i for i, line in enumerate(lines) if line.startswith("configs")) + 1
        listed = {line.split()[0] for line in lines[start:lines.index("", start)]}
        assert listed == {name for name in configs if name.startswith(prefixes)}, script


def test_unknown_search_is_refused_in_one_line(tmp_path):
    result = run_probe(["--config", "notes_handcrafted", "--probes.linear.protocol", "syntheory",
                        "--probes.linear.search", "random"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == ("probe.py: --probes.linear.search must be one of "
                                                      "('grid', 'halving'), got 'random'")
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()
