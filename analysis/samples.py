"""Text from trained models, so people see what they learned: `python studies.py sample NAME`."""

from __future__ import annotations

from pathlib import Path

from slm_tune.errors import UserError
from slm_tune.model.generation import SAMPLE_PROMPT, generate_text, load_model


def sample_from_file(path: Path, prompt: str = SAMPLE_PROMPT, max_new_tokens: int = 120,
                     temperature: float = 0.8, top_k: int | None = 50, seed: int = 0) -> str:
    if temperature < 0:
        raise UserError(f"--temperature {temperature} must be >= 0 (0 picks the most likely token)")
    model, config, _ = load_model(path)
    return generate_text(model, config.vocab_size, prompt, max_new_tokens, temperature, top_k, seed)
