"""What each layer of every offline network (and the handcrafted features) knows about pitch: per layer, linear
pitch-class and octave accuracy, the octave accuracy of a gain-invariant probe, and the helix probe's statistics
(`earlens.probing.helicality.helix_probe`), on the notes of `configs/notes_*.yaml` (C3-B5 on 8 SynTheory instruments,
288 clips of 1.5 s, rendered at each model's own rate); accuracies are test accuracies averaged over `--splits`
seeded splits.

    OMP_NUM_THREADS=1 python bench/pitch_layers.py --out runs/pitch_layers.csv      # every model, tables printed
    python bench/pitch_layers.py --models deep_chroma fcpe                          # some of them
    python bench/pitch_layers.py --helix-columns r2 p_helix octave_index p_octave   # which helix statistics to print

Features are cached (`earlens.probing.features`), so a re-run only probes: after a change of the helix statistics, rerun
with the new statistic names in `--helix-columns` (any key of `HelixProbeResult.layer_stats()`; an unknown one
prints "—"); the CSV holds every statistic of every layer. The controls printed last: a network trained to output
chroma (`deep_chroma`'s `chroma`) must come out octave-equivalent (octave index high, gain-invariant octave
accuracy near chance, pitch class perfect), a pitch-height network's output (`fcpe`'s `latent`) must not.

Octave accuracy is probed twice: on the clip means as they are, and on each clip's layer vector scaled to unit norm
(`octave (unit)`). A representation whose direction is the same an octave apart can still carry octave in its
length (how much of the note its filters catch and how long it sounds), which the first probe reads; octave
equivalence is a statement about the direction.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.models.backbones import load_backbone  # noqa: E402
from earlens.probing.features import extract_features  # noqa: E402
from earlens.probing.handcrafted import HandcraftedBackbone  # noqa: E402
from earlens.probing.helicality import helix_probe  # noqa: E402
from earlens.probing.probes import fit_layer_probes  # noqa: E402
from earlens.probing.probes_common import split_indices  # noqa: E402
from earlens.stimuli.rendering import render_stimuli  # noqa: E402
from machine import describe  # noqa: E402  (bench/machine.py)

NOTES = {"midi_pitches": list(range(48, 84)), "programs": [0, 4, 24, 40, 56, 65, 73, 80]}
# name -> (kind, name_or_path, loader options): the offline networks, each as its configs/notes_* reads it
MODELS = {
    "handcrafted": ("handcrafted", None, {"sample_rate": 16000}),
    "crepe-tiny": ("crepe", "tiny", {"hop_length": 1600}),
    "pesto": ("pesto", None, {"step_ms": 50.0}),
    "fcpe": ("fcpe", None, {}),
    "swift_f0": ("swift_f0", None, {}),
    "basic_pitch": ("basic_pitch", None, {}),
    "deep_chroma": ("deep_chroma", None, {}),
    "key_cnn": ("key_cnn", None, {}),
    "chord_cnn": ("chord_cnn", None, {}),
    "musicnn": ("musicnn", None, {}),
    "tempocnn": ("tempocnn", None, {}),
    "beatnet": ("beatnet", None, {}),
    "speech_embedding": ("speech_embedding", None, {}),
    "resemblyzer": ("resemblyzer", None, {}),
    "silero_vad": ("silero_vad", None, {}),
    "birdnet": ("birdnet", None, {}),
}
HELIX_COLUMNS = ("r2", "p_helix", "q_helix", "omega_periodic", "d_strict", "p_octave", "p_rsa_chroma")
CONTROLS = {"deep_chroma": "chroma", "fcpe": "latent"}  # octave-equivalent by training / a pitch-height output


def backbone_of(name: str):
    kind, name_or_path, options = MODELS[name]
    if kind == "handcrafted":
        return HandcraftedBackbone(**options)
    return load_backbone(kind, name_or_path, **options)


def unit_norm(features: np.ndarray) -> np.ndarray:
    """Each clip's vector of each layer scaled to unit length (zero vectors stay zero)."""
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)


def layer_rows(name: str, seed: int, splits: int) -> tuple[list[dict], float]:
    """One row per layer of model `name`: its probe accuracies (mean and sd over `splits` seeded 70/15/15 splits:
    a 43-clip test set alone moves an accuracy by ±0.07) and every helix statistic; and the seconds taken."""
    began = time.perf_counter()
    backbone = backbone_of(name)
    notes = render_stimuli("notes", None, backbone.sample_rate, **NOTES)
    features = np.asarray(extract_features(backbone, notes.waves, backbone.sample_rate, stimulus_key=notes.key),
                          dtype=np.float32)
    labels = notes.labels
    accuracy = {}
    for column, target, values in (("pitch_class", "pitch_class", features), ("octave", "octave", features),
                                   ("octave_unit", "octave", unit_norm(features))):
        scores = np.stack([fit_layer_probes(values, labels[target], split=split_indices(labels[target], seed=split),
                                            seed=split, progress=False).metrics["test_accuracy"]
                           for split in range(seed, seed + splits)])
        accuracy[column], accuracy[f"{column}_sd"] = scores.mean(0), scores.std(0)
    helix = helix_probe(np.swapaxes(features, 0, 1), labels["midi_pitch"], seed=seed).layer_stats()
    rows = [{"model": name, "layer": layer, **{key: float(values[index]) for key, values in accuracy.items()},
             **{key: float(values[index]) for key, values in helix.items()}}
            for index, layer in enumerate(backbone.layer_names)]
    return rows, time.perf_counter() - began


def markdown(rows: list[dict], helix_columns) -> str:
    columns = ["pitch_class", "octave", "octave_unit", *helix_columns]
    titles = {"pitch_class": "pitch class", "octave_unit": "octave (unit)"}
    lines = ["| layer | " + " | ".join(titles.get(c, c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = ["—" if row.get(c) is None or np.isnan(row[c])
                 else f"{row[c]:.3f}" if c.startswith(("p_", "q_")) else f"{row[c]:.2f}" for c in columns]
        cells[2] += f" ± {row['octave_unit_sd']:.2f}"
        lines.append(f"| {row['layer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--helix-columns", nargs="+", default=list(HELIX_COLUMNS),
                        help="keys of HelixProbeResult.layer_stats() to print")
    parser.add_argument("--seed", type=int, default=0, help="first probe split seed; the helix seed")
    parser.add_argument("--splits", type=int, default=5, help="probe splits averaged per accuracy")
    parser.add_argument("--out", type=Path, default=None, help="CSV of every statistic of every layer")
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {describe()}; load average {os.getloadavg()[0]:.1f} at the start\n")
    every_row = []
    for name in args.models:
        rows, seconds = layer_rows(name, args.seed, args.splits)
        every_row += rows
        print(f"### {name} ({seconds:.0f} s)\n\n{markdown(rows, args.helix_columns)}\n", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    by_layer = {(row["model"], row["layer"]): row for row in every_row}
    for model, layer in CONTROLS.items():
        row = by_layer.get((model, layer))
        if row:
            print(f"control {model} {layer}: pitch class {row['pitch_class']:.2f}, octave {row['octave']:.2f}, "
                  f"octave (unit) {row['octave_unit']:.2f} ± {row['octave_unit_sd']:.2f} (chance 0.33), "
                  f"octave index {row['octave_index']:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(every_row[0]))
            writer.writeheader()
            writer.writerows(every_row)
        print(f"every statistic: {args.out}")


if __name__ == "__main__":
    main()
