"""bench/helix_training.py reads a run's logged helicality in the callback's layer order and draws the figure."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "helix_training.py"


def load_script():
    spec = importlib.util.spec_from_file_location("helix_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(run_dir: Path, layers: list[str], r2: np.ndarray, p_helix: np.ndarray | None = None) -> None:
    (run_dir / "csv" / "version_0").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("trainer:\n  callbacks:\n"
                                         "  - class_path: earlens.callbacks.HelicalityCallback\n"
                                         "    init_args:\n      layers: [" + ", ".join(layers) + "]\n")
    columns = ["epoch", "step", "val/loss"] + sorted(f"helix/{layer}/{stat}" for layer in layers
                                                     for stat in ("r2", "p_helix", "omega_periodic", "p_octave"))
    with open(run_dir / "csv" / "version_0" / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        p_helix = np.full_like(r2, 0.5) if p_helix is None else p_helix
        for epoch, (values, p_values) in enumerate(zip(r2, p_helix)):
            writer.writerow({"epoch": epoch, "step": 10 * epoch, "val/loss": 1.0})  # a row without helicality
            writer.writerow({"epoch": epoch, "step": 10 * epoch,
                             **{f"helix/{layer}/r2": v for layer, v in zip(layers, values)},
                             **{f"helix/{layer}/p_helix": p for layer, p in zip(layers, p_values)},
                             **{f"helix/{layer}/p_octave": p for layer, p in zip(layers, p_values)},
                             **{f"helix/{layer}/omega_periodic": 0.52 for layer in layers}})


def test_reads_epochs_in_the_callbacks_layer_order_and_saves_the_figure(tmp_path, capsys):
    script = load_script()
    layers = ["frontend", "encoder.blocks.3", "encoder.blocks.11"]  # the CSV sorts 11 before 3
    r2 = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    write_run(tmp_path, layers, r2)
    epochs, names, stats = script.helicality_log(tmp_path)
    assert names == layers and list(epochs) == [0, 1]
    np.testing.assert_allclose(stats["r2"], r2)
    script.main([str(tmp_path)])
    assert "| 1 | 0.400 (q 0.500, ω 0.52)" in capsys.readouterr().out
    assert (tmp_path / "helicality_over_training.png").stat().st_size > 1000


def test_a_run_without_helicality_is_a_clear_error(tmp_path):
    (tmp_path / "csv" / "version_0").mkdir(parents=True)
    (tmp_path / "csv" / "version_0" / "metrics.csv").write_text("epoch,step,val/loss\n0,1,0.5\n")
    with pytest.raises(FileNotFoundError, match="HelicalityCallback"):
        load_script().helicality_log(tmp_path)


def test_several_runs_summarise_when_and_how_often_each_layer_is_helical(tmp_path, capsys):
    layers = ["frontend", "encoder.temporal"]
    r2 = np.array([[0.5, 0.4], [0.5, 0.6], [0.5, 0.8]])
    write_run(tmp_path / "seed0", layers, r2, np.array([[1.0, 0.5], [1.0, 0.04], [1.0, 0.01]]))
    write_run(tmp_path / "seed1", layers, r2 - 0.1, np.array([[1.0, 0.01], [1.0, 0.2], [1.0, 0.3]]))
    load_script().main([str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--alpha", "0.1"])
    summary = capsys.readouterr().out.split("2 runs, per layer")[1]
    # BH over the 12 tests: the two p = 0.01 get q = 0.06, p = 0.04 gets 0.16
    assert "| frontend | – – | 0/3 0/3 | 0/3 0/3 | 0.450 ± 0.071 | 1.000 1.000 |" in summary
    assert "| encoder.temporal | 2 0 | 1/3 1/3 | 1/3 1/3 | 0.750 ± 0.071 | 0.010 0.300 |" in summary
