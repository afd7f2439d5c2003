"""Text from a trained model: load a best_model file (weights only) and generate from a prompt."""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from slm_tune.config import ExperimentConfig
from slm_tune.data.tokenizer import get_tokenizer
from slm_tune.errors import UserError
from slm_tune.model.checkpoints import load_state
from slm_tune.model.gpt import GPT

SAMPLE_PROMPT = "Once upon a time"
SAMPLE_TOKENS = 48
TIMED_TOKENS = 32  # ms_per_token: each timed generation makes this many tokens...
TIMED_REPEATS = 5  # ...and the figure is the median of this many of them


def load_model(path: Path) -> tuple[GPT, ExperimentConfig, dict[str, Any]]:
    """A best_model_{experiment}.pt file -> (model in eval mode, its config, the file's metadata)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run the experiment first, or point --output-dir at its results")
    try:
        saved = load_state(path)
        config = ExperimentConfig(**saved["config"])
        model = GPT(config)
        model.load_state_dict(saved["model"])
    except UserError:
        raise
    except Exception as e:  # a damaged or foreign file
        raise UserError(f"{path} is not a readable slm-tune model ({type(e).__name__}); re-export it with "
                        "`python studies.py compare`") from None
    model.eval()
    return model, config, saved


def generate_text(model: GPT, vocab_size: int, prompt: str = SAMPLE_PROMPT, max_new_tokens: int = SAMPLE_TOKENS,
                  temperature: float = 0.8, top_k: int | None = 50, seed: int = 0) -> str:
    enc = get_tokenizer(vocab_size)
    ids = enc.encode_ordinary(prompt) or [enc.eot_token]
    gen = torch.Generator().manual_seed(seed)
    out = model.generate(torch.tensor([ids]), max_new_tokens, temperature=temperature,
                         top_k=top_k if top_k and top_k > 0 else None, generator=gen,
                         stop_token=enc.eot_token)
    tokens = [t for t in out[0].tolist() if t != enc.eot_token]
    return enc.decode(tokens)


@torch.no_grad()
def ms_per_token(model: GPT, autocast=None, tokens: int = TIMED_TOKENS, repeats: int = TIMED_REPEATS) -> float:
    """Milliseconds per generated token at batch 1 on this process's threads, as `sample` and an
    export's sample generate (with the key/value cache): greedy decoding of `tokens` tokens after
    a one-token prompt, timed `repeats` times after an untimed warm-up generation; the median of
    the repeats. No random numbers are drawn, so timing a model leaves its run's random state as it
    was."""
    was_training = model.training
    model.eval()
    prompt = torch.zeros((1, 1), dtype=torch.long)
    times = []
    try:
        with autocast or contextlib.nullcontext():
            model.generate(prompt, tokens, temperature=0)  # warm-up: allocations, kernels' first calls
            for _ in range(repeats):
                start = time.perf_counter()
                model.generate(prompt, tokens, temperature=0)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1000.0 * statistics.median(times) / tokens
