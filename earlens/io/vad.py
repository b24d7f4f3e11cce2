"""Voice activity as the field scores it: speech regions from frame probabilities, and pyannote.metrics scores.

`speech_regions` binarises P(speech) with onset/offset hysteresis and minimum durations (the usual VAD
post-processing); `speech_annotation` turns regions into a `pyannote.core.Annotation`; `score_annotations` computes
detection error rate, precision, recall and F-measure with `pyannote.metrics` inside a UEM.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import numpy as np


def fold_uri(uri: str) -> str:
    """ASCII folding used to match uris across lst, RTTM, UEM and file names (`trñ00` -> `trn00`)."""
    return unicodedata.normalize("NFKD", uri).encode("ascii", "ignore").decode("ascii")


def speech_regions(speech: np.ndarray, frame_seconds: float, onset: float, offset: float,
                   min_duration_on: float, min_duration_off: float) -> list[tuple[float, float]]:
    """Hysteresis thresholding of P(speech) per frame (frame i centred at i·frame_seconds): a region starts when P
    rises above `onset` and ends when it falls below `offset`; gaps shorter than `min_duration_off` are filled,
    then regions shorter than `min_duration_on` removed. Returns (start, end) seconds."""
    regions, active, start = [], False, 0
    for i, p in enumerate(speech):
        if not active and p > onset:
            active, start = True, i
        elif active and p < offset:
            active = False
            regions.append([start, i])
    if active:
        regions.append([start, len(speech)])
    merged = []
    for region in regions:
        if merged and (region[0] - merged[-1][1]) * frame_seconds < min_duration_off:
            merged[-1][1] = region[1]
        else:
            merged.append(region)
    half = frame_seconds / 2
    return [(max(a * frame_seconds - half, 0.0), b * frame_seconds - half) for a, b in merged
            if (b - a) * frame_seconds >= min_duration_on]


def speech_annotation(uri: str, regions: list[tuple[float, float]], duration: float):
    """`pyannote.core.Annotation` labelled "speech" of (start, end) regions clipped to [0, duration]."""
    from pyannote.core import Annotation, Segment

    result = Annotation(uri=uri)
    for start, end in regions:
        start, end = max(start, 0.0), min(end, duration)
        if end > start:
            result[Segment(start, end)] = "speech"
    return result


def score_annotations(hypotheses: dict, reference: Path, uem: Path | None, collar: float) -> dict:
    """Detection error rate, precision, recall and F-measure (pyannote.metrics, `collar` seconds forgiven around
    reference boundaries, scored inside the UEM) of `{uri: Annotation}` speech, per file and in total. Uris are
    matched by ASCII folding, as the AMI lists need."""
    from pyannote.database.util import load_rttm, load_uem
    from pyannote.metrics.detection import DetectionErrorRate, DetectionPrecisionRecallFMeasure

    references = {fold_uri(uri): annotation for uri, annotation in load_rttm(reference).items()}
    scored = {fold_uri(uri): timeline for uri, timeline in load_uem(uem).items()} if uem else {}
    error, fmeasure = DetectionErrorRate(collar=collar), DetectionPrecisionRecallFMeasure(collar=collar)
    per_file = {}
    for name, hypothesis in hypotheses.items():
        uri = fold_uri(name)
        if uri not in references:
            print(f"{name}: no reference turns for {uri!r} in {reference}", file=sys.stderr)
            continue
        uem_timeline = scored.get(uri)  # detection metrics read timelines: speaker labels do not matter
        per_file[uri] = {"detection_error_rate": error(references[uri], hypothesis, uem=uem_timeline),
                         "f_measure": fmeasure(references[uri], hypothesis, uem=uem_timeline)}
    totals = fmeasure.accumulated_
    return {"collar": collar, "detection_error_rate": abs(error),
            "precision": totals["relevant retrieved"] / max(totals["retrieved"], 1e-12),
            "recall": totals["relevant retrieved"] / max(totals["relevant"], 1e-12), "f_measure": abs(fmeasure),
            "files": per_file}
