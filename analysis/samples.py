"""Text from trained models: load a best_model file and generate, so people see what it learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slm_tune.checkpoints import load_state
from slm_tune.config import ExperimentConfig
from slm_tune.errors import UserError
from slm_tune.model import GPT
from slm_tune.tokenizer import get_tokenizer

SAMPLE_PROMPT = "Once upon a time"
SAMPLE_TOKENS = 48


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


def sample_from_file(path: Path, prompt: str = SAMPLE_PROMPT, max_new_tokens: int = 120,
                     temperature: float = 0.8, top_k: int | None = 50, seed: int = 0) -> str:
    if temperature < 0:
        raise UserError(f"--temperature {temperature} must be >= 0 (0 picks the most likely token)")
    model, config, _ = load_model(path)
    return generate_text(model, config.vocab_size, prompt, max_new_tokens, temperature, top_k, seed)
