"""Controls of the helix probe on real audio, whose answers are known from the literature.

1. Notes as points: rendered notes (several General MIDI programs, C2–B6) through a log constant-Q spectrum and
   CQT chroma, one vector per note. Log-CQT should be a pitch helix (it turns once per octave in constant-Q
   subbands of notes), chroma octave-equivalent by construction; MFCC carries no chroma.
2. Frequency bins as points (Lostanlen, Sridhar, Farnsworth & Bello 2020, arXiv 1910.10246): each constant-Q bin is
   a point whose coordinates are its standardised log-energy over many frames of a corpus. Their Isomap embeddings
   were a helix for musical notes (NSynth), a circle for English speech, and no structure for urban noise.
   Here: rendered notes, FSDD speech, ESC-10 environmental sounds.

Prints, per row, the helix statistics (`p_helix`: turning with pitch beyond smooth curves; ω where the periodic
likelihood ratio peaks; d_strict and its `p_octave`; RSA's chroma coefficient and its p) beside the paper's statement.

    python bench/helix_controls.py                      # rendered notes, FSDD, ESC-10 from ../shared/data
    python bench/helix_controls.py --notes-folder DIR   # also your own recorded notes (DIR/labels.csv: path,midi_pitch)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import librosa
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.io.audio import load_audio  # noqa: E402
from earlens.io.paths import data_root  # noqa: E402
from earlens.probing.helicality import helix_probe  # noqa: E402
from earlens.stimuli.rendering import load_stimuli_table, render_stimuli  # noqa: E402

SAMPLE_RATE = 16000
HOP = 256
FMIN, N_BINS = "C2", 60  # five octaves of semitone bins, 65 Hz to 2 kHz
PROGRAMS = (0, 24, 40, 56, 73)  # piano, nylon guitar, violin, trumpet, flute
STATEMENTS = {"notes": "helix (Lostanlen et al. 2020, NSynth)", "speech": "circle (Lostanlen et al. 2020)",
              "noise": "no structure (Lostanlen et al. 2020, urban sounds)"}
COLUMNS = ("p_helix", "q_helix", "omega_periodic", "r2", "d_strict", "p_octave", "rsa_chroma", "p_rsa_chroma")


def log_cqt(waves: list[np.ndarray]) -> list[np.ndarray]:
    """log(1 + 100·|CQT|) frames (bins, frames) of each clip."""
    return [np.log1p(100 * np.abs(librosa.cqt(w, sr=SAMPLE_RATE, hop_length=HOP, fmin=librosa.note_to_hz(FMIN),
                                               n_bins=N_BINS))) for w in waves]


def note_features(waves: list[np.ndarray]) -> dict[str, np.ndarray]:
    """One vector per note: mean log-CQT, mean chroma, mean MFCC."""
    return {"log_cqt": np.stack([frames.mean(axis=1) for frames in log_cqt(waves)]),
            "chroma": np.stack([librosa.feature.chroma_cqt(y=w, sr=SAMPLE_RATE, hop_length=HOP, tuning=0.0).mean(1)
                                for w in waves]),
            "mfcc": np.stack([librosa.feature.mfcc(y=w, sr=SAMPLE_RATE, n_mfcc=20).mean(1) for w in waves])}


def bins_as_points(waves: list[np.ndarray], max_frames: int, seed: int) -> np.ndarray:
    """(bins, frames): each CQT bin's log-energy over the corpus' non-silent frames, standardised per bin."""
    frames = np.concatenate(log_cqt(waves), axis=1)
    frames = frames[:, frames.sum(axis=0) > 0.05 * np.median(frames.sum(axis=0)) + 1e-9]
    if frames.shape[1] > max_frames:
        frames = frames[:, np.sort(np.random.default_rng(seed).choice(frames.shape[1], max_frames, replace=False))]
    return (frames - frames.mean(axis=1, keepdims=True)) / (frames.std(axis=1, keepdims=True) + 1e-9)


def corpus(name: str, root: str | None, clips: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "speech":
        paths = sorted(data_root(root, "fsdd").glob("recordings/*.wav"))
    else:
        paths = sorted(data_root(root, "esc10").glob("*/*.ogg"))
    if not paths:
        raise FileNotFoundError(f"no {name} clips under the data root (see ../shared/data/README.md)")
    picked = rng.choice(len(paths), min(clips, len(paths)), replace=False)
    return [load_audio(paths[i], SAMPLE_RATE) for i in sorted(picked)]


def print_rows(title: str, names: list[str], stats: dict[str, np.ndarray], statement: dict[str, str]) -> None:
    print(f"\n## {title}\n\n| features | " + " | ".join(COLUMNS) + " | expected |\n|---|"
          + "---|" * (len(COLUMNS) + 1))
    for index, name in enumerate(names):
        cells = [f"{stats[c][index]:.3f}" for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + f" | {statement.get(name, '')} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--notes-folder", type=Path, default=None,
                        help="recorded notes: DIR/labels.csv with columns path, midi_pitch")
    parser.add_argument("--clips", type=int, default=300, help="speech and noise clips per corpus")
    parser.add_argument("--max-frames", type=int, default=3000)
    parser.add_argument("--surrogates", type=int, default=499)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"# helix controls on real audio: {args.surrogates} null draws, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    notes = render_stimuli("notes", sample_rate=SAMPLE_RATE, midi_pitches=tuple(range(36, 96)), programs=PROGRAMS)
    audible = ~notes.labels["silent"]
    waves = [np.asarray(w) for w, keep in zip(notes.waves, audible) if keep]
    pitch = notes.labels["midi_pitch"][audible]
    sets = {"rendered notes": (waves, pitch)}
    if args.notes_folder is not None:
        table = load_stimuli_table(args.notes_folder / "labels.csv", sample_rate=SAMPLE_RATE)
        sets["recorded notes"] = ([np.asarray(w) for w in table.waves], table.labels["midi_pitch"])
    for title, (clips, labels) in sets.items():
        features = note_features(clips)
        result = helix_probe(list(features.values()), labels, n_surrogates=args.surrogates, n_bootstrap=0,
                             seed=args.seed)
        print_rows(f"{title} as points ({len(clips)} clips, {len(np.unique(labels))} pitches)", list(features),
                   result.layer_stats(), {"log_cqt": "helix, one turn per octave", "chroma": "octave-equivalent",
                                          "mfcc": "no chroma"})
    corpora = {"notes": waves, "speech": corpus("speech", args.data_root, args.clips, args.seed),
               "noise": corpus("noise", args.data_root, args.clips // 3, args.seed)}
    layers = [bins_as_points(clips, args.max_frames, args.seed) for clips in corpora.values()]
    result = helix_probe(layers, n_surrogates=args.surrogates, n_bootstrap=0, seed=args.seed)  # pitch = bin index
    print_rows(f"constant-Q bins as points ({N_BINS} bins from {FMIN}, ≤ {args.max_frames} frames each)",
               list(corpora), result.layer_stats(), STATEMENTS)


if __name__ == "__main__":
    main()
