"""Print a probe run's `layers.csv` as the README's per-layer table: `python bench/layers_table.py RUN_DIR [...]`.

Columns: linear-probe test accuracy of each classification target, then the helix: R², whether the layer turns with
pitch beyond smooth curves (`p_helix` and its Benjamini–Hochberg `q_helix` over the layers), the rate ω where it
turns, R² gained over the best smooth curve with as many parameters, and octave equivalence beyond smooth curves
(d_strict and its `p_octave`; RSA's chroma coefficient and its p-value). A partials run (`--config partials_*`): per
latent layer the band-presence AUC, context invariance and share of single-band units, each beside its shuffled-label
null and, where the run has one, the same architecture at random initialisation.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def partials_table(rows: list[dict]) -> str:
    init = "init/band_auc" in rows[0]
    head = ["layer", "AUC", "AUC null", "invariance", "inv. null", "split-half", "units 1-band", "random dirs 1-band"]
    keys = ["band_auc", "band_auc_null", "invariance", "invariance_null", "split_half", "unit_one_band_share",
            "random_direction_one_band_share"]
    if init:
        head += ["AUC, random init", "invariance, random init", "units 1-band, random init"]
        keys += ["init/band_auc", "init/invariance", "init/unit_one_band_share"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        if row.get("view"):  # code views: bench/partials.py prints them
            continue
        lines.append("| " + " | ".join([row["layer"], *(f"{float(row[k]):.3f}" for k in keys)]) + " |")
    return "\n".join(lines)


def table(run_dir: Path) -> str:
    rows = list(csv.DictReader(open(run_dir / "layers.csv", newline="")))
    if "band_auc" in rows[0]:
        return partials_table(rows)
    targets = [k.split("/")[0] for k in rows[0] if k.endswith("/test_accuracy")]
    helix = "helix/r2" in rows[0]
    head = ["layer", *[f"{t} test acc" for t in targets]]
    if helix:
        head += ["helix R²", "p_helix", "q_helix", "ω turn", "ΔR² vs smooth", "d_strict", "p_octave", "RSA chroma",
                 "p RSA chroma"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        cells = [row["layer_name"], *[f"{float(row[f'{t}/test_accuracy']):.3f}" for t in targets]]
        if helix:
            cells += [f"{float(row['helix/r2']):.3f}", f"{float(row['helix/p_helix']):.3f}",
                      f"{float(row['helix/q_helix']):.3f}", f"{float(row['helix/omega_periodic']):.2f}",
                      f"{float(row['helix/delta_r2_smooth']):+.3f}", f"{float(row['helix/d_strict']):+.2f}",
                      f"{float(row['helix/p_octave']):.3f}", f"{float(row['helix/rsa_chroma']):+.2f}",
                      f"{float(row['helix/p_rsa_chroma']):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for run in sys.argv[1:]:
        print(f"{Path(run).parent.name}/{Path(run).name}\n\n{table(Path(run))}\n")
