"""Test-wide environment: offline W&B, a private cache, real data under ../shared/data or $EARLENS_DATA."""

import os
import tempfile

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("EARLENS_CACHE", tempfile.mkdtemp(prefix="earlens-cache-"))
os.environ.pop("EARLENS_RUN_DIR", None)
