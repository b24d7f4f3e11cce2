"""`probe.py`'s options: one dataclass per section of a probe config (`configs/notes_*.yaml`, `partials_*.yaml`, ...)
and the parser that reads them, with the Trainer's own options under `--trainer.*` as in `train.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from earlens.probing.probes import FAST_WEIGHT_DECAYS


@dataclass
class StimuliOptions:
    """Which SynTheory concept to render; `options` are fields of its config (e.g. `programs`, `midi_pitches`).

    Your own recordings instead: `concept: manifest` with `options: {manifest: FILE.csv}` (a `path` column plus label
    columns, e.g. `midi_pitch` for the helix), or `concept: folder` with `options: {root: DIR}` (audio files and
    `DIR/labels.csv` listing them the same way); `clip_seconds` crops or pads them (default: the longest).
    A task's clips: `concept: task` with `options: {data: {class_path: earlens.datamodules.FSDDSpeakerDataModule,
    init_args: {...}}, split: test, max_items: N}` (labels in column `label`)."""

    concept: str = "notes"
    sample_rate: int = 16000
    options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None


@dataclass
class BackboneOptions:
    """`kind`: crepe, musicgen, encodec, hubert, wav2vec2, lyra, audiocraft, handcrafted, a pretrained kind of
    `earlens.models.pretrained`, `run` (a model trained by train.py) or `hear` (a HEAR 2021 module, `name_or_path` its
    import name); `options` go to its loader (e.g. `hop_length` for CREPE, `n_mfcc` for handcrafted,
    `model_file_path` for hear)."""

    kind: str = "crepe"
    name_or_path: str | None = None
    layers: list[str | int] | None = None
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeatureOptions:
    batch_size: int = 8
    cache_dir: str | None = None


DEFAULT_TARGETS = ["pitch_class", "octave"]  # stimuli without both columns: every label column that has classes


@dataclass
class LinearProbeOptions:
    """Label columns to probe (classification; `regression_targets` are fitted as numbers) and the protocol.
    By default `pitch_class` and `octave`; stimuli without both get every label column that has classes.

    `protocol: fast`: linear probes solved full-batch by L-BFGS for every `weight_decay` of the list at once, each
    layer keeping the one with the best validation score; `lr` and `batch_size` apply to `model: mlp` (Adam) only.
    `protocol: syntheory`: SynTheory's Jukemir grid search (`grid` overrides some of its entries), every
    configuration trained 100 epochs (`search: grid`) or by successive halving (`search: halving`: 3.8× fewer
    configuration-epochs on 700 training clips, planned 21.6× from ~6,000); the other settings are not used.
    `protocol: streaming`: the fast protocol's linear probes trained by Adam (`lr`, `batch_size`, default 256,
    `max_epochs`) on mini-batches read from the memory-mapped cache, on the `--trainer.*` devices (DDP): for
    features that do not fit in memory; classification targets only.
    Hyper-parameters and the best layer are chosen on validation in all three.
    """

    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    regression_targets: list[str] = field(default_factory=list)
    protocol: str = "fast"
    grid: dict[str, list] | None = None
    search: str = "grid"
    model: str = "linear"
    hidden_size: int = 512
    dropout: float = 0.0
    lr: float = 1e-2
    weight_decay: float | list[float] = field(default_factory=lambda: list(FAST_WEIGHT_DECAYS))
    max_epochs: int = 500
    patience: int = 30
    batch_size: int | None = None
    seed: int = 0


@dataclass
class HelixOptions:
    """Pitch helix on the `pitch_label` column (skipped when disabled or the stimuli have no such column).

    Significance against `n_surrogates` draws of each layer's smooth null (`helix_beyond_smooth`: q_helix <= `alpha`,
    Benjamini–Hochberg over the layers); ω's interval from `n_bootstrap` clip resamplings within pitch;
    `n_permutations` > 0 adds the shuffled-pitch null (for comparison only). See
    `earlens.probing.helicality.helix_probe`.
    """

    enabled: bool = True
    pitch_label: str = "midi_pitch"
    n_components: int = 5
    n_surrogates: int = 499
    alpha: float = 0.05
    n_bootstrap: int = 100
    n_permutations: int = 0
    select_by: str = "r2"
    seed: int = 0


@dataclass
class PartialsOptions:
    """With `--stimuli.concept partials` (stimuli with known partials, `earlens.stats.partials`; `stimuli.options` go to
    `partials_probe`: n_bands, n_per_context, n_tones, seconds, fmin, fmax, ...): `random_init` also probes the same
    architecture at random initialisation (the null of a trained model; impossible for TFLite graphs)."""

    random_init: bool = True
    seed: int = 0


@dataclass
class ProbesOptions:
    linear: LinearProbeOptions = field(default_factory=LinearProbeOptions)
    helix: HelixOptions = field(default_factory=HelixOptions)
    partials: PartialsOptions = field(default_factory=PartialsOptions)


TRAINING_PREFIXES = ("gabor_", "mel_", "sample_cnn_", "ssl_")  # train.py's configs, not listed by probe.py --help


def build_parser() -> ArgumentParser:
    from earlens.lightning_modules.cli import CONFIG_DIR

    configs = sorted(path.stem for path in CONFIG_DIR.glob("*.yaml") if not path.stem.startswith(TRAINING_PREFIXES))
    parser = ArgumentParser(prog="probe.py", usage="probe.py --config NAME [--GROUP.OPTION VALUE ...]",
                            description=__doc__.split("\n")[0], exit_on_error=False,
                            epilog="configs: " + ", ".join(configs))
    parser.add_argument("--config", action=ActionConfigFile, help="configs/NAME.yaml or a path")
    parser.add_argument("--stimuli", type=StimuliOptions, default=StimuliOptions())
    parser.add_argument("--backbone", type=BackboneOptions, default=BackboneOptions())
    parser.add_argument("--features", type=FeatureOptions, default=FeatureOptions())
    parser.add_argument("--probes", type=ProbesOptions, default=ProbesOptions())
    parser.add_argument("--trainer.accelerator", type=str, default="auto", help="cpu, gpu, auto")
    parser.add_argument("--trainer.strategy", type=str, default="auto", help="ddp to extract on several devices")
    parser.add_argument("--trainer.devices", type=int | str | list[int], default=1, help="how many, or which")
    parser.add_argument("--trainer.num_nodes", type=int, default=1, help="nodes (torchrun, SLURM)")
    parser.add_argument("--trainer.precision", type=str | None, default=None,
                        help="bf16-mixed: extract under bf16 autocast (GPU); part of the cache key")
    parser.add_argument("--run_dir", type=str | None, default=None, help="run folder (default runs/<config>/<time>)")
    parser.add_argument("--wandb_project", type=str, default="earlens")
    parser.add_argument("--progress", type=bool, default=True, help="tqdm progress bars")
    parser.add_argument("--threads", type=int | None, default=None, help="torch CPU threads (default: torch's)")
    return parser
