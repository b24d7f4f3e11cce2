"""Every figure earlens draws from its results (matplotlib `Figure`s, no pyplot state: safe in callbacks and workers).

The science modules compute; this module draws: metrics over epoch × layer, the pitch helix, rank–frequency
curves, partials, learned filters (kernel grids, rate-scale transfer functions, waveform filter responses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from scipy.special import logsumexp

from earlens.frontend.filters import ArrayLike, tile_kernels
from earlens.stats.partials import band_mean
from earlens.stats.power_law import clean_counts
from earlens.stats.zipf import ZipfResult

if TYPE_CHECKING:
    from earlens.probing.helicality import HelixProbeResult
    from earlens.probing.probes_common import ProbeResult


def plot_epoch_layer_heatmap(rows: list[dict], metric: str, mark_metric: str | None = None,
                             mark_at_most: float | None = None, title: str | None = None) -> Figure:
    """Heatmap of `metric` over epoch (x) × layer (y) from long rows {epoch, layer, metric, value}.

    Cells where `mark_metric` ≤ `mark_at_most` (e.g. p_helix ≤ α) get a white dot: where the effect is significant.
    Layers keep their first-seen order (the model's order when rows come from a callback).
    """
    layers = list(dict.fromkeys(r["layer"] for r in rows if r["metric"] == metric))
    epochs = sorted({int(r["epoch"]) for r in rows if r["metric"] == metric})
    if not layers:
        raise ValueError(f"no rows of metric {metric!r}")
    grid = np.full((len(layers), len(epochs)), np.nan)
    marks = np.zeros_like(grid, dtype=bool)
    for r in rows:
        if r["layer"] not in layers or int(r["epoch"]) not in epochs:
            continue
        cell = layers.index(r["layer"]), epochs.index(int(r["epoch"]))
        if r["metric"] == metric:
            grid[cell] = float(r["value"])
        elif mark_metric and r["metric"] == mark_metric and float(r["value"]) <= mark_at_most:
            marks[cell] = True
    fig = Figure(figsize=(max(4.0, 0.35 * len(epochs) + 2.5), max(2.5, 0.3 * len(layers) + 1.2)))
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ys, xs = np.nonzero(marks)
    if len(xs):
        ax.plot(xs, ys, "o", color="white", markersize=4, label=f"{mark_metric} ≤ {mark_at_most:g}")
        ax.legend(fontsize=7, loc="upper right", framealpha=0.5)
    ax.set_xticks(range(len(epochs)), epochs, fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer")
    ax.set_title(title or metric, fontsize=9)
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    return fig


def plot_helix(result: HelixProbeResult, layer: int | None = None, title: str | None = None):
    """3-D scatter of a layer's per-pitch PCA points (coloured by pitch class) with its fitted helix."""
    layer = int(np.argmax(result.r2)) if layer is None else layer
    points, fit = result.points[layer], result.fit[layer]
    dense = np.linspace(result.t[0], result.t[-1], 20 * len(result.t))
    curve = fit.curve(dense)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="3d")
    ax.plot(*curve.T, color="0.4", lw=1)
    sc = ax.scatter(*points.T, c=result.pitches % 12, cmap="twilight", vmin=0, vmax=12, s=25, depthshade=False)
    pcs = [f"PC{i + 1}" for i in result.best_triple[layer]]
    ax.set_xlabel(pcs[0])
    ax.set_ylabel(pcs[1])
    ax.set_zlabel(pcs[2])
    fig.colorbar(sc, ax=ax, shrink=0.6, label="pitch class")
    ax.set_title(title or f"layer {layer}: R²={result.r2[layer]:.3f}, p_helix={result.p_helix[layer]:.2f}, "
                 f"ω={result.omega_chroma[layer]:.3f} (π/6={np.pi / 6:.3f})", fontsize=9)
    return fig


def plot_helicality_vs_layer(result: HelixProbeResult, layer_names=None, title: str = "helicality",
                             alpha: float = 0.05):
    """R² per layer with the shuffled-pitch null's mean ± 2 std band, stars where the turn beats smooth curves
    (q_helix ≤ alpha over layers), and ω_chroma on a second axis."""
    x = np.arange(len(result.r2))
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    stats = result.layer_stats()
    mean, std = stats["perm_null_mean"], stats["perm_null_std"]
    ax.fill_between(x, mean - 2 * std, mean + 2 * std, color="0.85", label="shuffled pitch ± 2σ")
    ax.plot(x, mean, color="0.5", lw=1)
    ax.plot(x, result.r2, "o-", color="C0", label="helix R²")
    beyond = stats["q_helix"] <= alpha
    ax.plot(x[beyond], result.r2[beyond], "*", color="C3", ms=11, label=f"beyond smooth (q ≤ {alpha:g})")
    ax.set_xlabel("layer")
    ax.set_ylabel("R²")
    ax.set_title(title)
    omega_axis = ax.twinx()
    omega_axis.plot(x, result.omega_chroma, "s--", color="C1", ms=3, label="ω_chroma")
    omega_axis.axhline(np.pi / 6, color="C1", lw=0.5, ls=":")
    omega_axis.set_ylabel("ω_chroma (rad/semitone)")
    if layer_names is not None:
        ax.set_xticks(x, layer_names, rotation=60, ha="right", fontsize=7)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def rank_frequency_plot(counts, fit: ZipfResult, title: str = "rank–frequency") -> Figure:
    """Log-log rank–frequency plot with the Zipf–Mandelbrot fit over the observed ranks (labelled with the source's
    corrected α and interval), the count-tail power law (ranks 1..n_tail, through (n_tail, xmin)) and the LS line,
    each labelled with its exponent and range, the tail with its p-value, verdict and power."""
    frequencies = np.sort(clean_counts(counts))[::-1]
    ranks = np.arange(1, frequencies.size + 1)
    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.loglog(ranks, frequencies, ".", markersize=3, color="0.3", label="symbols")
    if np.isfinite(fit.alpha_zm_observed):
        log_model = -fit.alpha_zm_observed * np.log(ranks + fit.q_zm_observed)
        expected = fit.n_tokens * np.exp(log_model - logsumexp(log_model))
        source = (f"; source α={fit.alpha_zm:.3f} [{fit.alpha_zm_low:.3f}, {fit.alpha_zm_high:.3f}]"
                  if np.isfinite(fit.alpha_zm) else "")
        axes.loglog(ranks, expected, "-", color="C0",
                    label=f"ZM α={fit.alpha_zm_observed:.3f}, q={fit.q_zm_observed:.2f} (r≤{fit.vocab_size}){source}")
    if np.isfinite(fit.alpha_tail):
        tail_ranks = np.arange(1, fit.n_tail + 1)
        power = f", power {fit.power_lognormal:.2f}" if np.isfinite(fit.power_lognormal) else ""
        axes.loglog(tail_ranks, fit.xmin * (tail_ranks / fit.n_tail) ** -fit.alpha_tail, ":", color="C2",
                    label=f"tail α={fit.alpha_tail:.3f} (r≤{fit.n_tail}), p={fit.p_value:.2f}, {fit.verdict}{power}")
    if np.isfinite(fit.alpha_ls):
        lo, hi = fit.ls_rank_range
        ls_ranks = np.arange(lo, hi + 1)
        intercept = np.mean(np.log(frequencies[lo - 1 : hi]) + fit.alpha_ls * np.log(ls_ranks))
        axes.loglog(ls_ranks, np.exp(intercept) * ls_ranks**-fit.alpha_ls, "--", color="C1",
                    label=f"LS α={fit.alpha_ls:.3f} (r={lo}..{hi})")
    axes.set(xlabel="rank", ylabel="frequency", title=title)
    axes.legend(fontsize=7)
    return figure


def plot_partials(result: dict, title: str = "") -> Figure:
    """Per latent layer: context invariance (with its shuffled-label null, split-half ceiling and the random-init
    model) and the share of single-band units; and the band directions' tuning curves to pure tones in the most
    invariant layer (each curve scaled to [0, 1], band edges dotted). Constant layers (no statistics) are left out."""
    layers = {name: stats for name, stats in result["layers"].items()
              if "codes" not in stats and not stats["constant_layer"]}
    init = {name: stats for name, stats in (result.get("init") or {}).items() if "codes" not in stats}
    figure = Figure(figsize=(15, 4.2))
    axes = figure.subplots(1, 3)
    if not layers:
        axes[0].set_title("no latent layers")
        return figure
    names = list(layers)
    x = np.arange(len(names))
    series = [("invariance", layers, "invariance", "-o"), ("split-half ceiling", layers, "split_half", ":s"),
              ("shuffled-label null", layers, "invariance_null", "--^"), ("random init", init, "invariance", "-x")]
    for label, source, key, style in series:
        if source:
            axes[0].plot(x, [band_mean(source[name][key]) for name in names], style, label=label)
    for label, source, key, style in [("units", layers, "unit_one_band_share", "-o"),
                                      ("random directions", layers, "random_direction_one_band_share", "--^"),
                                      ("units, random init", init, "unit_one_band_share", "-x")]:
        if source:
            axes[1].plot(x, [source[name][key] for name in names], style, label=label)
    for axis, ylabel in zip(axes[:2], ("cosine of band directions across contexts", "share tuned to one band")):
        axis.set_xticks(x, names, rotation=45, ha="right")
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=8)
    best = max(names, key=lambda name: band_mean(layers[name]["invariance"]))
    curves = layers[best]["direction_curves"]
    span = curves.max(1, keepdims=True) - curves.min(1, keepdims=True)
    scaled = (curves - curves.min(1, keepdims=True)) / np.where(span > 0, span, 1)
    tone_hz, edges = result["tone_hz"], result["bands"]
    axes[2].imshow(scaled, aspect="auto", origin="lower", cmap="magma",
                   extent=(np.log2(tone_hz[0]), np.log2(tone_hz[-1]), -0.5, len(scaled) - 0.5))
    for edge in np.log2(edges):
        axes[2].axvline(edge, color="white", lw=0.5, ls=":")
    ticks = np.log2(edges[:: max(1, len(edges) // 6)])
    axes[2].set_xticks(ticks, [f"{2 ** t:.0f}" for t in ticks])
    axes[2].set_xlabel("pure tone (Hz)")
    axes[2].set_ylabel("band direction")
    axes[2].set_title(f"direction tuning, {best}")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_scores_vs_layer(layer_names: list[str], probes: dict[str, ProbeResult]) -> Figure:
    """Test (solid) and validation (dashed) score per layer for each target, with chance levels."""
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    x = np.arange(len(layer_names))
    for color, (target, result) in enumerate(probes.items()):
        name = result.score_name
        ax.plot(x, result.metrics[f"test_{name}"], "o-", color=f"C{color}", label=f"{target} test {name}")
        ax.plot(x, result.metrics[f"val_{name}"], "--", color=f"C{color}", alpha=0.5)
        if result.classes is not None:
            ax.axhline(1 / len(result.classes), color=f"C{color}", lw=0.7, ls=":")
    ax.set_xticks(x, layer_names, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("test score (dotted: chance)")
    ax.set_ylim(top=1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_helicality_over_training(epochs: np.ndarray, r2: np.ndarray, q_helix: np.ndarray, layer_names,
                                  alpha: float = 0.05, title: str = "helicality during training"):
    """Helix R² (left) and the q-value of turning beyond smooth curves (right, log scale, `alpha` dashed) per layer
    against epoch: `r2`, `q_helix` `(E, L)` at `epochs` `(E,)`."""
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for layer, name in enumerate(layer_names):
        left.plot(epochs, r2[:, layer], "o-", ms=3, color=f"C{layer}", label=name)
        right.plot(epochs, q_helix[:, layer], "o-", ms=3, color=f"C{layer}", label=name)
    right.axhline(alpha, color="0.3", ls="--", lw=1, label=f"α = {alpha}")
    right.set_yscale("log")
    left.set(xlabel="epoch", ylabel="helix R²", title=title)
    right.set(xlabel="epoch", ylabel="q_helix (BH over layers × epochs)")
    left.legend(fontsize=7, loc="best")
    right.legend(handles=right.get_lines()[-1:], fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_kernel_grid(real: ArrayLike, title: str = "Gabor kernels (real part)") -> Figure:
    """Grid of kernels (frequency up, time right; filter 0 bottom left), each on its own colour scale."""
    image = tile_kernels(real)
    fig = Figure(figsize=(6, 6 * image.shape[0] / max(image.shape[1], 1) + 0.6))
    ax = fig.subplots()
    ax.imshow(image, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
    ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    return fig



def plot_rate_scale(
    rate_hz: np.ndarray,
    scale_cyc_per_oct: np.ndarray,
    mtf: np.ndarray,
    centres: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "Gabor filterbank MTF",
) -> Figure:
    """Sum over filters of each filter's MTF scaled to peak 1 (so every filter counts once) on the
    rate (Hz) x scale (cyc/oct) plane; `centres` = (rate_hz, scale) per filter marked with dots."""
    density = (mtf / np.maximum(mtf.max(axis=(1, 2), keepdims=True), 1e-12)).sum(0)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    mesh = ax.pcolormesh(rate_hz, scale_cyc_per_oct, density, shading="nearest", cmap="magma")
    if centres is not None:
        ax.scatter(*centres, s=8, c="cyan", label="filter carrier")
        ax.legend(loc="upper right", fontsize=7)
    fig.colorbar(mesh, ax=ax, label="summed normalised |MTF|")
    ax.set(xlabel="rate (Hz)", ylabel="scale (cycles/octave)", title=title)
    fig.tight_layout()
    return fig



def plot_conv_responses(
    freqs_hz: np.ndarray,
    power: np.ndarray,
    peak_hz: np.ndarray,
    baseline_peak_hz: np.ndarray | None = None,
    title: str = "conv filters",
) -> Figure:
    """Left: responses in dB (each filter's peak = 0 dB), filters sorted by peak frequency. Right: histogram
    of peak frequencies, against `baseline_peak_hz` (e.g. the same layer at random init) when given."""
    order = np.argsort(peak_hz, kind="stable")
    db = 10 * np.log10(power[order] / np.maximum(power.max(axis=-1, keepdims=True)[order], 1e-300) + 1e-12)
    fig = Figure(figsize=(11, 4))
    ax_img, ax_hist = fig.subplots(1, 2)
    image = ax_img.imshow(db, aspect="auto", origin="lower", cmap="viridis", vmin=-40, vmax=0,
                          extent=(freqs_hz[0], freqs_hz[-1], 0, len(order)), interpolation="nearest")
    fig.colorbar(image, ax=ax_img, label="dB re peak")
    ax_img.set(xlabel="frequency (Hz)", ylabel="filter (sorted by peak)", title=f"{title}: responses")
    bins = np.linspace(0, freqs_hz[-1], 65)
    ax_hist.hist(peak_hz, bins=bins, alpha=0.7, label="trained")
    if baseline_peak_hz is not None:
        ax_hist.hist(baseline_peak_hz, bins=bins, alpha=0.5, label="random init")
        ax_hist.legend()
    ax_hist.set(xlabel="peak frequency (Hz)", ylabel="filters", title=f"{title}: peak frequencies")
    fig.tight_layout()
    return fig


def plot_layer_curves(steps: np.ndarray, values: dict[str, np.ndarray], layer_names, chance: dict | None = None,
                      title: str = ""):
    """One panel per statistic of `values` (`{name: (runs, steps, layers)}`): per layer the mean over runs against
    training step with a ±1 sd band, the random initialisation (step 0's mean) dotted, and chance (`chance[name]`)
    dashed."""
    chance = chance or {}
    fig = Figure(figsize=(4.2 * len(values), 3.6))
    for panel, (name, array) in enumerate(values.items()):
        ax = fig.add_subplot(1, len(values), panel + 1)
        mean, sd = np.nanmean(array, axis=0), np.nanstd(array, axis=0)
        for layer, label in enumerate(layer_names):
            color = f"C{layer}"
            ax.plot(steps, mean[:, layer], "o-", ms=3, color=color, label=label)
            ax.fill_between(steps, mean[:, layer] - sd[:, layer], mean[:, layer] + sd[:, layer], color=color,
                            alpha=0.15, lw=0)
            ax.axhline(mean[0, layer], color=color, ls=":", lw=1)
        if name in chance:
            ax.axhline(chance[name], color="0.3", ls="--", lw=1, label="chance")
        ax.set(xlabel="training step", ylabel=name.replace("_", " "), title=title if panel == 0 else "")
    fig.axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
