"""Run a trained model on new recordings: `python predict.py RUN_DIR AUDIO... [--out DIR] [--reference RTTM]`.

AUDIO: files, folders (searched recursively for audio of any format) or list files (`.txt`/`.lst`, one path per
line). Voice activity models write one RTTM per file (speech regions from the frame probabilities with onset/offset
hysteresis and minimum durations, via `pyannote.core`) and the frame probabilities as CSV; with `--reference` (and
`--uem`) they are scored with `pyannote.metrics` (detection error rate, precision, recall, F-measure; `--collar`).
Clip models write `predictions.csv`: the label and every class's probability, averaged over sliding windows of the
training clip length for longer files. An unreadable or missing file costs one line on stderr; the rest are still
processed. The exit status is non-zero when no file could be processed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from earlens.io.audio import AudioError, find_audio, is_audio_name, load_audio
from earlens.io.vad import score_annotations, speech_annotation, speech_regions
from earlens.lightning_modules.checkpointing import CheckpointError
from earlens.lightning_modules.cli import load_run


class NothingProcessed(RuntimeError):
    """No input gave a result: the command failed, even though each input was only skipped."""


def audio_inputs(items: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (recursive) and list files expanded into audio paths, in the order given, and one line for
    each input that gives nothing: a missing file, folder or list (whatever its extension), a missing file named by
    a list, a folder without audio. Unreadable files are found later, when decoded."""
    paths, missing = [], []
    for item in map(Path, items):
        if item.is_dir():
            found = find_audio(item)[0]
            paths += found
            if not found:
                missing.append(f"{item}: no audio files in this folder")
        elif item.suffix.lower() in (".txt", ".lst") and item.is_file():
            lines = [x.strip() for x in item.read_text(encoding="utf-8").splitlines()]
            for number, line in ((n, x) for n, x in enumerate(lines, start=1) if x):
                path = Path(line) if Path(line).is_absolute() else item.parent / line
                # a protocol list names uris: take the audio file of that name beside the list
                candidates = [path] if path.exists() else [p for p in sorted(path.parent.glob(f"{path.name}.*"))
                                                           if is_audio_name(p)]
                if candidates:
                    paths.append(candidates[0])
                else:
                    missing.append(f"{item}:{number}: {path}: no such file")
            if not any(lines):
                missing.append(f"{item}: an empty list")
        elif item.is_file():
            paths.append(item)
        else:
            missing.append(f"{item}: no such file, folder or list")
    return paths, missing


def predict_vad(model, paths, out: Path, args, errors) -> list[Path]:
    rttms = []
    frame_seconds = model.frontend.hop_length / model.frontend.sample_rate
    for path in tqdm(paths, desc="voice activity", unit="file"):
        try:
            wave = load_audio(path, model.frontend.sample_rate)
        except AudioError as err:
            errors.append(str(err))
            print(f"predict.py: skipping {err}", file=sys.stderr)
            continue
        speech = model.frame_probabilities(wave, args.chunk_seconds)[:, 1]
        uri = path.stem
        with open(out / f"{uri}.frames.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["time_s", "speech_prob"])
            writer.writerows((f"{i * frame_seconds:.3f}", f"{p:.4f}") for i, p in enumerate(speech))
        regions = speech_regions(speech, frame_seconds, args.onset, args.offset, args.min_duration_on,
                                 args.min_duration_off)
        annotation = speech_annotation(uri, regions, len(wave) / model.frontend.sample_rate)
        rttm = out / f"{uri}.rttm"
        with open(rttm, "w") as file:
            annotation.write_rttm(file)
        rttms.append(rttm)
    return rttms


def score_vad(rttms: list[Path], reference: Path, uem: Path | None, collar: float) -> dict:
    """pyannote.metrics detection scores of the written RTTMs against a reference RTTM (see `score_annotations`)."""
    from pyannote.core import Annotation
    from pyannote.database.util import load_rttm

    hypotheses = {}
    for rttm in rttms:
        uri = rttm.name.removesuffix(".rttm")
        hypotheses[uri] = next(iter(load_rttm(rttm).values()), Annotation(uri=uri))
    return score_annotations(hypotheses, reference, uem, collar)


@torch.no_grad()
def predict_clips(model, paths, out: Path, window_seconds: float, args, errors) -> Path:
    """Class probabilities per file: one pass for a file up to `window_seconds`, else the mean over windows of that
    length every half window (the last one ending at the file's end)."""
    rate = model.frontend.sample_rate
    window = round(window_seconds * rate)
    names = model.hparams.class_names or [str(k) for k in range(model.hparams.num_classes)]
    table = out / "predictions.csv"
    with open(table, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "n_windows", *[f"p_{name}" for name in names]])
        for path in tqdm(paths, desc="clips", unit="file"):
            try:
                wave = load_audio(path, rate)
            except AudioError as err:
                errors.append(str(err))
                print(f"predict.py: skipping {err}", file=sys.stderr)
                continue
            starts = [0] if len(wave) <= window else sorted({*range(0, len(wave) - window + 1, window // 2),
                                                             len(wave) - window})
            pieces = torch.stack([torch.from_numpy(np.pad(wave[s: s + window], (0, max(window - len(wave), 0))))
                                  for s in starts])
            lengths = torch.tensor([min(len(wave), window)] * len(starts))
            probs = torch.cat([model(batch, length).softmax(-1) for batch, length in
                               zip(pieces.split(args.batch_size), lengths.split(args.batch_size))]).mean(0)
            writer.writerow([str(path), names[int(probs.argmax())], len(starts), *[f"{p:.4f}" for p in probs]])
    return table


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="predict.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a train.py run folder (runs/<config>/<stamp>)")
    parser.add_argument("audio", nargs="+", help="audio files, folders or list files")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/predictions/<stamp>)")
    parser.add_argument("--checkpoint", default="best", help="best, last or a checkpoint path")
    parser.add_argument("--reference", type=Path, help="VAD: reference RTTM to score against")
    parser.add_argument("--uem", type=Path, help="VAD: scored regions (UEM) for --reference")
    parser.add_argument("--collar", type=float, default=0.0, help="VAD: seconds forgiven around reference boundaries")
    parser.add_argument("--onset", type=float, default=0.5, help="VAD: P(speech) that starts a region")
    parser.add_argument("--offset", type=float, default=0.5, help="VAD: P(speech) below which a region ends")
    parser.add_argument("--min-duration-on", type=float, default=0.0, help="VAD: shortest region kept (s)")
    parser.add_argument("--min-duration-off", type=float, default=0.0, help="VAD: shortest gap kept (s)")
    parser.add_argument("--chunk-seconds", type=float, default=60.0, help="VAD: audio per forward pass")
    parser.add_argument("--window-seconds", type=float, help="clips: window (default: the training clip length)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips: windows per forward pass")
    args = parser.parse_args(argv)
    model, data = load_run(args.run_dir, args.checkpoint)
    paths, errors = audio_inputs(args.audio)
    for error in errors:
        print(f"predict.py: skipping {error}", file=sys.stderr)
    if not paths:
        raise NothingProcessed(f"nothing to process: {len(errors)} input(s) gave no audio ({errors[0]})")
    out = args.out or args.run_dir / "predictions" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"run_dir": str(args.run_dir), "checkpoint": data["checkpoint"], "n_files": len(paths)}
    n_missing = len(errors)
    if model.hparams.task == "frame":
        rttms = predict_vad(model, paths, out, args, errors)
        summary["rttm"] = [str(p) for p in rttms]
        if args.reference and rttms:
            scores = score_vad(rttms, args.reference, args.uem, args.collar)
            summary["scores"] = scores
            print(f"detection error rate {scores['detection_error_rate']:.4f}  precision {scores['precision']:.4f}  "
                  f"recall {scores['recall']:.4f}  F-measure {scores['f_measure']:.4f}  (collar {args.collar} s)")
    else:
        window = args.window_seconds or float(data.get("clip_seconds") or 1.0)
        summary["predictions"] = str(predict_clips(model, paths, out, window, args, errors))
        summary["window_seconds"], summary["aggregation"] = window, "mean of class probabilities over windows"
    summary["n_processed"] = len(paths) - (len(errors) - n_missing)
    summary["skipped"] = {"count": len(errors), "files": errors}
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    if summary["n_processed"] == 0:
        Path(summary.get("predictions", out / "predictions.csv")).unlink(missing_ok=True)  # a header only
        raise NothingProcessed(f"none of the {len(paths)} file(s) could be decoded (see {path.resolve()})")
    print(path.resolve())
    return path


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, CheckpointError, NothingProcessed) as error:
        sys.exit(f"predict.py: {error}")
