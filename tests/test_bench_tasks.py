"""bench/tasks.py's paired comparison of two frontends, run by run (is learning the filters better than freezing
them?): no difference for identical runs, a clear one for a consistent shift, and no pairing of unlike runs."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "tasks.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_tasks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runs(accuracies, seeds=None):
    seeds = range(len(accuracies)) if seeds is None else seeds
    return [{"seed": s, "test_metrics": {"test/acc": a}} for s, a in zip(seeds, accuracies)]


def row(text: str, task: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {task} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_identical_runs_show_no_difference():
    bench = load_script()
    same = [0.80, 0.75, 0.90, 0.70, 0.85]
    cells = row(bench.paired_differences({"scene/a": runs(same), "scene/b": runs(same)}, "a", "b"), "scene")
    assert cells[2].split() == ["+0.000"] * 5 and cells[3] == "+0.000" and cells[5] == "1.00"


def test_a_consistent_shift_is_found_and_matches_scipy():
    bench = load_script()
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 8)
    shifted = base + 0.05 + rng.normal(0, 0.005, 8)
    cells = row(bench.paired_differences({"scene/a": runs(shifted), "scene/b": runs(base)}, "a", "b"), "scene")
    t, p = ttest_rel(shifted, base)
    assert float(cells[3]) == pytest.approx(0.05, abs=0.005) and float(cells[4]) == pytest.approx(t, abs=0.01)
    assert float(cells[5]) < 0.01 and float(cells[5]) == pytest.approx(p, abs=0.01)


def test_runs_of_other_seeds_are_not_paired():
    bench = load_script()
    results = {"vad/a": runs([0.9, 0.8, 0.85]), "vad/b": runs([0.9, 0.8, 0.85], seeds=[3, 4, 5])}
    with pytest.raises(SystemExit, match="different seeds"):
        bench.paired_differences(results, "a", "b")
    assert "| vad |" not in bench.paired_differences({"vad/a": runs([0.9])}, "a", "b")  # one side missing
