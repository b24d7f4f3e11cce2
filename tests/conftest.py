"""Test-wide environment: offline W&B, a private cache, real data under ../shared/data or $EARLENS_DATA."""

import os
import sys
import tempfile

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("EARLENS_CACHE", tempfile.mkdtemp(prefix="earlens-cache-"))
os.environ.pop("EARLENS_RUN_DIR", None)


@pytest.fixture(autouse=True)
def _finish_wandb_run():
    """A W&B run a test left open would be reused (and written into) by the next test's logger."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
