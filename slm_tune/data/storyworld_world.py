"""storyworld version 2's world: a fixed population of characters, each with facts, per corpus seed.

Entity r (0 <= r < `entities`) is the r-th most talked-about character: stories draw it with
probability proportional to (r + ZIPF_OFFSET)^-ZIPF_EXPONENT (Zipf-Mandelbrot). Its name, a given
name and a family name, is a keyed bijection of r, so a name's text gives back r. Its facts (kind,
trait, village, pet, pet's name, two activities, favourite food, colour, treasured thing, favourite
place and best friend) are digits of a keyed hash of (seed, r): deterministic, nothing is stored,
any character's facts are computed when a story needs them. The best friend is another character,
drawn through the same Zipf law by the hash (popular characters are many characters' friends),
never the character itself and never one with the same given name.

Stories state facts, but a fact costs no probability: given the world it is certain, so the
corpus's entropy (the floor) is the text's given the world. What a model must learn to predict
facts is the world itself. The arithmetic, in bits (knowledge_bits(); the entropy of each fact's
draw, what a model that knows the world's laws but not the character pays to learn it):

- per character: kind 4.2, trait 6, village 8, pet 6.3, pet's name 6, two activities 10.6, food
  5.5, colour 4.2, thing 6.8, place 5.6, best friend 12.6 (the Zipf law's entropy): 75.8 bits;
- the world: 808,960 characters (every given name x family name) x 75.8 = 61 Mbit, what 30M
  parameters hold at Allen-Zhu and Li's 2 bits per parameter (Physics of Language Models 3.3).

How much of it a run can learn is set by its tokens, not by the world. A story states about 20
facts (the hero's 10, 3 or 4 for each friend along the walk; about 125 bits at their priors, in
860 bytes): the world-free level (every fact at its prior) lies 0.14 bits per byte above the
floor. The Zipf law spreads that gap evenly over how often training states a fact: in the scaling
family's longest budget (4.9M tokens at a 2,000-token vocabulary, about 15,000 stories) each
doubling of exposures, from 1 to 512, holds 0.008 to 0.017 bits per byte of it, and 20% of it is
in facts training never states. Training states 0.5 Mbit of distinct facts, 123 kbit of them at
least twice, 30 kbit at least 8 times: less than even the smallest family member could hold, so at
that budget sizes differ in how few exposures they need to learn a fact, and every size that
needs fewer gains a share of the gap; ten times the tokens moves each octave's knowledge ten times
further along, and the world's 61 Mbit keep the frontier from running out.
"""

from __future__ import annotations

import bisect
import itertools
import math

import numpy as np
from dataclasses import dataclass
from functools import lru_cache

from slm_tune.data import storyworld_words as W

MASK = (1 << 64) - 1
GIVEN = W.GIRLS + W.BOYS
_GIRLS = set(W.GIRLS)
MAX_ENTITIES = len(GIVEN) * len(W.FAMILY_HEADS) * len(W.FAMILY_TAILS)  # 808,960
DEFAULT_ENTITIES = MAX_ENTITIES
ZIPF_EXPONENT = 1.2
ZIPF_OFFSET = 20.0


def mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit integer hash, the same on every platform."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


@lru_cache(maxsize=4)
def zipf_table(entities: int) -> tuple[list[float], float]:
    """Cumulative Zipf-Mandelbrot weights of ranks 0..entities-1, and the log of their sum."""
    cumulative = np.cumsum((np.arange(entities, dtype=np.float64) + ZIPF_OFFSET) ** -ZIPF_EXPONENT)
    return cumulative.tolist(), math.log(cumulative[-1])


@dataclass(frozen=True)
class Entity:
    rank: int
    given: str
    family: str
    girl: bool  # pronouns follow the given name, as in version 1
    kind: str  # "girl", "boy" or an animal
    trait: str
    village: str
    pet: str
    pet_name: str
    likes: tuple[str, str]
    food: str
    color: str
    thing: str
    place: str
    friend: int  # the best friend's rank

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}"


VILLAGES = [h + t for t in W.VILLAGE_TAILS for h in W.VILLAGE_HEADS]
# the facts drawn uniformly from a list, in the order their digits are taken
_FACT_OPTIONS = (W.ANIMALS, W.HERO_ADJECTIVES, VILLAGES, W.ANIMALS, W.PET_NAMES, W.ACTIVITIES, W.FOODS, W.COLORS,
                 W.OBJECTS, W.PLACES)


class World:
    """The characters of one corpus seed. Facts are computed on demand and remembered."""

    def __init__(self, seed: int, entities: int = DEFAULT_ENTITIES):
        if not 2 <= entities <= MAX_ENTITIES:
            raise ValueError(f"entities must be 2 to {MAX_ENTITIES}, not {entities}")
        self.seed, self.entities = seed, entities
        self.key = mix(mix(seed & MASK) ^ 0x51A7E5)
        self.cumulative, self.log_total = zipf_table(entities)
        a = mix(self.key ^ 1) % entities | 1
        while math.gcd(a, entities) != 1:
            a += 2
        self.a, self.a_inverse, self.b = a, pow(a, -1, entities), mix(self.key ^ 2) % entities
        self._known: dict[int, Entity] = {}

    def draw(self, u: float) -> int:
        """The rank at uniform u in [0, 1) under the Zipf law (inverse CDF)."""
        return min(bisect.bisect_right(self.cumulative, u * self.cumulative[-1]), self.entities - 1)

    def logprob(self, rank: int) -> float:
        """Natural log of the probability that a draw gives `rank`."""
        return -ZIPF_EXPONENT * math.log(rank + ZIPF_OFFSET) - self.log_total

    def _digits(self, rank: int, attempt: int = 0) -> int:
        """A uniform 192-bit integer for (seed, rank, attempt): the character's facts are its digits."""
        x = mix(self.key ^ mix(rank ^ (attempt << 40)))
        return x | mix(x ^ 1) << 64 | mix(x ^ 2) << 128

    def name_parts(self, rank: int) -> tuple[str, str]:
        index = (self.a * rank + self.b) % self.entities
        given, family = index % len(GIVEN), index // len(GIVEN)
        heads = len(W.FAMILY_HEADS)
        return GIVEN[given], W.FAMILY_HEADS[family % heads] + W.FAMILY_TAILS[family // heads]

    def entity(self, rank: int) -> Entity:
        found = self._known.get(rank)
        if found is None:
            found = self._known[rank] = self._make(rank)
        return found

    def _make(self, rank: int) -> Entity:
        """Each fact a digit of _digits in its own base: independent, uniform draws (to within 2^-120)."""
        x = self._digits(rank)
        values = []
        for options in _FACT_OPTIONS:
            x, digit = divmod(x, len(options))
            values.append(options[digit])
        x, child = divmod(x, 2)
        x, like2 = divmod(x, len(W.ACTIVITIES) - 1)
        animal, trait, village, pet, pet_name, like1, food, color, thing, place = values
        like2 = W.ACTIVITIES[(W.ACTIVITIES.index(like1) + 1 + like2) % len(W.ACTIVITIES)]
        given, family = self.name_parts(rank)
        girl = given in _GIRLS
        kind = ("girl" if girl else "boy") if child else animal
        return Entity(rank, given, family, girl, kind, trait, village, pet, pet_name, (like1, like2), food, color,
                      thing, place, self._friend(rank, given))

    def _friend(self, rank: int, given: str) -> int:
        for attempt in itertools.count():
            friend = self.draw((self._digits(rank, attempt) >> 139) / (1 << 53))
            if friend != rank and self.name_parts(friend)[0] != given:
                return friend
        raise AssertionError("unreachable")

    def rank_of(self, given: str, family: str) -> int:
        """The inverse of name_parts (a ValueError for a name no character has)."""
        heads = len(W.FAMILY_HEADS)
        family_index = next((i + heads * W.FAMILY_TAILS.index(family[len(h):]) for i, h in enumerate(W.FAMILY_HEADS)
                             if family.startswith(h) and family[len(h):] in W.FAMILY_TAILS), None)
        if family_index is None or given not in GIVEN:
            raise ValueError(f"{given} {family} is not a storyworld name")
        index = family_index * len(GIVEN) + GIVEN.index(given)
        if index >= self.entities:
            raise ValueError(f"{given} {family} is not one of this world's {self.entities} characters")
        return (index - self.b) * self.a_inverse % self.entities


@lru_cache(maxsize=4)
def zipf_entropy_bits(entities: int) -> float:
    """The entropy of one Zipf draw, in bits."""
    cumulative, log_total = zipf_table(entities)
    total = cumulative[-1]
    return -sum(w / total * (math.log(w) - log_total) for w in ((r + ZIPF_OFFSET) ** -ZIPF_EXPONENT
                                                               for r in range(entities))) / math.log(2)


def knowledge_bits(entities: int = DEFAULT_ENTITIES) -> dict[str, float]:
    """Bits of knowledge per character, fact by fact (the entropy of the fact's draw: what a model
    that knows the world's laws but not this character must pay to learn it), and `total` over
    the whole world. The friend is counted at the Zipf law's entropy (its exclusions left out)."""
    per = {"kind": 1 + 0.5 * math.log2(len(W.ANIMALS)), "trait": math.log2(len(W.HERO_ADJECTIVES)),
           "village": math.log2(len(W.VILLAGE_HEADS) * len(W.VILLAGE_TAILS)), "pet": math.log2(len(W.ANIMALS)),
           "pet_name": math.log2(len(W.PET_NAMES)), "likes": math.log2(len(W.ACTIVITIES) * (len(W.ACTIVITIES) - 1)),
           "food": math.log2(len(W.FOODS)), "color": math.log2(len(W.COLORS)), "thing": math.log2(len(W.OBJECTS)),
           "place": math.log2(len(W.PLACES)), "friend": zipf_entropy_bits(entities)}
    per_entity = sum(per.values())
    return {**per, "per_entity": per_entity, "total": per_entity * entities}
