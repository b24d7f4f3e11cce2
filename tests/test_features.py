"""Feature cache: equals direct backbone calls, resumes after a crash, ignores partial shards, keys entries."""

from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
from torch import nn

from earlens.models.base import Backbone, HookBackbone
from earlens.probing.features import (audio_fingerprint, check_disk_space, extract_features, feature_key, load_manifest,
                                      plan_extraction)

INPUT_RATE, MODEL_RATE = 8000, 16000


def conv_backbone():
    """Two conv layers of different width and frame rate (exercises zero padding), at 16 kHz."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 16, stride=8), nn.Tanh(), nn.Conv1d(3, 5, 4, stride=2))
    return HookBackbone(model, ["0", "2"], MODEL_RATE, name="tiny-conv",
                        forward=lambda module, waves: module(waves[:, None]), channels_first=True)


class CountingBackbone(Backbone):
    """Delegates to a backbone, counts calls, and raises on call number `fail_at` (a simulated crash)."""

    def __init__(self, inner: Backbone, fail_at: int | None = None):
        self.inner, self.fail_at, self.calls = inner, fail_at, 0
        self.module, self.name, self.sample_rate = inner.module, inner.name, inner.sample_rate
        self.layer_names, self.weights_id = inner.layer_names, inner.weights_id

    @property
    def device(self):
        return self.inner.device

    def __call__(self, waves):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return self.inner(waves)


@pytest.fixture
def waves():
    rng = np.random.default_rng(0)
    return rng.standard_normal((10, 4000)).astype(np.float32)


def direct_features(backbone, waves, pooling):
    """Reference: each clip resampled alone with soxr, then one backbone call on all clips."""
    resampled = np.stack([soxr.resample(clip, INPUT_RATE, MODEL_RATE) for clip in waves])
    outputs = backbone(torch.from_numpy(resampled))
    width = max(output.shape[-1] for output in outputs)
    if pooling == "mean":
        return np.stack([nn.functional.pad(o.mean(1), (0, width - o.shape[-1])).numpy() for o in outputs], 1)
    frames = max(output.shape[1] for output in outputs)
    return np.stack([nn.functional.pad(o, (0, width - o.shape[-1], 0, frames - o.shape[1])).numpy()
                     for o in outputs], 1)


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_extraction_equals_direct_backbone_calls(tmp_path, waves, pooling):
    backbone = conv_backbone()
    features = extract_features(backbone, waves, INPUT_RATE, "set-a", pooling=pooling, batch_size=4,
                                cache_dir=tmp_path)
    assert isinstance(features, np.memmap) and features.dtype == np.float32
    np.testing.assert_allclose(features, direct_features(backbone, waves, pooling), rtol=1e-5, atol=1e-6)
    manifest = load_manifest(features)
    assert manifest["layer_dims"] == [3, 5] and manifest["layers"] == ["0", "2"]
    assert manifest["layer_frames"] == [(8000 - 16) // 8 + 1, ((8000 - 16) // 8 + 1 - 4) // 2 + 1]
    assert np.all(features[:, 0, ..., 3:] == 0)  # the narrower layer is zero-padded
    assert sorted(p.name for p in Path(features.filename).parent.iterdir()) == ["features.npy", "layout.json",
                                                                               "manifest.json"]


def test_resume_after_crash_skips_done_shards(tmp_path, waves):
    crashing = CountingBackbone(conv_backbone(), fail_at=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(crashing, waves, INPUT_RATE, "set-a", batch_size=3, cache_dir=tmp_path)
    entry = tmp_path / feature_key(crashing, audio_fingerprint(waves), "mean", INPUT_RATE)
    assert len(list(entry.glob("shard_*.npy"))) == 2 and not (entry / "manifest.json").exists()

    resumed = CountingBackbone(conv_backbone())
    features = extract_features(resumed, waves, INPUT_RATE, "set-a", batch_size=3, cache_dir=tmp_path)
    assert resumed.calls == 2  # 4 shards of 3, 3, 3, 1 clips; the first two were done
    np.testing.assert_allclose(features, direct_features(resumed, waves, "mean"), rtol=1e-5, atol=1e-6)

    cached = CountingBackbone(conv_backbone())
    again = extract_features(cached, waves, INPUT_RATE, "set-a", batch_size=3, cache_dir=tmp_path)
    assert cached.calls == 0 and again.filename == features.filename


def test_partial_and_temporary_shards_are_ignored(tmp_path, waves):
    crashing = CountingBackbone(conv_backbone(), fail_at=4)
    with pytest.raises(RuntimeError):
        extract_features(crashing, waves, INPUT_RATE, "set-a", batch_size=3, cache_dir=tmp_path)
    entry = tmp_path / feature_key(crashing, audio_fingerprint(waves), "mean", INPUT_RATE)
    done = sorted(entry.glob("shard_*.npy"))
    assert len(done) == 3
    done[1].write_bytes(done[1].read_bytes()[:-8])  # a shard cut short (e.g. a copy that died)
    (entry / "shard_00000009_00000010.npy.tmp999").write_bytes(b"\x93NUMPY half a header")
    resumed = CountingBackbone(conv_backbone())
    features = extract_features(resumed, waves, INPUT_RATE, "set-a", batch_size=3, cache_dir=tmp_path)
    assert resumed.calls == 2  # the truncated shard and the never-finished last one
    np.testing.assert_allclose(features, direct_features(resumed, waves, "mean"), rtol=1e-5, atol=1e-6)
    assert not list(entry.glob("*.tmp*"))


def test_different_keys_make_different_entries(tmp_path, waves):
    backbone = CountingBackbone(conv_backbone())
    first = extract_features(backbone, waves, INPUT_RATE, "set-a", cache_dir=tmp_path)
    other_stimuli = extract_features(backbone, waves[::-1].copy(), INPUT_RATE, "set-b", cache_dir=tmp_path)
    other_pooling = extract_features(backbone, waves, INPUT_RATE, "set-a", pooling="none", cache_dir=tmp_path)
    assert len({first.filename, other_stimuli.filename, other_pooling.filename}) == 3
    np.testing.assert_allclose(other_stimuli, first[::-1], rtol=1e-5, atol=1e-6)
    other_layers = conv_backbone()
    other_layers.layer_names = ["0"]
    key = audio_fingerprint(waves)
    assert feature_key(other_layers, key, "mean", INPUT_RATE) != feature_key(backbone, key, "mean", INPUT_RATE)
    assert load_manifest(other_stimuli)["stimulus_key"] == "set-b"


def test_the_key_is_the_audio_not_the_label(tmp_path, waves):
    """Other audio under the same caller label gets its own entry (a label-keyed cache returned stale features)."""
    backbone = CountingBackbone(conv_backbone())
    first = extract_features(backbone, waves, INPUT_RATE, "same-label", cache_dir=tmp_path)
    louder = extract_features(backbone, 2 * waves, INPUT_RATE, "same-label", cache_dir=tmp_path)
    assert first.filename != louder.filename and backbone.calls == 2 * -(-len(waves) // 8)
    np.testing.assert_allclose(louder, direct_features(backbone, 2 * waves, "mean"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_corrupted_final_array_is_rebuilt_with_a_warning(tmp_path, waves, damage):
    backbone = CountingBackbone(conv_backbone())
    features = extract_features(backbone, waves, INPUT_RATE, "set-a", batch_size=4, cache_dir=tmp_path)
    expected, path = np.array(features), Path(features.filename)
    del features
    data = bytearray(path.read_bytes())
    if damage == "zeroed":
        data[-200:-100] = bytes(100)
    else:
        data = data[:-100]
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=str(path)):
        rebuilt = extract_features(backbone, waves, INPUT_RATE, "set-a", batch_size=4, cache_dir=tmp_path)
    np.testing.assert_array_equal(rebuilt, expected)


def test_corrupted_shard_is_recomputed_with_a_warning(tmp_path, waves):
    crashing = CountingBackbone(conv_backbone(), fail_at=3)
    with pytest.raises(RuntimeError):
        extract_features(crashing, waves, INPUT_RATE, "set-a", batch_size=3, cache_dir=tmp_path)
    shard = sorted((tmp_path / feature_key(crashing, audio_fingerprint(waves), "mean", INPUT_RATE))
                   .glob("shard_*.npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-40:] = bytes(40)  # zeroed bytes inside the array: it still parses, only the checksum can tell
    shard.write_bytes(bytes(data))
    resumed = CountingBackbone(conv_backbone())
    with pytest.warns(UserWarning, match=shard.name):
        features = extract_features(resumed, waves, INPUT_RATE, "set-a", batch_size=3, cache_dir=tmp_path)
    assert resumed.calls == 3  # the damaged shard and the two never written
    np.testing.assert_allclose(features, direct_features(resumed, waves, "mean"), rtol=1e-5, atol=1e-6)


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="pooling"):
        extract_features(conv_backbone(), np.zeros((2, 100)), INPUT_RATE, "k", pooling="max", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        extract_features(conv_backbone(), np.zeros(100), INPUT_RATE, "k", cache_dir=tmp_path)


def test_a_cache_the_disk_cannot_hold_is_refused_before_extraction(tmp_path):
    backbone = conv_backbone()
    waves = np.zeros((4, 1600), np.float32)
    plan = plan_extraction(backbone, waves, 16000, cache_dir=tmp_path, layer_width=10 ** 12)
    with pytest.raises(OSError, match=r"needs .* GB while it is built .* GB free: set --features.cache_dir"):
        check_disk_space(plan)
    assert plan.bytes_needed == 2 * 4 * 4 * len(backbone.layer_names) * 10 ** 12
    small = plan_extraction(backbone, waves, 16000, cache_dir=tmp_path, layer_width=8)
    check_disk_space(small)  # 4 clips of 8 dims fit
