"""Lightning datamodules for the real datasets (batch contract in DEVELOPERS.md)."""

from datamodules.birdcall import BengaleseFinchDataModule, SyllableDataModule
from datamodules.folder import FolderDataModule
from datamodules.manifest import ManifestDataModule
from datamodules.notes import RenderedNotesDataModule
from datamodules.scene import ESC10DataModule
from datamodules.speaker import FSDDSpeakerDataModule
from datamodules.vad import AMIVADDataModule

__all__ = ["AMIVADDataModule", "BengaleseFinchDataModule", "ESC10DataModule", "FSDDSpeakerDataModule",
           "FolderDataModule", "ManifestDataModule", "RenderedNotesDataModule", "SyllableDataModule"]
