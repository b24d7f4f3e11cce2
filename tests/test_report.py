"""`python -m earlens.report`: one self-contained HTML page from real run folders."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

REPO = Path(__file__).resolve().parent.parent
TINY = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size",
        "8"]


@pytest.mark.slow
def test_report_shows_runs_side_by_side_with_their_curves_and_figures(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"}
    summaries = []
    for config in ("gabor_speaker_interp", "mel_speaker"):  # the first with the helicality and Zipf callbacks
        proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", config, *TINY], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summaries.append(json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text()))
    kernels = sorted((Path(summaries[0]["run_dir"]) / "figures").glob("filters_*_kernels.png"))
    assert kernels, "the filter callback's figures are saved in the run folder, W&B or not"
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "earlens.report", *(s["run_dir"] for s in summaries), "--out",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out.read_text()
    for summary in summaries:
        run = Path(summary["run_dir"])
        assert f"{run.parent.name}/{run.name}" in page
        assert f"{summary['test_metrics']['test/acc']:.4g}" in page  # the test metric in the side-by-side table
    assert "val/loss against epoch" in page and kernels[0].stem in page  # constant charts are left out
    assert "helix r2 over epoch and layer" in page and "zipf alpha_zm over epoch and layer" in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 5 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'src="(?!data:)', page)  # self-contained: nothing fetched from elsewhere
    proc = subprocess.run([sys.executable, "-m", "earlens.report", summaries[1]["run_dir"]], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == str(Path(summaries[1]["run_dir"]).resolve() / "report.html")  # by default

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:  # `apt-get install chromium` enables the check that a browser draws the plots
        return
    def coloured_share(page_path: Path) -> float:
        shot = page_path.with_suffix(".png")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1400,4000", page_path.as_uri()],
                       capture_output=True, timeout=120, check=True)
        pixels = imread(shot)[..., :3]
        return float((np.ptp(pixels, axis=-1) > 0.2).mean())  # curves and heatmaps; text and tables are grey

    blank = tmp_path / "no_images.html"  # control: the same page with every image emptied draws no colour
    blank.write_text(re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', 'src=""', page), encoding="utf-8")
    assert coloured_share(out) > 0.003 and coloured_share(blank) < 0.001  # (broken-image icons: a few pixels)
