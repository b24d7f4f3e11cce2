"""The four real-data datamodules against ground truth counted independently from the files on disk."""

import re
import unicodedata
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import earlens.io.paths
from earlens.datamodules import AMIVADDataModule, BengaleseFinchDataModule, ESC10DataModule, FSDDSpeakerDataModule
from earlens.datamodules.base import EpochSampler
from earlens.datamodules.scene import fold_split
from earlens.io.audio import AudioError
from earlens.io.paths import data_root

SPLITS = ("train", "val", "test")


def set_up(datamodule):
    """`setup()` with warnings recorded, so tests can check what was reported."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datamodule.setup()
    return datamodule, [str(w.message) for w in caught]


def locate(wave, excerpt):
    """Every offset at which `excerpt` occurs verbatim in `wave` (anchored on its loudest sample)."""
    anchor = int(np.argmax(np.abs(excerpt)))
    starts = np.flatnonzero(wave == excerpt[anchor]) - anchor
    return [int(s) for s in starts if s >= 0 and np.array_equal(wave[s : s + len(excerpt)], excerpt)]


def assert_disjoint(groups: dict[str, set]):
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not groups[a] & groups[b], f"{a} and {b} share {sorted(groups[a] & groups[b])[:3]}"


@pytest.fixture(scope="module")
def fsdd():
    return set_up(FSDDSpeakerDataModule(batch_size=16))[0]


@pytest.fixture(scope="module")
def esc10():
    return set_up(ESC10DataModule(batch_size=8, clip_seconds=2.0))[0]


@pytest.fixture(scope="module")
def birds():
    return set_up(BengaleseFinchDataModule())[0]


@pytest.fixture(scope="module")
def ami():
    return set_up(AMIVADDataModule(batch_size=4, chunk_seconds=2.0, chunks_per_epoch=16))


# ---------------------------------------------------------------- FSDD speakers


def test_fsdd_counts_labels_and_take_split(fsdd):
    names = sorted(p.name for p in (data_root(dataset="fsdd") / "recordings").glob("*.wav"))
    speakers = Counter(name.split("_")[1] for name in names)
    assert len(names) == 3000 and len(speakers) == 6 and set(speakers.values()) == {500}
    assert fsdd.class_names == sorted(speakers) and fsdd.num_classes == 6 and fsdd.task == "clip"
    assert fsdd.skipped == []
    takes = {}
    for split, expected in zip(SPLITS, (400, 50, 50)):
        dataset = fsdd.split(split)
        speaker_of = [Path(source).name.split("_")[1] for source in dataset.sources]
        assert [fsdd.class_names[label] for label in dataset.labels] == speaker_of
        assert set(Counter(speaker_of).values()) == {expected}
        takes[split] = {int(Path(source).stem.split("_")[2]) for source in dataset.sources}
    assert takes == {"train": set(range(40)), "val": set(range(40, 45)), "test": set(range(45, 50))}
    assert_disjoint({split: set(fsdd.split_files[split]) for split in SPLITS})


def test_fsdd_clip_audio_is_the_resampled_recording(fsdd):
    librosa = pytest.importorskip("librosa")
    dataset = fsdd.split("test")
    index = 7
    reference, _ = librosa.load(dataset.sources[index], sr=16000, res_type="soxr_hq")
    assert len(reference) < 16000
    item = dataset[(index, 0)]
    n = len(reference)  # a short clip comes first, then zero padding; `length` says where it ends
    np.testing.assert_allclose(item["audio"][:n].numpy(), reference, atol=1e-5)
    assert item["audio"][n:].abs().max() == 0 and item["label"].dtype == torch.int64 and item["length"] == n


def test_training_crops_are_seeded_per_epoch_and_worker_independent(fsdd):
    loader = fsdd.train_dataloader()
    first = next(iter(loader))
    again = next(iter(DataLoader(fsdd.split("train"), batch_size=16, sampler=EpochSampler(2400, 0, shuffle=True))))
    assert first["audio"].shape == (16, 16000) and first["label"].shape == (16,)
    assert torch.equal(first["audio"], again["audio"]) and torch.equal(first["label"], again["label"])
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))["label"], first["label"])  # a new epoch, a new order
    fsdd.num_workers = 2
    try:
        with_workers = next(iter(fsdd.train_dataloader()))
    finally:
        fsdd.num_workers = 0
    assert torch.equal(with_workers["audio"], first["audio"])
    other_seed = next(iter(DataLoader(fsdd.split("train"), batch_size=16, sampler=EpochSampler(2400, 1, shuffle=True))))
    assert not torch.equal(other_seed["label"], first["label"])


def test_eval_batches_are_deterministic(fsdd):
    first, second = next(iter(fsdd.val_dataloader())), next(iter(fsdd.val_dataloader()))
    assert torch.equal(first["audio"], second["audio"])
    assert first["label"].tolist() == list(fsdd.split("val").labels[:16])


def test_sampler_survives_lightning_distributed_wrapper(fsdd):
    """Under DDP Lightning wraps custom samplers; the `(index, seed)` keys must reach the dataset intact."""
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    ranks = [  # each rank holds its own copy of the sampler, as DDP processes do
        list(DistributedSamplerWrapper(EpochSampler(10, seed=0, shuffle=True), num_replicas=2, rank=rank))
        for rank in (0, 1)
    ]
    assert sorted(ranks[0] + ranks[1]) == sorted(EpochSampler(10, seed=0, shuffle=True)) and len(ranks[0]) == 5
    assert fsdd.split("train")[ranks[0][0]]["audio"].shape == (16000,)


# ---------------------------------------------------------------- ESC-10 scenes


def test_esc10_counts_folds_and_classes(esc10):
    clips = sorted(data_root(dataset="esc10").glob("*/*.ogg"))
    assert len(clips) == 400
    assert set(Counter(p.name.split("-")[0] for p in clips).values()) == {80}
    assert set(Counter(p.parent.name for p in clips).values()) == {40}
    assert esc10.class_names[0] == "Dog bark" and esc10.num_classes == 10 and esc10.skipped == []
    for split, folds, per_class in zip(SPLITS, ({"1", "2", "3"}, {"4"}, {"5"}), (24, 8, 8)):
        dataset = esc10.split(split)
        assert {Path(s).name.split("-")[0] for s in dataset.sources} == folds
        assert [esc10.class_names[label] for label in dataset.labels] == [
            Path(s).parent.name.split(" - ")[1] for s in dataset.sources
        ]
        assert set(Counter(dataset.labels.tolist()).values()) == {per_class}
    assert_disjoint({split: set(esc10.split_files[split]) for split in SPLITS})


def test_esc10_train_crops_eval_whole_clips(esc10):
    train, val = next(iter(esc10.train_dataloader())), next(iter(esc10.val_dataloader()))
    assert train["audio"].shape == (8, 32000) and val["audio"].shape == (8, 80000)
    clip = esc10.split("train").waves[0]
    crops = [esc10.split("train")[(0, seed)]["audio"].numpy() for seed in range(3)]
    offsets = [locate(clip, crop) for crop in crops]
    assert all(len(found) == 1 for found in offsets)  # each crop a contiguous excerpt of the clip
    assert len({found[0] for found in offsets}) == 3  # at different random offsets


def test_esc10_cross_validation_folds():
    assert fold_split(None) == {"train": {1, 2, 3}, "val": {4}, "test": {5}}
    assert fold_split(2) == {"train": {1, 4, 5}, "val": {3}, "test": {2}}
    assert fold_split(5) == {"train": {2, 3, 4}, "val": {1}, "test": {5}}
    assert all(set().union(*fold_split(k).values()) == {1, 2, 3, 4, 5} for k in range(1, 6))
    with pytest.raises(ValueError, match="cv_fold"):
        ESC10DataModule(cv_fold=6)


# ---------------------------------------------------------------- Bengalese finch syllables


def test_birds_syllable_counts_match_the_annotation(birds):
    text = (data_root(dataset="bengalese_finch") / "Bird0" / "Annotation.xml").read_text()
    labels = Counter(re.findall(r"<Label>(\w+)</Label>", text))
    assert sum(labels.values()) == 7652 and len(labels) == 9
    assert birds.class_names == sorted(labels, key=int) and birds.num_classes == 9 and birds.skipped == []
    counted = Counter()
    for split in SPLITS:
        counted.update(birds.class_names[label] for label in birds.split(split).labels)
    assert counted == labels
    sizes = {split: len(birds.split_files[split]) for split in SPLITS}
    assert sizes == {"train": 95, "val": 20, "test": 20}
    assert_disjoint({split: set(birds.split_files[split]) for split in SPLITS})


def test_birds_song_split_is_seeded():
    same = BengaleseFinchDataModule(seed=0).song_splits(), BengaleseFinchDataModule(seed=0).song_splits()
    assert same[0] == same[1]
    assert BengaleseFinchDataModule(seed=1).song_splits()["test"] != same[0]["test"]


def test_birds_segment_is_the_annotated_span():
    """At the native 32 kHz an evaluation clip holds exactly the annotated samples, then zero padding."""
    root = data_root(dataset="bengalese_finch") / "Bird0"
    birds = BengaleseFinchDataModule(sample_rate=32000, clip_seconds=0.15, seed=0)
    wave_name = birds.song_splits()["test"][0]
    first = re.search(  # the song's first syllable, read straight from the XML
        rf"<WaveFileName>{re.escape(wave_name)}</WaveFileName><Position>(\d+)</Position>.*?"
        r"<Note><Position>(\d+)</Position><Length>(\d+)</Length>",
        (root / "Annotation.xml").read_text(),
    )
    start, length = int(first.group(1)) + int(first.group(2)), int(first.group(3))
    dataset = set_up(birds)[0].split("test")
    item = dataset[(dataset.sources.index(str(root / "Wave" / wave_name)), 0)]
    clip = item["audio"].numpy()
    song, _ = sf.read(root / "Wave" / wave_name, dtype="float32")
    np.testing.assert_array_equal(clip[:length], song[start : start + length])
    assert not clip[length:].any() and item["length"] == length


# ---------------------------------------------------------------- AMI voice activity


def union_seconds(spans):
    """Total length of a union of intervals, by sorting and merging (independent of the datamodule)."""
    total, end = 0.0, -np.inf
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def rttm_speech_seconds(root, uri):
    spans = []
    for rttm in root.glob("debug.*.rttm"):
        for line in rttm.read_text().splitlines():
            fields = line.split()
            if fields and fields[1] == uri:
                spans.append((float(fields[3]), float(fields[3]) + float(fields[4])))
    return union_seconds(spans)


def test_ami_speech_fraction_matches_rttm(ami):
    datamodule, _ = ami
    root = data_root(dataset="ami_mini")
    assert datamodule.num_classes == 2 and datamodule.task == "frame" and datamodule.skipped == []
    assert len(datamodule.split_files["train"]) == 10 and len(datamodule.split_files["val"]) == 2
    for split in ("val", "test"):
        dataset = datamodule.split(split)
        for source, labels in zip(dataset.sources, dataset.labels):
            uri = unicodedata.normalize("NFKD", Path(source).stem).encode("ascii", "ignore").decode()
            speech = rttm_speech_seconds(root, uri)
            assert abs((labels == 1).sum() / 16000 - speech) < 1e-3, uri  # within 16 samples
            assert labels[-1] == -1 and (labels[:-1] >= 0).all()  # UEM is [0, 30) s; the file has 1 more sample


def test_ami_non_ascii_uri_is_matched(ami):
    datamodule, messages = ami
    assert any("trñ00" in m and "trn00" in m for m in messages)
    train = datamodule.split("train")
    index = [Path(s).name for s in train.sources].index("trñ00.wav")
    labels = train.labels[index]
    assert sf.info(train.sources[index]).subtype == "FLOAT"
    speech = rttm_speech_seconds(data_root(dataset="ami_mini"), "trn00")
    assert speech > 5 and abs((labels == 1).sum() / 16000 - speech) < 1e-3


def test_ami_training_chunks_carry_their_files_labels(ami):
    datamodule, _ = ami
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["audio"].shape == (4, 32000) and batch["label"].shape == (4, 32000)
    assert batch["label"].dtype == torch.int64 and batch["audio"].dtype == torch.float32
    train = datamodule.split("train")
    for audio, label in zip(batch["audio"].numpy(), batch["label"].numpy()):
        located = [(labels, start) for wave, labels in zip(train.waves, train.labels) for start in locate(wave, audio)]
        assert len(located) == 1
        labels, start = located[0]
        np.testing.assert_array_equal(label, labels[start : start + 32000])
    fresh, _ = set_up(AMIVADDataModule(batch_size=4, chunk_seconds=2.0, chunks_per_epoch=16))
    again = next(iter(fresh.train_dataloader()))
    assert torch.equal(again["audio"], batch["audio"])
    val = next(iter(datamodule.val_dataloader()))
    assert val["audio"].shape == (1, 480001) and val["label"].shape == (1, 480001)


def link_files(target, files):
    """A folder of symlinks to real files, which a test may then break without touching the originals."""
    target.mkdir(parents=True)
    for path in files:
        (target / path.name).symlink_to(path)
    return target


def copy_ami(tmp_path):
    return link_files(tmp_path / "ami_mini", sorted(data_root(dataset="ami_mini").iterdir()))


def test_ami_uem_scoring_and_empty_file(ami, tmp_path):
    """A narrower, two-part UEM leaves -1 outside it; `empty.wav`, once listed, is all non-speech."""
    assert all(Path(f).name != "empty.wav" for files in ami[0].split_files.values() for f in files)
    root = copy_ami(tmp_path)
    (root / "debug.development.uem").unlink()
    (root / "debug.development.uem").write_text("dev00 NA 0.000 10.000\ndev00 NA 20.000 25.000\ndev01 NA 0 30\n")
    (root / "debug.train.lst").unlink()
    (root / "debug.train.lst").write_text("trn01\nempty\n")
    datamodule, messages = set_up(AMIVADDataModule(root=str(tmp_path)))
    dev00 = datamodule.split("val").labels[0]
    assert (dev00[: 10 * 16000] >= 0).all() and (dev00[10 * 16000 : 20 * 16000] == -1).all()
    assert (dev00[20 * 16000 : 25 * 16000] >= 0).all() and (dev00[25 * 16000 :] == -1).all()
    empty = datamodule.split("train").labels[1]
    assert len(empty) == 16000 and (empty == 0).all()
    assert any("no UEM entry for 'empty'" in m for m in messages)


def write_bad_files(root, corrupt, empty, nan):
    for path in (corrupt, empty, nan):
        (root / path).unlink()
    (root / corrupt).write_bytes(b"RIFF....WAVEfmt not really a wave file")
    sf.write(root / empty, np.zeros(0), 16000)
    sf.write(root / nan, np.full(1600, np.nan), 16000, subtype="FLOAT")


def test_bad_files_are_skipped_and_counted(tmp_path):
    root = copy_ami(tmp_path)
    write_bad_files(root, "trn01.wav", "trn02.wav", "trn03.wav")
    datamodule, messages = set_up(AMIVADDataModule(root=str(tmp_path)))
    skipped = dict(datamodule.skipped)
    assert set(skipped) == {str(root / f) for f in ("trn01.wav", "trn02.wav", "trn03.wav")}
    assert "unreadable" in skipped[str(root / "trn01.wav")] and "empty" in skipped[str(root / "trn02.wav")]
    assert "NaN" in skipped[str(root / "trn03.wav")]
    assert all(any(f"skipping {path}" in m for m in messages) for path in skipped)
    assert len(datamodule.split_files["train"]) == 7


def test_clip_datamodule_skips_bad_and_misnamed_files(tmp_path):
    recordings = data_root(dataset="fsdd") / "recordings"
    keep = [recordings / f"{digit}_{speaker}_{take}.wav" for digit in (0, 1) for speaker in ("george", "theo")
            for take in (0, 40, 45)]
    copied = link_files(tmp_path / "fsdd" / "recordings", keep)
    (copied / "0_george_0.wav").unlink()
    (copied / "0_george_0.wav").write_bytes(b"")
    (copied / "notes.wav").symlink_to(keep[1])
    datamodule, _ = set_up(FSDDSpeakerDataModule(root=str(tmp_path)))
    assert sorted(Path(p).name for p, _ in datamodule.skipped) == ["0_george_0.wav", "notes.wav"]
    assert datamodule.class_names == ["george", "theo"]
    assert [len(datamodule.split(s)) for s in SPLITS] == [3, 4, 4]


def test_all_bad_split_is_a_clear_error(tmp_path):
    root = copy_ami(tmp_path)
    write_bad_files(root, "dev00.wav", "dev01.wav", "trn01.wav")
    with pytest.raises(AudioError, match=r"ami_mini: the val split has no usable files .*dev00\.wav"):
        set_up(AMIVADDataModule(root=str(tmp_path)))


def test_missing_dataset_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(earlens.io.paths, "REPO_ROOT", tmp_path / "checkout")
    monkeypatch.setenv("EARLENS_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match="esc10") as err:
        ESC10DataModule(root=str(tmp_path / "given"))
    assert str(tmp_path / "given" / "esc10") in str(err.value) and "ESC-50" in str(err.value)


# ---------------------------------------------------------------- your own data: a manifest


def test_manifest_rows_segments_splits_and_bad_rows(tmp_path):
    from earlens.datamodules import ManifestDataModule

    recordings = data_root(dataset="fsdd") / "recordings"
    long = np.concatenate([sf.read(recordings / f"{d}_theo_0.wav")[0] for d in range(4)])
    sf.write(tmp_path / "long.wav", long, 8000)
    lines = ["path\tlabel\tsplit\tgroup\tstart\tend"]
    for speaker in ("theo", "jackson"):
        for take in range(12):
            split = "test" if take >= 10 else ""
            lines.append(f"{recordings / f'3_{speaker}_{take}.wav'}\t{speaker}\t{split}\t{speaker}{take % 4}\t\t")
    lines += ["long.wav\ttheo\ttrain\t\t0.5\t1.0",  # a segment of a long file, relative path
              "long.wav\ttheo\ttrain\t\t-1\t1.0",  # negative start
              "long.wav\ttheo\tholdout\t\t\t",  # unknown split
              "missing.wav\ttheo\ttrain\t\t\t"]  # unreadable file
    (tmp_path / "m.tsv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning):
        data = ManifestDataModule(str(tmp_path / "m.tsv"), sample_rate=16000)
        data.setup()
    assert data.class_names == ["jackson", "theo"]
    reasons = [reason for _, reason in data.skipped]
    assert any("negative start" in r for r in reasons) and any("holdout" in r for r in reasons)
    assert any("no such file" in r for r in reasons) and len(data.skipped) == 3
    test_files = {Path(p).name for p in data.split_files["test"]}
    assert {f"3_{s}_{t}.wav" for s in ("theo", "jackson") for t in (10, 11)} <= test_files  # given splits are kept
    groups = {split: {g for g in (f"{Path(p).name.split('_')[1]}{int(Path(p).stem.split('_')[2]) % 4}"
                                  for p in files if "long" not in p and int(Path(p).stem.split("_")[2]) < 10)}
              for split, files in data.split_files.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])  # assigned by group
    segment = next(i for i, src in enumerate(data.split("train").sources) if src.endswith("long.wav"))
    assert len(data.split("train").waves[segment]) == 8000  # 0.5-1.0 s at 16 kHz


def test_task_splits_as_probe_stimuli(fsdd):
    from collections import Counter

    waves, lengths, names, sources = fsdd.stimuli("test", max_items=60)
    assert waves.shape == (60, 16000) and set(Counter(names).values()) == {10}  # balanced over the 6 speakers
    for wave, length, name, source in zip(waves[:5], lengths, names, sources):
        assert name in Path(source).name and not wave[length:].any()
    vad = AMIVADDataModule()
    waves, lengths, names, sources = vad.stimuli("test", max_items=40, window_seconds=0.5)
    assert waves.shape == (40, 8000) and Counter(names) == {"speech": 20, "non-speech": 20}
    labels = dict(zip(vad.split_files["test"], vad.split("test").labels))
    for name, source in zip(names, sources):
        path, start = source.rsplit("@", 1)
        first = round(float(start.removesuffix("s")) * 16000)
        assert (labels[path][first:first + 8000].mean() > 0.5) == (name == "speech")


def test_lazy_manifest_trains_in_batch_sized_memory(tmp_path):
    """20 one-minute files (77 MB decoded): the lazy path reads one chunk per item, so a pass over the training
    clips peaks at a few MB, while decoding up front holds the whole corpus (the control); both give the same clip."""
    import tracemalloc

    from earlens.datamodules import ManifestDataModule

    rng = np.random.default_rng(0)
    lines = ["path,label,start,end"]
    for i in range(20):
        sf.write(tmp_path / f"long_{i}.wav", (rng.standard_normal(60 * 16000) * 0.1).astype(np.float32), 16000,
                 subtype="PCM_16")
        lines += [f"long_{i}.wav,{'ab'[i % 2]},{10 * k},{10 * k + 1}" for k in range(6)]  # six 1 s segments
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    peaks = {}
    for lazy in (True, False):
        tracemalloc.start()
        data = ManifestDataModule(str(tmp_path / "m.csv"), sample_rate=16000, lazy=lazy, batch_size=8)
        for batch in data.train_dataloader():
            assert batch["audio"].shape[1] == 16000
        peaks[lazy] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if lazy:
            lazy_clip = data.split("test")[(0, 0)]["audio"]
        else:
            np.testing.assert_allclose(data.split("test")[(0, 0)]["audio"], lazy_clip, atol=1e-4)
    assert peaks[True] < 15e6 < 60e6 < peaks[False]


# ---------------------------------------------------------------- animal sounds through crowsetta


def _notmat(path: Path, labels: str, onsets_ms, offsets_ms, rate: int = 32000) -> None:
    import scipy.io

    onsets, offsets = np.array(onsets_ms, float)[:, None], np.array(offsets_ms, float)[:, None]
    scipy.io.savemat(path, {"Fs": np.array([[rate]]), "fname": path.name.removesuffix(".not.mat"), "labels": labels,
                            "onsets": onsets, "offsets": offsets,
                            "min_int": np.array([[5]]), "min_dur": np.array([[20]]),
                            "threshold": np.array([[1000]]), "sm_win": np.array([[2]])})


def test_notmat_syllables_with_string_labels_exclusions_and_bad_units(tmp_path):
    from earlens.datamodules import SyllableDataModule

    rng = np.random.default_rng(0)
    for song in range(10):
        sf.write(tmp_path / f"song{song}.wav", rng.standard_normal(32000).astype(np.float32) * 0.1, 32000)
        onsets = [100, 300, 500, 700, -20 if song == 0 else 900]
        _notmat(tmp_path / f"song{song}.wav.not.mat", "abi" + "ab", onsets, [o + 60 for o in onsets])
    with pytest.warns(UserWarning, match="negative onset"):
        data = SyllableDataModule(str(tmp_path), annotation_format="notmat", exclude_labels=["i"],
                                  label_map={"b": "B"}, sample_rate=16000)
        assert data.class_names == ["B", "a"]  # strings, 'i' excluded, 'b' renamed
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 10 * 4 - 1
    songs = {s: {Path(p).name for p in files} for s, files in data.split_files.items()}
    assert not (songs["train"] & songs["test"]) and not (songs["train"] & songs["val"])
    clip = data.split("test")[(0, 0)]
    assert clip["length"] == round(0.06 * 16000)


def test_koumura_xml_through_crowsetta_matches_our_reader():
    from earlens.datamodules import SyllableDataModule
    from earlens.datamodules.birdcall import read_syllables

    bird = data_root(dataset="bengalese_finch") / "Bird0"
    data = SyllableDataModule(str(bird / "Wave"), annotation_format="birdsong-recognition-dataset",
                              annotation_path=str(bird / "Annotation.xml"))
    ours = read_syllables(bird / "Annotation.xml")
    units = data.units()
    assert len(units) == len(ours)
    assert sorted(round(on * 32000) for _, on, *_ in units)[:50] == sorted(start for _, start, *_ in ours)[:50]


def test_vad_reads_any_pyannote_database_protocol_by_name():
    ami = data_root(dataset="ami_mini")
    data = AMIVADDataModule(database=str(ami / "database.yml"), protocol="Debug.SpeakerDiarization.Debug")
    assert data.root == ami.resolve() and data.protocol_files["test"]["annotation"].name == "debug.test.rttm"
    with pytest.raises(ValueError, match="Debug.SpeakerDiarization.Debug"):  # the error lists what is defined
        AMIVADDataModule(database=str(ami / "database.yml"), protocol="AMI.SpeakerDiarization.Full")
