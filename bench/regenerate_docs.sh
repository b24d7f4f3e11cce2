#!/usr/bin/env bash
# Rerun every command whose output is a table in docs/ (hours on 2 CPU cores; one at a time, one BLAS thread).
# Each command's output goes to $OUT/<name>.txt; paste the tables into the page named beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/docs_tables}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
run() { local name=$1; shift; echo "== $name: $*"; "$@" > "$OUT/$name.txt"; }

# docs/helicality.md
run helix_calibration python bench/helix_calibration.py
run helix_calibration_sizes python bench/helix_calibration.py --sizes 88x100 48x16 36x512
run helix_controls python bench/helix_controls.py
# docs/models.md and docs/results.md (per-layer pitch tables of every offline network)
run pitch_layers python bench/pitch_layers.py --out "$OUT/pitch_layers.csv"
for config in notes_handcrafted notes_pesto notes_basic_pitch notes_musicnn; do
    run "$config" python probe.py --config "$config" --progress false
done
run notes_crepe python probe.py --config notes_crepe --backbone.name_or_path tiny --progress false
# docs/statistics.md
run zipf_calibration python bench/zipf_calibration.py
run zipf_lyra python bench/zipf_lyra.py
run zipf_fit python bench/zipf_fit.py
run partials_crepe_tiny python bench/partials.py --model crepe-tiny --seeds 0 1 2
# docs/benchmarks.md
run tasks python bench/tasks.py
run frontend python bench/frontend.py --threads 1 --group-sweep --breakdown
run probe_speed python bench/probe.py
run probe_memory python bench/probe_memory.py
run backbones python bench/backbones.py --clips 16 --seconds 2 --threads 2
run callbacks python bench/callbacks.py --epochs 2
# docs/results.md
run crepe_filters python bench/crepe_filters.py
run syntheory python bench/syntheory.py
for seed in 0 1 2; do
    python train.py --config gabor_notes_interp --trainer.max_epochs 16 --trainer.limit_train_batches 40 \
        --seed_everything "$seed" --data.init_args.seed "$seed" --run_dir "$OUT/notes_interp_seed$seed" > /dev/null
done
run helix_training python bench/helix_training.py "$OUT"/notes_interp_seed{0,1,2}
# docs/ssl.md and docs/results.md (a HuBERT pretrained here, probed at every epoch)
for seed in 0 1 2; do
    python train.py --config ssl_music --run_dir "$OUT/ssl_seed$seed" --seed_everything "$seed" \
        --model.init_args.seed "$seed" --data.init_args.seed "$seed" --model.init_args.hf_every_n_epochs 1 > /dev/null
done
run ssl_study python bench/ssl_study.py "$OUT"/ssl_seed{0,1,2} --out "$OUT/ssl_study.csv" --figure docs/figures/ssl_study.png
