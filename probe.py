"""Probe a frozen audio model layer by layer: `python probe.py --config notes_crepe [--probes.helix.n_permutations 50]`.

Renders the stimuli (cached), extracts mean-pooled per-layer features (cached), fits linear probes for every
target on all layers at once, fits the pitch helix (notes), and writes into the run folder: `layers.csv` /
`layers.json` (one row per layer), PNG plots, a W&B run (offline unless credentials) and `summary.json`,
whose path is printed last. Every option can be overridden on the command line (`--backbone.kind crepe`).
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentError

from earlens.lightning_modules.cli import (
    UsageError,
    claim_run_dir,
    expand_config_args,
    is_launcher,
    load_run,
    parse_error_line,
    pop_verbose,
    quiet_startup,
    remove_failed_run_dir,
    short_help,
    write_summary,
)
from earlens.lightning_modules.extraction import cache_precision, extract_on_trainer
from earlens.lightning_modules.probe_config import (
    DEFAULT_TARGETS,
    BackboneOptions,
    HelixOptions,
    LinearProbeOptions,
    PartialsOptions,
    ProbesOptions,
    build_parser,
)
from earlens.lightning_modules.probe_outputs import (
    console_table,
    layer_table,
    log_wandb,
    metric_table,
    probe_summary,
    write_tables,
)
from earlens.lightning_modules.probes import fit_streaming_probes
from earlens.models.backbones import load_backbone, random_init
from earlens.models.base import Backbone, HookBackbone
from earlens.plots import plot_helicality_vs_layer, plot_helix, plot_partials, plot_scores_vs_layer
from earlens.probing.features import check_disk_space, encode_span, plan_extraction
from earlens.probing.handcrafted import HandcraftedBackbone
from earlens.probing.helicality import HelixProbeResult, helix_probe
from earlens.probing.probes import PROTOCOLS, fit_layer_probes
from earlens.probing.probes_common import ProbeResult, ProbeSplit, split_indices
from earlens.probing.probes_syntheory import SEARCHES
from earlens.stats.partials import partials_probe, summary_rows
from earlens.stimuli.rendering import StimulusSet, load_stimuli_table, render_stimuli


def task_stimuli(sample_rate: int, data: dict, split: str = "test", max_items: int | None = None) -> StimulusSet:
    """A training task's clips and labels (a datamodule, from class_path + init_args) as probe stimuli, decoded at the
    probe's `sample_rate`."""
    if isinstance(data, dict):
        import importlib

        module, name = data["class_path"].rsplit(".", 1)
        data = getattr(importlib.import_module(module), name)(**data.get("init_args", {}))
    data.sample_rate = sample_rate  # before setup: the clips are decoded at the backbone's input rate
    waves, lengths, names, sources = data.stimuli(split, max_items)
    table = Path(write_stimulus_table(data, split, names, sources))
    key = f"task-{type(data).__name__}-{split}-{len(waves)}"
    return StimulusSet(waves.astype(np.float32), sample_rate, {"label": np.array(names)}, table, key, lengths,
                       list(getattr(data, "duplicates", [])))


def write_stimulus_table(datamodule, split: str, names: list[str], sources: list[str]) -> Path:
    """The stimuli's labels as a CSV in a temporary folder (what `summary.json` points to as the stimulus table)."""
    path = Path(tempfile.mkdtemp(prefix="earlens-task-")) / f"{datamodule.dataset}-{split}.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "path", "label"])
        writer.writerows([i, source, name] for i, (source, name) in enumerate(zip(sources, names)))
    return path


def extract(backbone: Backbone, stimuli: StimulusSet, options, progress: bool = True) -> tuple[np.memmap, bool]:
    """Mean-pooled features of every layer, from the cache or by `Trainer.predict` on `--trainer.*` devices/nodes.

    Prints the entry's size before extracting and refuses when its disk cannot hold it. Returns the cached array
    (a memory map, on every rank) and whether this process is rank 0."""
    trainer = pl.Trainer(**options.trainer.as_dict(), logger=False, enable_checkpointing=False,
                         enable_progress_bar=progress, enable_model_summary=False)
    plan = plan_extraction(backbone, stimuli.waves, stimuli.sample_rate, stimuli.key, "mean",
                           options.features.batch_size, options.features.cache_dir, cache_precision(trainer),
                           stimuli.lengths)
    if plan.missing and trainer.is_global_zero:
        dims = encode_span(backbone, plan, 0, 1)[1]  # one clip: the layers' widths, hence the entry's size
        plan.entry_bytes = 4 * len(plan.waves) * len(dims) * max(dims)
        print(f"feature cache: {len(plan.waves)} clips x {len(dims)} layers x {max(dims)} dims x 4 B = "
              f"{plan.entry_bytes / 1e9:.3f} GB ({plan.bytes_needed / 1e9:.3f} GB while built) in {plan.folder}; "
              f"{len(plan.missing)} of {len(plan.spans)} shards to compute on {trainer.world_size} device(s)",
              file=sys.stderr)
        check_disk_space(plan)
    return extract_on_trainer(trainer, backbone, plan), trainer.is_global_zero


def probe_partials(backbone: Backbone, stimulus_options: dict, options: PartialsOptions, config_name: str | None,
                   config, cli_options, run_dir: Path) -> Path:
    """Do partials stabilise in the backbone's layers? `earlens.stats.partials.partials_probe` on every layer (latents
    and codes), with the shuffled-label null and, where the model has torch parameters, the random-init null; writes
    `layers.csv`/`layers.json` (one row per layer or codebook view, `init/...` columns for the random-init model),
    `partials.png` (invariance and selectivity per layer, tuning curves), W&B and `summary.json`."""
    began = time.perf_counter()
    init = random_init(backbone, options.seed) if options.random_init else None

    def encoder(model):
        return lambda waves: dict(zip(model.layer_names, model(waves)))

    result = partials_probe(encoder(backbone), backbone.sample_rate, seed=options.seed,
                            init_encode=encoder(init) if init is not None else None, **stimulus_options)
    rows = summary_rows(result["layers"])
    if init is not None:
        for row, init_row in zip(rows, summary_rows(result["init"])):
            row.update({f"init/{key}": value for key, value in init_row.items() if key not in ("layer", "view")})
    columns = list(dict.fromkeys(key for row in rows for key in row))
    rows = [{key: row.get(key, "" if key == "view" else float("nan")) for key in columns} for row in rows]
    tables = write_tables(run_dir, rows, [])
    figure = plot_partials(result, title=f"{backbone.name}: partials")
    plots = {"partials": run_dir / "partials.png"}
    figure.savefig(plots["partials"], dpi=110)
    latent = [row for row in rows if "invariance" in row and np.isfinite(row["invariance"])]
    summary = {"config": config_name, "backbone": {"name": backbone.name, "weights_id": backbone.weights_id,
                                                   "layers": list(backbone.layer_names)},
               "stimuli": {"concept": "partials", "bands_hz": [float(e) for e in result["bands"]],
                           **stimulus_options},
               "random_init_null": init is not None,
               "partials": {"/".join(filter(None, (row["layer"], row.get("view")))):
                            {key: float(value) for key, value in row.items()
                             if isinstance(value, (int, float)) and key != "layer"} for row in rows},
               "most_invariant_layer": max(latent, key=lambda row: row["invariance"])["layer"] if latent else None,
               "tables": {key: str(path) for key, path in tables.items()},
               "plots": {key: str(path) for key, path in plots.items()}, "wall_time_s": time.perf_counter() - began}
    path = write_summary(run_dir, **summary)
    summary["wandb_run_dir"] = log_wandb(run_dir, cli_options.wandb_project, f"{config_name}/{run_dir.name}",
                                         config.as_dict(), rows, [], plots, summary)
    path = write_summary(run_dir, **summary)
    print(path)
    return path


def build_backbone(options: BackboneOptions) -> Backbone:
    """The backbone to probe; `kind: run` is a model trained by `train.py` (`name_or_path`: its run folder; its
    best checkpoint, or `options: {checkpoint: last}`), read out at `layers` (its 1-D convolution stages)."""
    if options.kind == "handcrafted":
        return HandcraftedBackbone(options.layers, **options.options)
    if options.kind == "run":
        if not options.name_or_path or not options.layers:
            raise ValueError("--backbone.kind run needs --backbone.name_or_path RUN_DIR and --backbone.layers")
        model, _ = load_run(Path(options.name_or_path), options.options.get("checkpoint", "best"))
        return HookBackbone(model, options.layers, model.frontend.sample_rate, name=f"run:{options.name_or_path}",
                            channels_first=True).to(options.device)
    return load_backbone(options.kind, options.name_or_path, options.layers, options.device, **options.options)


def label_targets(labels: dict[str, np.ndarray], exclude=()) -> list[str]:
    """The label columns a probe can classify when none are named: 2 or more classes, fewer classes than rows
    (an id or a file name is not a class), not a path, time, split or the helix's pitch column."""
    skip = {"path", "start", "end", "split", "group", "silent", *exclude}
    return [name for name, values in labels.items()
            if name not in skip and 2 <= len(set(map(str, values))) < len(values)]


def check_label_columns(labels: dict[str, np.ndarray], source, probes: ProbesOptions) -> None:
    """The stimuli's label columns against the probe options, before any audio is decoded (tables) or features are
    extracted: every target a column, regression targets numbers, the helix pitch (where present) MIDI integers."""
    linear, helix = probes.linear, probes.helix
    if linear.targets == DEFAULT_TARGETS and not set(DEFAULT_TARGETS) <= set(labels):
        linear.targets = label_targets(labels, exclude=(helix.pitch_label,)) or linear.targets
    missing = [name for name in (*linear.targets, *linear.regression_targets) if name not in labels]
    if missing:
        raise UsageError(f"{source}: no label column {missing} for --probes.linear.targets / regression_targets; it "
                         f"has {sorted(labels)}: name those with --probes.linear.targets '[COLUMN, ...]'")
    if linear.protocol == "streaming" and linear.regression_targets:
        raise UsageError("--probes.linear.protocol streaming fits classification targets only; drop "
                         "--probes.linear.regression_targets or use protocol fast")
    wanted = [(name, False, "a number") for name in linear.regression_targets]
    if helix.enabled and helix.pitch_label in labels:
        wanted.append((helix.pitch_label, True, "a MIDI note number (integer); fix the column or pass "
                                                "--probes.helix.enabled false"))
    for name, integer, what in wanted:
        bad = next((i for i, value in enumerate(labels[name]) if not _is_number(str(value), integer)), None)
        if bad is not None:
            raise UsageError(f"{source}: column {name!r} row {bad + 1} holds {str(labels[name][bad])!r}, not {what}")


def _is_number(text: str, integer: bool) -> bool:
    try:
        int(text) if integer else float(text)
    except ValueError:
        return False
    return True


def probe_targets(features: np.ndarray, labels: dict[str, np.ndarray], options: LinearProbeOptions,
                  progress: bool) -> dict[str, ProbeResult]:
    tasks = {**{name: "classification" for name in options.targets},
             **{name: "regression" for name in options.regression_targets}}
    settings = {k: v for k, v in asdict(options).items() if k not in ("targets", "regression_targets")}
    return {name: fit_layer_probes(features, labels[name], task=task, progress=progress, **settings)
            for name, task in tasks.items()}


def stream_targets(cached: np.memmap, rows: np.ndarray, labels: dict[str, np.ndarray], options: LinearProbeOptions,
                   cli_options) -> dict[str, ProbeResult]:
    """`protocol: streaming`: each target's probes trained from the memory-mapped cache (`rows` are the clips kept)
    on the `--trainer.*` devices; the split is the in-memory protocols' split of those clips."""
    results = {}
    for name in options.targets:
        split = split_indices(labels[name], seed=options.seed)
        targets = np.empty(len(cached), dtype=labels[name].dtype)
        targets[rows] = labels[name]
        results[name] = fit_streaming_probes(
            cached, targets, ProbeSplit(*(rows[part] for part in (split.train, split.val, split.test))),
            weight_decay=options.weight_decay, max_epochs=options.max_epochs, patience=options.patience,
            batch_size=options.batch_size or 256,
            lr=options.lr, seed=options.seed, trainer_options=cli_options.trainer.as_dict(),
            progress=cli_options.progress)
    return results


def pitch_helix(features: np.ndarray, pitch: np.ndarray, options: HelixOptions) -> HelixProbeResult:
    """Helix probe on the clip features (N, L, D) with their pitch labels (clips are needed for ω's bootstrap)."""
    settings = {k: v for k, v in asdict(options).items() if k not in ("enabled", "pitch_label")}
    return helix_probe(np.swapaxes(features, 0, 1), pitch, **settings)


HELP_OPTIONS = [
    ("--config NAME", "experiment (configs/NAME.yaml or a path; several compose, later ones win)"),
    ("--stimuli.concept C", "notes, intervals, scales, chords, progressions, tempos, time_signatures, folder, "
                            "manifest, task, partials"),
    ("--stimuli.options '{...}'", "the concept's options: {root: DIR} (folder: DIR/labels.csv with a path column), "
                                  "{manifest: FILE.csv}, {programs: [0]}"),
    ("--backbone.kind K", "crepe, pesto, basic_pitch, musicnn, hubert, wav2vec2, musicgen, encodec, handcrafted, run, "
                          "hear, ..."),
    ("--backbone.name_or_path P", "weights: a local folder or HF-cache id; tiny/full for CREPE; a run folder; "
                                  "a HEAR module's import name"),
    ("--backbone.layers '[...]'", "layer names or indices to probe (default: every layer)"),
    ("--probes.linear.targets '[...]'", "label columns to classify (default pitch_class and octave where present, "
                                        "else every label column with classes)"),
    ("--probes.linear.protocol P", "fast (L-BFGS, default), syntheory (SynTheory's grid), streaming (from the "
                                   "memory-mapped cache)"),
    ("--probes.linear.search S", "syntheory protocol: grid (every configuration, default) or halving (successive "
                                 "halving: 4-20x fewer epochs)"),
    ("--probes.helix.enabled B", "the pitch-helix probe, on when the stimuli have midi_pitch"),
    ("--probes.helix.n_surrogates N", "draws of the smooth spiked null (default 499: p ≥ 0.002)"),
    ("--probes.helix.alpha A", "level of q_helix and q_octave (Benjamini–Hochberg over layers; default 0.05)"),
    ("--features.cache_dir DIR", "feature cache (default $EARLENS_CACHE, then ~/.cache/earlens)"),
    ("--trainer.devices N", "with --trainer.strategy ddp [--trainer.num_nodes M]: extract on several devices"),
    ("--trainer.precision P", "bf16-mixed: extract under bf16 autocast (GPU)"),
    ("--run_dir DIR", "run folder (default runs/<config>/<time>)"),
    ("--threads N", "torch CPU threads"),
    ("--verbose", "Lightning's informational lines and known deprecation warnings too"),
    ("--help-all", "every option with its type and default (long)"),
]
PROBE_CONFIGS = ("notes_", "speaker_", "birdcall_", "vad_", "partials_", "scales_", "chords_", "tempos_")


def main(argv: list[str] | None = None) -> Path:
    """Parse and check the options, claim the run folder (writable, before anything heavy), then probe; a probe that
    fails before writing anything into it leaves no run folder."""
    began = time.perf_counter()
    argv, verbose = pop_verbose(list(sys.argv[1:] if argv is None else argv))
    if {"-h", "--help"} & set(argv):
        print(short_help("usage: python probe.py --config NAME [--GROUP.OPTION VALUE ...]\n\n"
                         + __doc__.strip().splitlines()[0], HELP_OPTIONS, prefixes=PROBE_CONFIGS))
        return Path(".")
    argv = ["--help" if arg == "--help-all" else arg for arg in argv]
    quiet_startup(verbose)
    argv, config_name = expand_config_args(argv)
    parser = build_parser()
    try:
        config = parser.parse_args(argv)
    except ArgumentError as err:  # jsonargparse's report of a bad option, as one line
        raise UsageError(parse_error_line(str(err))) from None
    options = parser.instantiate(config)
    if options.probes.linear.protocol not in (*PROTOCOLS, "streaming"):
        raise UsageError(f"--probes.linear.protocol must be one of {(*PROTOCOLS, 'streaming')}, "
                         f"got {options.probes.linear.protocol!r}")
    if options.probes.linear.search not in SEARCHES:
        raise UsageError(f"--probes.linear.search must be one of {SEARCHES}, got {options.probes.linear.search!r}")
    run_dir, created = claim_run_dir(options.run_dir, config_name) if is_launcher() else (None, None)
    try:
        return run_probe(options, config, config_name, run_dir, began)
    except BaseException:
        if run_dir is not None and not any(run_dir.iterdir()):  # tables already written are kept
            remove_failed_run_dir(run_dir, created)
        raise


def run_probe(options, config, config_name: str | None, run_dir: Path | None, began: float) -> Path | None:
    stimuli_opts, backbone_opts = options.stimuli, options.backbone
    probe_opts: ProbesOptions = options.probes
    if options.threads:
        torch.set_num_threads(options.threads)
    backbone = build_backbone(backbone_opts)
    if stimuli_opts.concept == "partials":
        return probe_partials(backbone, stimuli_opts.options, probe_opts.partials, config_name, config, options,
                              run_dir)
    if stimuli_opts.concept == "task":
        stimuli = task_stimuli(stimuli_opts.sample_rate, **stimuli_opts.options)
    elif stimuli_opts.concept in ("folder", "manifest"):
        table_options = dict(stimuli_opts.options)
        table = (Path(table_options.pop("root", ".")) / table_options.pop("labels", "labels.csv")
                 if stimuli_opts.concept == "folder" else table_options.pop("manifest", None))
        if table is None:
            raise FileNotFoundError("--stimuli.concept manifest needs --stimuli.options '{manifest: FILE.csv}'")
        stimuli = load_stimuli_table(table, sample_rate=stimuli_opts.sample_rate, **table_options,
                                     check=lambda labels, source: check_label_columns(labels, source, probe_opts))
    else:
        stimuli = render_stimuli(stimuli_opts.concept, stimuli_opts.cache_dir, stimuli_opts.sample_rate,
                                 **stimuli_opts.options)
    if stimuli_opts.concept not in ("folder", "manifest"):  # a table's columns were checked before decoding
        check_label_columns(stimuli.labels, stimuli.table_path, probe_opts)
    cached, rank_zero = extract(backbone, stimuli, options, progress=options.progress)
    streaming = probe_opts.linear.protocol == "streaming"
    if not (rank_zero or streaming):  # another rank of a multi-device extraction: rank 0 probes
        return None
    audible = ~stimuli.labels["silent"] if "silent" in stimuli.labels else np.ones(len(stimuli), bool)
    labels = {name: values[audible] for name, values in stimuli.labels.items()}
    if streaming:  # every rank trains on its share of mini-batches read from the memory map
        probes = stream_targets(cached, np.flatnonzero(audible), labels, probe_opts.linear, options)
        if not rank_zero:
            return None
    features = np.asarray(cached[audible], dtype=np.float32)  # (N, L, D)
    if not streaming:
        probes = probe_targets(features, labels, probe_opts.linear, options.progress)
    helix_opts = probe_opts.helix
    helix = None
    if helix_opts.enabled and helix_opts.pitch_label in labels:
        helix = pitch_helix(features, labels[helix_opts.pitch_label], helix_opts)

    layer_names = list(backbone.layer_names)
    rows = layer_table(layer_names, probes, helix)
    long = metric_table(rows, probes)
    tables = write_tables(run_dir, rows, long)
    figures = {"scores_vs_layer": plot_scores_vs_layer(layer_names, probes)}
    helix_summary = None
    if helix is not None:
        best = int(np.argmax(helix.r2))
        figures["helicality_vs_layer"] = plot_helicality_vs_layer(helix, layer_names, alpha=helix_opts.alpha,
                                                                  title=f"{backbone.name}: pitch helix")
        figures["helix_best_layer"] = plot_helix(helix, best)
        stats = helix.layer_stats()
        paper_best = int(np.argmax(stats["paper_score_inv_mse"]))
        beyond = [layer_names[i] for i in np.flatnonzero(stats["helix_beyond_smooth"])]
        helix_summary = {"best_layer": best, "best_layer_name": layer_names[best],
                         **{key: float(values[best]) for key, values in stats.items()},
                         "paper_best_layer": paper_best, "paper_best_layer_name": layer_names[paper_best],
                         "layers_beyond_smooth": beyond, "n_pitches": len(helix.pitches), "pitch_step": helix.step,
                         **{key: getattr(helix_opts, key) for key in
                            ("n_surrogates", "alpha", "n_bootstrap", "n_permutations")}}
    plots = {}
    for key, figure in figures.items():
        plots[key] = run_dir / f"{key}.png"
        figure.savefig(plots[key], dpi=120)

    summary = {
        "config": config_name,
        "backbone": {"name": backbone.name, "weights_id": backbone.weights_id, "layers": layer_names},
        "stimuli": {"concept": stimuli_opts.concept, "key": stimuli.key, "n_clips": len(stimuli),
                    "n_silent_dropped": int((~audible).sum()), "table": str(stimuli.table_path),
                    "duplicates": {"count": len(stimuli.duplicates), "items": [list(d) for d in stimuli.duplicates]}},
        "feature_cache": {"key": Path(cached.filename).parent.name,  # the cache folder is named by its key
                          "path": str(Path(cached.filename).parent), "shape": list(cached.shape)},
        "probes": {target: probe_summary(result, layer_names) for target, result in probes.items()},
        "helix": helix_summary,
        "tables": {key: str(path) for key, path in tables.items()},
        "plots": {key: str(path) for key, path in plots.items()},
    }
    summary["wall_time_s"] = time.perf_counter() - began
    path = write_summary(run_dir, **summary)  # on disk before W&B is touched: W&B can never lose it
    summary["wandb_run_dir"] = log_wandb(run_dir, options.wandb_project, f"{config_name}/{run_dir.name}",
                                         config.as_dict(), rows, long, plots, summary)
    path = write_summary(run_dir, **summary)
    print(console_table(rows))
    print(path)
    return path


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ImportError, ValueError, OSError) as error:  # missing weights, bad options, full disk
        sys.exit(f"probe.py: {error}" if isinstance(error, UsageError)
                 else f"probe.py: {type(error).__name__}: {error}")
