"""Lightning datamodules for the real datasets (batch contract in DEVELOPERS.md)."""

from earlens.datamodules.birdcall import BengaleseFinchDataModule, SyllableDataModule
from earlens.datamodules.folder import FolderDataModule
from earlens.datamodules.manifest import ManifestDataModule
from earlens.datamodules.music import RenderedMusicDataModule
from earlens.datamodules.notes import RenderedNotesDataModule
from earlens.datamodules.scene import ESC10DataModule
from earlens.datamodules.speaker import FSDDSpeakerDataModule
from earlens.datamodules.vad import AMIVADDataModule

__all__ = ["AMIVADDataModule", "BengaleseFinchDataModule", "ESC10DataModule", "FSDDSpeakerDataModule",
           "FolderDataModule", "ManifestDataModule", "RenderedMusicDataModule", "RenderedNotesDataModule",
           "SyllableDataModule"]
