"""What every version of storyworld's grammar shares: a story with its exact log-probability, and
the writer that draws choices and adds up their log-probabilities."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Story:
    text: str
    logprob: float  # natural log of the story's probability under the grammar
    choices: tuple[int, ...]  # the random choices that made it, in order
    # version 2: the same with every fact the story states at its prior, once per story (what a
    # model that knows the grammar and the world's laws, but no character, would assign); None in version 1
    prior_logprob: float | None = None


class Writer:
    """Draws choices and keeps their log-probability and indices."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.logprob = 0.0
        self.choices: list[int] = []

    def pick(self, options: list, exclude=None):
        pool = [o for o in options if o != exclude] if exclude is not None else options
        i = self.rng.randrange(len(pool))
        self.logprob -= math.log(len(pool))
        self.choices.append(i)
        return pool[i]

    def coin(self, p: float) -> bool:
        heads = self.rng.random() < p
        self.logprob += math.log(p if heads else 1.0 - p)
        self.choices.append(int(heads))
        return heads


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
