"""SynTheory's handcrafted-feature table (Wei et al. 2024, Table 2's mel / MFCC / chroma / aggregate rows)
recomputed end to end offline: render the seven concepts (earlens.stimuli.rendering, TimGM6mb + FluidSynth), extract
SynTheory's handcrafted embeddings (earlens.probing.handcrafted.syntheory_features), probe the primary label of each
concept (tempo: R² of bpm) on a 70/15/15 split, and print our table, the paper's and the difference per cell.

    python bench/syntheory.py --quick            # a seeded 1000-clip subset per concept
    python bench/syntheory.py                    # SynTheory's full sets (~105k clips; audio cache ~37 GB)
    python bench/syntheory.py --protocol fast --model mlp --drop-audio   # what fits on CPU
    python bench/syntheory.py --quick --protocol fast --model mlp --models crepe:tiny   # + a real model's row
    python bench/syntheory.py --quick --protocol fast --models deep_chroma key_cnn chord_cnn fcpe tempocnn beatnet

A real model gets a row on the concepts it can see (`MODEL_CONCEPTS`: pitch and harmony networks the five pitched
concepts, tempo and beat networks tempos and time signatures), probed at the layer chosen on validation.

`--protocol syntheory` (default) is SynTheory's probe protocol (earlens.probing.probes_syntheory) over its whole grid
(216 configurations); `--grid linear` runs its linear half only, which cannot separate the relational concepts
(chord quality, interval, mode, progression are not linear in these features). On CPU the grid's MLP half is
out of reach for the full sets: `--protocol fast --model mlp` (earlens's batched MLP probe, weight decay chosen
on validation) is the practical stand-in, `--model linear` its linear probe. Rendered audio and features are
cached (a re-run only probes); per-concept wall times are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.io.paths import cache_dir  # noqa: E402
from earlens.models.backbones import load_backbone  # noqa: E402
from earlens.probing.features import extract_features  # noqa: E402
from earlens.probing.handcrafted import SYNTHEORY_FEATURES, SYNTHEORY_SAMPLE_RATE, syntheory_features  # noqa: E402
from earlens.probing.probes import fit_layer_probes  # noqa: E402
from earlens.probing.probes_syntheory import (SEARCHES, SYNTHEORY_MAX_EPOCHS, halving_plan,  # noqa: E402
                                              syntheory_configs)
from earlens.probing.probes_common import extrapolation_split, split_indices  # noqa: E402
from earlens.stimuli.rendering import read_labels, render_stimuli, stimulus_key  # noqa: E402
from earlens.stimuli.syntheory_concepts import (CONCEPT_LABELS, CONFIGS, SYNTHEORY_SIZES, concept_config,
                                                syntheory_options)  # noqa: E402

CONCEPTS = tuple(CONFIGS)
# Wei et al. 2024 (SynTheory), handcrafted rows: test accuracy of the primary label, tempos R²
PAPER = {
    "mel": (0.712, 0.995, 0.897, 0.988, 0.723, 0.785, 0.827),
    "mfcc": (0.467, 0.822, 0.370, 0.863, 0.872, 0.923, 0.688),
    "chroma": (0.954, 0.820, 0.989, 0.994, 0.869, 0.847, 0.672),
    "aggregate": (0.941, 0.997, 0.972, 0.992, 0.868, 0.947, 0.833),
}
PAPER_ORDER = ("notes", "intervals", "scales", "chords", "chord_progressions", "tempos", "time_signatures")
FEATURE_VERSION = 1  # bump when syntheory_features changes
QUICK_SUBSET = 1000
# Real models' rows (no paper has them): CREPE every 50 ms (its features are means over the clip), without conv1
# (16,384 dimensions per frame for tiny, 131,072 for full), whose probes would dominate the time.
MODEL_OPTIONS = {"crepe": {"hop_length": 800, "layers": ["conv2", "conv3", "conv4", "conv5", "conv6", "classifier"]},
                 "pesto": {"step_ms": 50.0}}
PITCHED = ("notes", "intervals", "scales", "chords", "chord_progressions")
# the concepts each kind of network can see (what its input and training cover); other kinds see all seven
MODEL_CONCEPTS = {**{kind: PITCHED for kind in ("crepe", "pesto", "fcpe", "swift_f0", "basic_pitch", "deep_chroma",
                                                  "key_cnn", "chord_cnn")},
                  "tempocnn": ("tempos", "time_signatures"), "beatnet": ("tempos", "time_signatures")}


def concept_features(concept: str, subset: int | None, seed: int, batch: int = 256):
    """(features {name: (N, D)}, labels, the rendered audio's folder, seconds to render, seconds to extract; 0 when
    cached)."""
    options = syntheory_options(concept)
    key = stimulus_key(concept, concept_config(concept, options), SYNTHEORY_SAMPLE_RATE,
                       None if subset is None else (subset, seed))
    path = cache_dir("syntheory_features") / f"{key}-v{FEATURE_VERSION}.npz"
    table_path = cache_dir("stimuli") / key / "labels.csv"
    rendered = extracted = 0.0
    if not (path.is_file() and table_path.is_file()):
        began = time.perf_counter()
        stimuli = render_stimuli(concept, None, SYNTHEORY_SAMPLE_RATE, subset=subset, subset_seed=seed, **options)
        rendered = time.perf_counter() - began
        began = time.perf_counter()
        parts = [syntheory_features(np.asarray(stimuli.waves[start:start + batch]))
                 for start in tqdm(range(0, len(stimuli), batch), desc=f"features {concept}", leave=False)]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".tmp.npz"),
                 **{name: np.concatenate([part[name] for part in parts]) for name in SYNTHEORY_FEATURES})
        path.with_suffix(".tmp.npz").rename(path)
        extracted = time.perf_counter() - began
    features = dict(np.load(path))
    labels = read_labels(table_path)
    return features, labels, table_path.parent, rendered, extracted


def model_backbone(spec: str):
    """The backbone of a `--models` entry `kind[:name_or_path]`, loaded once for every concept."""
    kind, _, name = spec.partition(":")
    return load_backbone(kind, name or None, **MODEL_OPTIONS.get(kind, {}))


def model_features(backbone, concept: str, subset: int | None, seed: int):
    """(features (N, L, D), layer names, seconds) of a real model's backbone on the concept's clips, mean over time
    per layer; the audio is re-rendered if `--drop-audio` removed it, the features are cached."""
    options = syntheory_options(concept)
    stimuli = render_stimuli(concept, None, SYNTHEORY_SAMPLE_RATE, subset=subset, subset_seed=seed, **options)
    began = time.perf_counter()
    features = extract_features(backbone, stimuli.waves, SYNTHEORY_SAMPLE_RATE, stimulus_key=stimuli.key)
    return features, backbone.layer_names, time.perf_counter() - began


def concept_targets(labels: dict, concept: str, seed: int):
    """(task, targets, split) of the concept's primary label on SynTheory's split: a random 70/15/15 split, for
    tempos the extrapolation split (`extrapolation_split`)."""
    n_classes, name = CONCEPT_LABELS[concept][0]
    task = "regression" if n_classes is None else "classification"
    targets = labels[name].astype(np.float64) if task == "regression" else labels[name]
    split = extrapolation_split(targets, seed=seed) if task == "regression" else \
        split_indices(targets, seed=seed, stratify=False)
    return task, targets, split


def probe_scores(features: dict[str, np.ndarray], labels: dict, concept: str, protocol: str, grid: str,
                 search: str, model: str, seed: int) -> dict[str, tuple[float, int]]:
    """Test score (accuracy, or R² for tempos) of each feature's probe of the concept's primary label.
    A feature with several layers `(N, L, D)` reports the layer chosen on validation: (score, layer)."""
    task, targets, split = concept_targets(labels, concept, seed)
    options = {"protocol": protocol, "seed": seed, "split": split, "progress": False}
    if protocol == "syntheory":
        options["search"] = search
        if grid == "linear":
            options["grid"] = {"hidden_layer_sizes": [[]]}
    if protocol == "fast":
        options["model"] = model
    scores = {}
    for feature, values in features.items():
        result = fit_layer_probes(values if values.ndim == 3 else values[:, None], targets, task=task, **options)
        layer = result.best_layer()
        scores[feature] = (float(result.metrics[f"test_{result.score_name}"][layer]), layer)
    return scores


def compare_searches(features: dict[str, np.ndarray], labels: dict, concept: str, seed: int) -> list[dict]:
    """SynTheory's whole grid against successive halving on each feature, run one after the other on the same
    split: selected test score, configuration-epochs summed over the grid, wall seconds."""
    task, targets, split = concept_targets(labels, concept, seed)
    rows = []
    for feature, values in features.items():
        row = {"concept": concept, "features": feature, "dim": values.shape[-1]}
        for search in ("grid", "halving"):
            began = time.perf_counter()
            result = fit_layer_probes(values if values.ndim == 3 else values[:, None], targets, task=task,
                                      protocol="syntheory", search=search, seed=seed, split=split, progress=False)
            layer = result.best_layer()
            row[search] = {"test": float(result.metrics[f"test_{result.score_name}"][layer]),
                           "config_epochs": float(np.nansum(result.candidates["epochs"])),
                           "seconds": time.perf_counter() - began}
        rows.append(row)
        print(search_table(rows[-1:], header=False), flush=True)
    return rows


def planned_halving_table(concepts) -> str:
    """Successive halving's rungs on each concept's full training set (70 % of SynTheory's clips) and the
    configuration-epochs they take against the whole grid's 216 × 100 (early stopping aside)."""
    configs = syntheory_configs()
    batch_sizes = {config["batch_size"] for config in configs}
    lines = ["| concept | training clips | rungs: epochs (configurations) | configuration-epochs | fewer than the "
             "grid |", "|---|---|---|---|---|"]
    for concept in concepts:
        n_train = int(0.7 * SYNTHEORY_SIZES[concept])
        plan = halving_plan(len(configs), n_train, batch_sizes)
        cost = sum(count * (epochs - previous) for (epochs, count), previous in zip(plan, [0.0] + [e for e, _ in plan]))
        lines.append(f"| {concept} | {n_train} | " + ", ".join(f"{e:.1f} ({n})" for e, n in plan) +
                     f" | {cost:.0f} | {len(configs) * SYNTHEORY_MAX_EPOCHS / cost:.1f}× |")
    return "\n".join(lines)


def search_table(rows: list[dict], header: bool = True) -> str:
    lines = ["| concept | features (D) | grid test | halving test | halving − grid | configuration-epochs grid / "
             "halving | fewer | wall s grid / halving | faster |", "|---" * 9 + "|"] if header else []
    for row in rows:
        grid, halving = row["grid"], row["halving"]
        lines.append(f"| {row['concept']} | {row['features']} ({row['dim']}) | {grid['test']:.3f} | "
                     f"{halving['test']:.3f} | {halving['test'] - grid['test']:+.3f} | {grid['config_epochs']:.0f} / "
                     f"{halving['config_epochs']:.0f} | {grid['config_epochs'] / halving['config_epochs']:.1f}× | "
                     f"{grid['seconds']:.0f} / {halving['seconds']:.0f} | "
                     f"{grid['seconds'] / halving['seconds']:.1f}× |")
    return "\n".join(lines)


def table(rows: dict[str, list], concepts, digits: int = 3, signed: bool = False) -> str:
    names = {"chord_progressions": "chord prog.", "time_signatures": "time sig."}
    lines = ["| features | " + " | ".join(names.get(c, c) for c in concepts) + " |",
             "|---" * (len(concepts) + 1) + "|"]
    for row, values in rows.items():
        cells = ["—" if v is None else (f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}") for v in values]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"a seeded {QUICK_SUBSET}-clip subset per concept")
    parser.add_argument("--subset", type=int, default=None, help="clips per concept (default: all, or --quick's)")
    parser.add_argument("--concepts", nargs="+", default=list(PAPER_ORDER), choices=CONCEPTS)
    parser.add_argument("--protocol", default="syntheory", choices=("syntheory", "fast"))
    parser.add_argument("--grid", default="full", choices=("linear", "full"), help="syntheory protocol's grid")
    parser.add_argument("--search", default="grid", choices=SEARCHES, help="syntheory protocol: every configuration "
                        "to 100 epochs (grid, SynTheory's) or successive halving")
    parser.add_argument("--compare-search", action="store_true", help="run SynTheory's grid both ways on every "
                        "concept and feature and print their test scores, configuration-epochs and wall times")
    parser.add_argument("--features", nargs="+", default=list(SYNTHEORY_FEATURES), choices=SYNTHEORY_FEATURES,
                        help="handcrafted features to probe")
    parser.add_argument("--model", default="linear", choices=("linear", "mlp"), help="fast protocol's probe")
    parser.add_argument("--seed", type=int, default=0, help="subset and split seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=[], metavar="KIND[:NAME]",
                        help="real models to add as rows (e.g. crepe:tiny), probed at the layer chosen on validation")
    parser.add_argument("--drop-audio", action="store_true", help="delete each concept's audio once its features "
                        "are cached (the full sets take ~37 GB)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    subset = args.subset or (QUICK_SUBSET if args.quick else None)
    ours = {name: [None] * len(PAPER_ORDER) for name in SYNTHEORY_FEATURES + tuple(args.models)}
    timing, chosen_layers = [], []
    backbones = {spec: model_backbone(spec) for spec in args.models}
    print(f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    if args.compare_search:
        print(search_table([]))
    compared = []
    for concept in args.concepts:
        size = None if subset is None else min(subset, SYNTHEORY_SIZES[concept])
        features, labels, audio_dir, rendered, extracted = concept_features(concept, size, args.seed)
        features = {name: features[name] for name in args.features}
        if args.compare_search:
            compared += compare_searches(features, labels, concept, args.seed)
            continue
        layer_names = {}
        for spec in args.models:
            if concept not in MODEL_CONCEPTS.get(spec.partition(":")[0], CONCEPTS):
                continue
            features[spec], layer_names[spec], seconds = model_features(backbones[spec], concept, size, args.seed)
            extracted += seconds
        if args.drop_audio:  # the labels stay; features and labels are all a re-run needs (models re-render)
            (audio_dir / "waves.npy").unlink(missing_ok=True)
        began = time.perf_counter()
        scores = probe_scores(features, labels, concept, args.protocol, args.grid, args.search, args.model,
                              args.seed)
        probed = time.perf_counter() - began
        column = PAPER_ORDER.index(concept)
        for name, (score, layer) in scores.items():
            ours[name][column] = score
            if name in layer_names:
                chosen_layers.append(f"{name} {concept}: {layer_names[name][layer]}")
        timing.append((concept, len(labels["row"]), rendered, extracted, probed))
        print(f"{concept}: {len(labels['row'])} clips, render {rendered:.0f} s, features {extracted:.0f} s, "
              f"probe {probed:.0f} s: " + ", ".join(f"{k} {v:.3f}" for k, (v, _) in scores.items()), flush=True)
    clips = "all clips" if subset is None else f"≤ {subset} clips per concept"
    if args.compare_search:
        print(f"\nSynTheory's grid, every configuration vs successive halving ({clips}, seed {args.seed}, "
              f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at the end):\n\n"
              f"{search_table(compared)}")
        grid, halving = ({key: sum(row[search][key] for row in compared) for key in ("config_epochs", "seconds")}
                         for search in ("grid", "halving"))
        worst = max(abs(row["halving"]["test"] - row["grid"]["test"]) for row in compared)
        print(f"\nIn all: {grid['config_epochs'] / halving['config_epochs']:.1f}× fewer configuration-epochs, "
              f"{grid['seconds'] / halving['seconds']:.1f}× less wall time, test scores within {worst:.3f}")
        print(f"\nSuccessive halving's plan on the full sets:\n\n{planned_halving_table(PAPER_ORDER)}")
        return
    probe = f"{args.grid} grid, {args.search}" if args.protocol == "syntheory" else args.model
    print(f"\nOurs ({clips}, seed {args.seed}, protocol {args.protocol}, {probe}):\n")
    print(table(ours, PAPER_ORDER))
    if chosen_layers:
        print("\nLayers chosen on validation: " + "; ".join(chosen_layers))
    print("\nWei et al. 2024 (SynTheory):\n")
    print(table({name: list(PAPER[name]) for name in SYNTHEORY_FEATURES}, PAPER_ORDER))
    print("\nOurs − paper:\n")
    print(table({name: [None if v is None else v - p for v, p in zip(ours[name], PAPER[name])]
                 for name in SYNTHEORY_FEATURES}, PAPER_ORDER, signed=True))
    print("\n| concept | clips | render s | features s | probe s |\n|---|---|---|---|---|")
    for concept, n, rendered, extracted, probed in timing:
        print(f"| {concept} | {n} | {rendered:.0f} | {extracted:.0f} | {probed:.0f} |")
    total = sum(sum(t[2:]) for t in timing)
    print(f"| total | {sum(t[1] for t in timing)} | | | {total:.0f} s |")
    log_summary_run(ours, f"bench-syntheory-{time.strftime('%Y%m%d-%H%M%S')}", vars(args))


def log_summary_run(ours: dict[str, list], group: str, settings: dict) -> None:
    """One W&B summary run (offline unless credentials) holding ours, the paper's and the difference per cell."""
    import wandb

    from earlens.lightning_modules.cli import start_wandb_run

    run = start_wandb_run(project="earlens", name=group, group=group, job_type="bench-summary", config=settings,
                          dir=str(Path(__file__).resolve().parent.parent / "runs"))
    if run is None:  # W&B could not start; the bench's own output is complete without it
        return
    paper = {name: PAPER.get(name, [None] * len(PAPER_ORDER)) for name in ours}
    rows = [[name, concept, ours[name][i], paper[name][i],
             None if None in (ours[name][i], paper[name][i]) else ours[name][i] - paper[name][i]]
            for name in ours for i, concept in enumerate(PAPER_ORDER)]
    run.log({"syntheory": wandb.Table(columns=["features", "concept", "ours", "paper", "difference"], data=rows)})
    run.finish()


if __name__ == "__main__":
    main()
