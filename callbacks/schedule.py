"""The schedule the interpretability callbacks share: act on every N-th validation epoch."""

from __future__ import annotations

import pytorch_lightning as pl


class EveryNValidationEpochs(pl.Callback):
    """Counts real validation epochs (the sanity check excluded) and says which ones to act on."""

    def __init__(self, every_n_epochs: int = 1):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self._validation_epochs = 0

    def _is_due(self, trainer: pl.Trainer) -> bool:
        """Call once per validation epoch: True on every `every_n_epochs`-th one."""
        if trainer.sanity_checking:
            return False
        self._validation_epochs += 1
        return self._validation_epochs % self.every_n_epochs == 0

    def state_dict(self) -> dict:
        """Saved in checkpoints, so a resumed run keeps the schedule (`--ckpt_path last`)."""
        return {"validation_epochs": self._validation_epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self._validation_epochs = state_dict["validation_epochs"]
