"""Reference taggrams and features of the ORIGINAL musicnn (TensorFlow) for tests/test_pretrained.py.

Run once, in a throwaway environment that has TensorFlow (never needed by earlens itself):

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 librosa==0.11.0 \
        && /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0
    /tmp/tfenv/bin/python tests/data/musicnn_reference.py ../shared/data

It runs `musicnn.extractor.extractor` (3 s patches, no overlap) on a Bengalese finch song and writes
tests/data/musicnn_reference.npz: per model, the taggram and the mean/max pools of every patch, and the penultimate
features and cnn3 frames of the first patch only (musicnn's extractor returns the first patch's cnn1-3 and
penultimate again for every later patch: its loop unpacks them into other names).
"""

import sys
from pathlib import Path

import numpy as np
from musicnn.extractor import extractor

CLIP = "bengalese_finch/Bird0/Wave/0.wav"

if __name__ == "__main__":
    data = Path(sys.argv[1])
    arrays = {}
    for model in ("MTT_musicnn", "MSD_musicnn"):
        taggram, _, features = extractor(str(data / CLIP), model=model, input_length=3, extract_features=True)
        arrays[f"{model}/taggram"] = taggram
        for name in ("mean_pool", "max_pool"):
            arrays[f"{model}/{name}"] = features[name]
        arrays[f"{model}/penultimate_first_patch"] = features["penultimate"][0]
        arrays[f"{model}/cnn3_first_patch"] = features["cnn3"][:187]
    np.savez_compressed(Path(__file__).with_name("musicnn_reference.npz"), clip=CLIP, **arrays)
    print({key: np.shape(value) for key, value in arrays.items()})
