"""`AudioClassifier`: VAD metrics against hand-counted cases, frame labels read at the STFT frame centres."""

import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from earlens.frontend.frontends import SpectroTemporalFrontend, WaveformFrontend
from earlens.lightning_modules.checkpointing import migrated_config
from earlens.lightning_modules.classifier import AudioClassifier, DetectionErrorRate


def test_detection_error_rate_counts_missed_and_false_alarm_speech():
    target = torch.tensor([1, 1, 1, 1, 0, 0, 0, 1, 1, 0])
    speech_prob = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.6, 0.1, 0.3, 0.8, 0.5, 0.55])
    # missed: frames 1, 3 (prob < 0.5 on speech); false alarm: frames 4, 9; speech frames: 6
    metric = DetectionErrorRate()
    metric.update(speech_prob[:5], target[:5])  # accumulates across batches like a whole test set
    metric.update(speech_prob[5:], target[5:])
    assert metric.compute().item() == pytest.approx(4 / 6)


def frame_model() -> AudioClassifier:
    torch.manual_seed(0)
    return AudioClassifier(SpectroTemporalFrontend(kind="gabor", n_filters=4), num_classes=2, task="frame")


def test_frame_labels_are_read_at_frame_centres_and_padding_is_unscored():
    model = frame_model().eval()
    hop = model.frontend.hop_length
    n_samples = 16000
    label = torch.full((1, n_samples), -1)
    label[0, 4000:12000] = 1
    label[0, :4000] = 0
    logits, target = model._logits_and_target({"audio": torch.zeros(1, n_samples), "label": label})
    # frame i is centred at sample i·hop; the frames whose centre lies inside the signal are scored
    assert logits.shape == (len(range(0, n_samples, hop)), 2)
    expected = label[0, ::hop]
    assert torch.equal(target, expected)
    assert (target == -1).sum() == (expected == -1).sum() > 0


def test_speech_metrics_match_sklearn_on_scored_frames():
    model = frame_model().eval()
    torch.manual_seed(1)
    audio = torch.randn(3, 8000) * 0.1
    label = torch.randint(0, 2, (3, 8000))
    label[:, 6000:] = -1  # outside the UEM
    with torch.no_grad():
        model._eval_step({"audio": audio, "label": label}, "test")
        logits, target = model._logits_and_target({"audio": audio, "label": label})
    scored = target != -1
    prob = logits.softmax(-1)[scored, 1].numpy()
    truth = target[scored].numpy()
    speech = model.speech_metrics["test"].compute()
    assert speech["test/frame_f1"].item() == pytest.approx(f1_score(truth, prob >= 0.5), abs=1e-6)
    assert speech["test/auroc"].item() == pytest.approx(roc_auc_score(truth, prob), abs=0.01)  # 256 thresholds
    accuracy = model.class_metrics["test"].compute()["test/acc"].item()
    assert accuracy == pytest.approx(((prob >= 0.5) == truth).mean(), abs=1e-6)


@pytest.mark.parametrize("task, frontend", [("clip", "gabor"), ("frame", "gabor"), ("clip", "waveform"),
                                            ("frame", "projected")])
def test_padding_changes_nothing_when_lengths_are_given(task, frontend):
    """A clip zero-padded to the batch width, with its length, gives the unpadded clip's logits on its frames;
    without the length the padding leaks into the convolutions and the pooling (the control). Also for the
    SampleCNN-style waveform encoder, whose every stage divides the frames by 3."""
    torch.manual_seed(0)
    front = (SpectroTemporalFrontend(kind="gabor", n_filters=4) if frontend == "gabor"
             else SpectroTemporalFrontend(kind="gabor", n_filters=8, projection_channels=4) if frontend == "projected"
             else WaveformFrontend(channels=[8, 8, 16, 16]))
    model = AudioClassifier(front, num_classes=3, task=task).eval()
    clip = torch.randn(1, 6731)
    padded = torch.cat([clip, torch.zeros(1, 16000 - 6731)], dim=1)
    with torch.no_grad():
        alone, masked, leaky = model(clip), model(padded, torch.tensor([6731])), model(padded)
    n = alone.shape[-1]
    torch.testing.assert_close(masked[..., :n], alone, atol=1e-6, rtol=1e-5)
    assert (leaky[..., :n] - alone).abs().max() > 1e-4  # 100x the tolerance above


def test_waveform_frontend_hop_and_frame_counts():
    """SampleCNN arithmetic: a stride-3 stem and MaxPool(3) per block give T // 3^stages frames, as `frame_lengths`
    says, for lengths that are and are not multiples of the hop."""
    front = WaveformFrontend(channels=[4, 4, 8]).eval()
    assert front.hop_length == 27 and front.n_mels == 1 and front.out_channels == 8
    for length in (27, 100, 729, 1000):
        out = front(torch.randn(1, length))
        assert out.shape == (1, 8, 1, length // 27) == (1, 8, 1, int(front.frame_lengths(torch.tensor(length))))
    with pytest.raises(ValueError, match="channels"):
        WaveformFrontend(channels=[])


@pytest.mark.parametrize(("kind", "frontend_lr", "expected_lr"), [
    ("gabor", None, 2e-3), ("gabor", 1e-4, 1e-4), ("gabor", 0.0, 0.0), ("gabor_frozen", 1e-4, 1e-4)])
def test_frontend_gets_its_own_learning_rate(kind, frontend_lr, expected_lr):
    """The frontend's trainable parameters (the 4 Gabor tensors, none when frozen, and its batch norm) form the
    first AdamW group at `frontend_lr` (0 included: a bank that must not move), the encoder and head the second
    group at `lr`."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    model = AudioClassifier(SpectroTemporalFrontend(kind=kind, n_filters=4), lr=2e-3, frontend_lr=frontend_lr)
    model.trainer = SimpleNamespace(estimated_stepping_batches=10)
    frontend_group, rest = model.configure_optimizers()["optimizer"].param_groups
    assert frontend_group["lr"] == expected_lr and rest["lr"] == 2e-3
    bank = [*model.frontend.filterbank.parameters()] if kind == "gabor" else []
    expected = {id(p) for p in [*bank, *model.frontend.norm.parameters()]}
    assert {id(p) for p in frontend_group["params"]} == expected
    assert {id(p) for p in rest["params"]} == {id(p) for p in [*model.encoder.parameters(), *model.head.parameters()]}


def test_checkpoints_naming_the_frontends_module_of_earlier_runs_still_load(tmp_path):
    """Runs store their frontend's class path; those written when the frontends lived in `earlens.frontends` rebuild
    the same model, from the checkpoint and from a resumed run's config."""
    torch.manual_seed(0)
    model = AudioClassifier(SpectroTemporalFrontend(kind="gabor", n_filters=4), num_classes=2).eval()
    spec = dict(model.hparams["frontend_spec"])
    assert spec["class_path"] == "earlens.frontend.frontends.SpectroTemporalFrontend"
    old = AudioClassifier(frontend_spec={**spec, "class_path": "earlens.frontends.SpectroTemporalFrontend"},
                          num_classes=2).eval()
    old.load_state_dict(model.state_dict())
    wave = torch.randn(1, 4000)
    with torch.no_grad():
        torch.testing.assert_close(old(wave), model(wave))
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  frontend:\n    class_path: earlens.frontends.SpectroTemporalFrontend\n"
                      "data:\n  class_path: earlens.datamodules.FSDDSpeakerDataModule\n")
    migrated = migrated_config(config)
    assert migrated != config and "earlens.frontends." in config.read_text()  # the run's own config is kept
    assert "class_path: earlens.frontend.frontends.SpectroTemporalFrontend" in migrated.read_text()
    assert "earlens.datamodules.FSDDSpeakerDataModule" in migrated.read_text()
    assert migrated_config(migrated) == migrated  # nothing left to migrate
