"""Voice activity on the AMI test meetings: silero-vad (weights from its wheel) beside trained earlens runs, every
system scored the same way by `pyannote.metrics` inside the UEM.

    python bench/vad_baselines.py                                    # silero-vad only
    python bench/vad_baselines.py --runs runs/gabor_vad/* runs/mel_vad/*   # plus trained train.py runs
    python bench/vad_baselines.py --collar 0.25

silero-vad gives P(speech) per 32 ms chunk and is binarised with its own defaults (onset 0.5, offset 0.35, speech
≥ 250 ms, gaps ≥ 100 ms); earlens runs give P(speech) per 10 ms frame, binarised at 0.5 with no minimum durations,
as in training (`predict.py`'s defaults). Prints one row per system: detection error rate, precision, recall and
F-measure over both test meetings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from earlens.io.audio import load_audio
from earlens.io.paths import data_root
from earlens.io.vad import fold_uri, score_annotations, speech_annotation, speech_regions
from earlens.lightning_modules.cli import load_run
from earlens.models.pretrained.silero import load_silero_vad

SILERO_SECONDS = 512 / 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="train.py run folders of VAD models")
    parser.add_argument("--collar", type=float, default=0.0)
    args = parser.parse_args()
    ami = data_root(dataset="ami_mini")
    uris = [line.strip() for line in (ami / "debug.test.lst").read_text(encoding="utf-8").splitlines() if line.strip()]
    waves = {uri: load_audio(ami / f"{fold_uri(uri)}.wav", 16000) for uri in uris}
    systems = {}
    silero = load_silero_vad(layers=["speech_prob"])
    hypotheses = {}
    with torch.no_grad():
        for uri, wave in waves.items():
            speech = silero(torch.from_numpy(wave)[None])[0][0, :, 0].numpy()
            regions = speech_regions(speech, SILERO_SECONDS, 0.5, 0.35, 0.25, 0.1)
            shifted = [(a + SILERO_SECONDS / 2, b + SILERO_SECONDS / 2) for a, b in regions]  # chunks start at 0
            hypotheses[uri] = speech_annotation(uri, shifted, len(wave) / 16000)
    systems["silero-vad 6.2.3 (wheel weights)"] = hypotheses
    for run in args.runs:
        model, _ = load_run(run)
        frame = model.frontend.hop_length / model.frontend.sample_rate
        systems[f"{run.parent.name}/{run.name}"] = {
            uri: speech_annotation(uri, speech_regions(model.frame_probabilities(wave)[:, 1], frame, 0.5, 0.5, 0, 0),
                                   len(wave) / 16000) for uri, wave in waves.items()}
    print(f"AMI test meetings ({', '.join(uris)}), collar {args.collar} s\n")
    print("| system | detection error rate | precision | recall | F-measure |")
    print("|---|---|---|---|---|")
    for name, hypotheses in systems.items():
        scores = score_annotations(hypotheses, ami / "debug.test.rttm", ami / "debug.test.uem", args.collar)
        print(f"| {name} | {scores['detection_error_rate']:.3f} | {scores['precision']:.3f} | "
              f"{scores['recall']:.3f} | {scores['f_measure']:.3f} |")


if __name__ == "__main__":
    main()
