"""Do partials stabilise inside waveform encoders? Per-layer tables of `earlens.stats.partials.partials_probe`.

    python bench/partials.py --model crepe-tiny --plot partials_crepe.png [--seeds 0 1 2]
    python bench/partials.py --model lyra --plot partials_lyra.png [--seeds 0 1 2]
    python bench/partials.py --model encodec --name_or_path DIR_OR_HUB_ID   # real EnCodec weights (local)

(from the repository root with earlens installed, or `PYTHONPATH=.`)

CREPE and EnCodec are also probed at random initialisation (same architecture, seeded PyTorch default init) on
the same stimuli; the Lyra TFLite graph cannot be re-initialised, so its null is the shuffled-label one only. With
several --seeds every number is the mean ± standard deviation over the seeds (stimuli, folds, shuffles and the
random-init weights drawn anew), the spread a single seed's number carries.
Prints one markdown table of latent layers (band means: presence AUC time-pooled and per frame, level R²,
context invariance with its within-context split-half ceiling, unit and band-direction selectivity) and one of
code views (MI, purity, bands spanned, code→band map hit rate across contexts), each next to its null.
"""

from __future__ import annotations

import argparse
import time

import torch

from earlens.models.backbones import load_backbone, random_init
from earlens.plots import plot_partials
from earlens.stats.partials import partials_probe, seed_summary_rows

LATENT_TABLE = [("layer", "layer"), ("band_auc", "AUC"), ("band_auc_null", "AUC null"), ("frame_auc", "frame AUC"),
                ("frame_auc_null", "frame null"), ("band_r2", "level R²"), ("invariance", "invariance"),
                ("invariance_null", "inv. null"), ("invariance_ratio", "inv. ratio (halves)"),
                ("split_half", "split-half"),
                ("unit_one_band_share", "units 1-band"), ("random_direction_one_band_share", "random dirs 1-band"),
                ("unit_q", "unit Q"), ("band_direction_peak_in_band", "dir. peak in band"),
                ("null_direction_peak_in_band", "null dir. peak"), ("note", "note")]
CODE_TABLE = [("layer", "layer"), ("view", "codebooks"), ("n_codes", "codes"), ("mi_norm", "MI/H(band)"),
              ("mi_norm_null_p95", "null p95"), ("mi_p_value_bh", "MI p (BH)"), ("purity", "purity"),
              ("purity_null", "purity null"),
              ("bands_spanned", "bands spanned"), ("bands_spanned_null", "bands null"), ("hit_rate", "map hit rate"),
              ("hit_rate_null", "hit null"), ("hit_rate_p_value_bh", "hit p (BH)"),
              ("coverage", "coverage"), ("note", "note")]


def backbone_encode(backbone):
    """An `earlens.models.backbones` backbone as a partials encoder: {layer name: (B, frames, D)}."""
    return lambda waves: dict(zip(backbone.layer_names, backbone(waves)))


def encodec_encode(model, bandwidth: float | None = None):
    """EnCodec encoder blocks (hooks, as `load_backbone('encodec')` reads them) and the RVQ codes (B, frames, K)."""
    from earlens.models.backbones import encodec_backbone

    backbone = encodec_backbone(model, "encodec")
    bandwidth = bandwidth or model.config.target_bandwidths[-1]

    def encode(waves):
        layers = dict(zip(backbone.layer_names, backbone(waves)))
        with torch.no_grad():
            codes = model.encode(waves[:, None], bandwidth=bandwidth).audio_codes
        chunks, batch, n_codebooks, n_frames = codes.shape  # chunks (when the config sets chunk_length) follow in time
        layers["codes"] = codes.permute(1, 0, 3, 2).reshape(batch, chunks * n_frames, n_codebooks)
        return layers

    return encode


def median_q(row: dict, prefix: str = "unit") -> str:
    """The median Q, or "≥ bound" where lobes narrower than the tone grid resolves leave only its lower bound."""
    value, bound = row.get(f"{prefix}_median_q", float("nan")), row.get(f"{prefix}_median_q_at_least", float("nan"))
    return f"{value:.2f}" if value == value else (f"≥ {bound:.2f}" if bound == bound else "nan")


def markdown(rows: list[dict], columns) -> str:
    """A markdown table; a number with a finite ``<key>_sd`` (several seeds) prints as mean ± sd."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _ in columns:
            value, spread = row.get(key, ""), row.get(f"{key}_sd", float("nan"))
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            cells.append(text + (f" ± {spread:.3f}" if spread == spread and isinstance(value, float) else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def encoders(args, parser, seed: int):
    """(encode, init_encode or None, sample rate) of the model, the random-init copy drawn with ``seed``."""
    if args.model.startswith("crepe") or args.model == "lyra":  # as `probe.py --config partials_crepe/_lyra`
        if args.model == "lyra":
            trained = load_backbone("lyra", k=4)
        else:
            trained = load_backbone("crepe", args.model.split("-")[1], hop_length=args.hop_length)
        fresh = random_init(trained, seed)  # None for Lyra's TFLite graph
        return backbone_encode(trained), fresh and backbone_encode(fresh), trained.sample_rate
    import transformers

    from earlens.models.backbones import from_pretrained_local

    if not args.name_or_path:
        parser.error("--model encodec needs --name_or_path (local EnCodec weights)")
    model = from_pretrained_local(transformers.EncodecModel, args.name_or_path, "encodec").eval()
    torch.manual_seed(seed)
    return encodec_encode(model), encodec_encode(transformers.EncodecModel(model.config).eval()), \
        model.config.sampling_rate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=["crepe-tiny", "crepe-full", "lyra", "encodec"])
    parser.add_argument("--name_or_path", help="EnCodec weights: a local folder or a hub id in the HF cache")
    parser.add_argument("--hop_length", type=int, default=1024, help="CREPE frame hop (samples)")
    parser.add_argument("--n_per_context", type=int, default=100)
    parser.add_argument("--n_bands", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one probe per seed (stimuli, folds, shuffles, random-init weights); several print "
                             "mean ± sd across them")
    parser.add_argument("--plot", help="PNG path for the tuning-curve / invariance figure (first seed)")
    args = parser.parse_args(argv)

    results = []
    start = time.perf_counter()
    for seed in args.seeds:
        encode, init, sample_rate = encoders(args, parser, seed)
        results.append(partials_probe(encode, sample_rate, n_bands=args.n_bands, n_per_context=args.n_per_context,
                                      seconds=args.seconds, seed=seed, init_encode=init))
    result = results[0]
    print(f"{args.model}: {args.n_bands} bands {result['bands'][0]:.0f}-{result['bands'][-1]:.0f} Hz, "
          f"{args.n_per_context} items x 5 contexts, {len(result['tone_hz'])} tones, seeds {args.seeds}, "
          f"{time.perf_counter() - start:.0f} s\n")
    for title, key in (("trained", "layers"), ("random init", "init")):
        if not result.get(key):
            continue
        rows = seed_summary_rows([r[key] for r in results])
        latent_rows = [{**row, "unit_q": median_q(row)} for row in rows if "view" not in row]
        code_rows = [row for row in rows if "view" in row]
        if latent_rows:
            print(f"### latents, {title}\n\n{markdown(latent_rows, LATENT_TABLE)}\n")
        if code_rows:
            print(f"### codes, {title}\n\n{markdown(code_rows, CODE_TABLE)}\n")
    if args.plot:
        plot_partials(result, title=args.model).savefig(args.plot, dpi=120)
        print(f"figure: {args.plot}")


if __name__ == "__main__":
    main()
