"""RenderedNotesDataModule: programs disjoint between splits, labels that match the rendered pitch."""

import librosa
import numpy as np
import pytest

from earlens.datamodules import RenderedNotesDataModule

PROGRAMS = [0, 1, 24, 25, 40, 41, 56, 57, 65, 66, 73, 74, 4, 30]


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    module = RenderedNotesDataModule(root=str(tmp_path_factory.mktemp("notes")), programs=PROGRAMS,
                                     midi_pitches=range(57, 69), batch_size=4)
    module.setup()
    return module


def test_programs_are_disjoint_between_splits(notes):
    programs = {split: {int(s.split("program")[1].split("-")[0]) for s in notes.split(split).sources}
                for split in ("train", "val", "test")}
    assert programs["train"] == {4, 30} and 0 in programs["test"] and 1 in programs["val"]
    assert not (programs["train"] & programs["val"] or programs["train"] & programs["test"]
                or programs["val"] & programs["test"])


def test_labels_are_the_pitch_class_one_hears(notes):
    test = notes.split("test")
    assert notes.class_names == [str(p) for p in range(12)]
    piano = [i for i, s in enumerate(test.sources) if "program0-" in s]
    for index in piano[::4]:
        f0 = np.nanmedian(librosa.pyin(np.asarray(test.waves[index][:8000]), fmin=150, fmax=600, sr=16000)[0])
        assert round(librosa.hz_to_midi(f0)) % 12 == int(notes.class_names[test.labels[index]])
    batch = next(iter(notes.train_dataloader()))
    assert batch["audio"].shape == (4, 16000)


def test_family_target_and_bad_options():
    module = RenderedNotesDataModule(programs=PROGRAMS, target="family")
    assert module.target == "family"
    with pytest.raises(ValueError, match="target"):
        RenderedNotesDataModule(target="timbre")
    with pytest.raises(ValueError, match="disjoint"):
        RenderedNotesDataModule(val_programs=[0], test_programs=[0])
