"""Shared test setup: real tokenizer files, a per-session token cache, tiny configs."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The GPT-2 BPE files: tiktoken's host is unreachable on CI machines, so use the shared copy
# when there is one (copied: tiktoken may write into its cache). Elsewhere tiktoken downloads.
_SHARED = ROOT.parent / "shared" / "tiktoken_cache"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    _copy = Path(tempfile.mkdtemp(prefix="tiktoken-")) / "cache"
    shutil.copytree(_SHARED, _copy)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_copy)
os.environ["SLM_TUNE_CACHE"] = tempfile.mkdtemp(prefix="slm-tune-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from slm_tune.config import ExperimentConfig  # noqa: E402

TINY_DATASET = "storyworld:train=300,validation=30"


def tiny(**overrides) -> ExperimentConfig:
    """A model that trains in well under a second per dozen iterations."""
    base = dict(name="tiny", vocab_size=1000, n_embd=32, n_layer=1, n_head=2, block_size=32,
                batch_size=4, max_iters=20, eval_interval=10, eval_iters=2, warmup_iters=2,
                learning_rate=3e-3, dataset=TINY_DATASET, precision="float32", compile=False)
    base.update(overrides)
    return ExperimentConfig(**base)


TINY_SETS = ["--set", "n_embd=32", "--set", "n_layer=1", "--set", "n_head=2", "--set", "batch_size=4",
             "--set", "block_size=32", "--set", "eval_iters=2", "--set", "precision=float32", "--set", "compile=false",
             "--dataset", TINY_DATASET]


@pytest.fixture
def tiny_config():
    return tiny
