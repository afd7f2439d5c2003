"""storyworld: the embedded corpus, generated here, seeded, deterministic, in versions.

TinyStories-style children's stories (named characters with consistent pronouns, an object and
places that stay the same through a story, a problem, dialogue in quotes, a resolution, sometimes a
moral). Because this module writes every story, it knows each story's exact probability: every
random choice is drawn from a known distribution and its log-probability added up, and the
grammar is unambiguous (the text determines the choices), so the sum is the story's exact
log-probability. The validation split's entropy in bits per byte is the floor no model's val_bpb
can beat in expectation: a result below it exposes a bug.

Version 1 (this module's write_story) draws every choice afresh in every story: its grammar is
learned by about a million parameters, and larger models gain nothing more. Version 2
(storyworld_v2.py) tells the same kind of story about the characters of a fixed world
(storyworld_world.py), whose facts a model must memorise: there the entropy is the text's given
the world. A version, once published, never changes; a spec without one is version 1.
"""

from __future__ import annotations

import math
import random

from slm_tune.data import storyworld_v2
from slm_tune.data import storyworld_words as W
from slm_tune.data.storyworld_base import Story, Writer, article
from slm_tune.data.storyworld_world import DEFAULT_ENTITIES, MAX_ENTITIES, World  # noqa: F401 (MAX_ENTITIES: corpora)

# A new grammar is a new version beside the old ones, which stay as they are: a version is part of
# the dataset spec and of the token-cache key, so results stored on one keep meaning that one.
VERSIONS = (1, 2)
UNVERSIONED = 1  # `storyworld` without version=: how every study before version 2 recorded its corpus
DEFAULT_TRAIN_STORIES = 30_000
DEFAULT_VALIDATION_STORIES = 1_500
_GIRLS = set(W.GIRLS)
_NAMES = W.GIRLS + W.BOYS


_Writer = Writer  # version 1 as it was written
_article = article


def _character(w: _Writer, exclude: str | None = None) -> tuple[str, str, dict[str, str]]:
    """(name, kind, pronouns): a child or an animal, gendered by the name."""
    name = w.pick(_NAMES, exclude=exclude)
    girl = name in _GIRLS
    kind = ("girl" if girl else "boy") if w.coin(0.5) else w.pick(W.ANIMALS)
    pron = {"he": "she", "his": "her", "him": "her", "He": "She", "His": "Her"} if girl else \
        {"he": "he", "his": "his", "him": "him", "He": "He", "His": "His"}
    return name, kind, pron


def write_story(rng: random.Random) -> Story:
    w = _Writer(rng)
    out: list[str] = []
    hero, kind, p = _character(w)
    adj = w.pick(W.HERO_ADJECTIVES)
    out.append(f"{w.pick(W.OPENERS)}, there was {_article(adj)} {adj} {kind} named {hero}.")
    out.append(f"{p['He']} lived in {w.pick(W.HOMES)} with {p['his']} {w.pick(W.FAMILY)}.")
    first = w.pick(W.ACTIVITIES)
    out.append(f"{p['He']} liked to {first} and {w.pick(W.ACTIVITIES, exclude=first)}.")
    friend, fkind, fp = _character(w, exclude=hero)
    out.append(f"{hero}'s best friend was {_article(fkind)} {fkind} named {friend}.")

    place = w.pick(W.PLACES)
    for _ in range(w.pick([1, 2, 3])):
        event = w.pick([0, 1, 2, 3, 4, 5])
        if event == 0:
            out.append(f"One {w.pick(W.WEATHER)} {w.pick(W.TIMES)}, {hero} and {friend} went to the {place}.")
        elif event == 1:
            out.append(f"At the {place}, they ate some {w.pick(W.FOODS)} and talked about how to {w.pick(W.ACTIVITIES)}.")
        elif event == 2:
            out.append(f"{friend} showed {hero} how to {w.pick(W.ACTIVITIES)}, and {hero} felt {w.pick(W.FEELINGS)}.")
        elif event == 3:
            seen_color = w.pick(W.COLORS)
            out.append(f"Together they saw {_article(seen_color)} {seen_color} {w.pick(W.ANIMALS)} near the {place}.")
        elif event == 4:
            animal = w.pick(W.ANIMALS)
            out.append(f"{hero} heard {_article(animal)} {animal} {w.pick(W.SOUNDS)} {w.pick(W.ADVERBS)} in the {place}.")
        else:
            out.append(f"Every day, {hero} would {w.pick(W.ACTIVITIES)} with {friend} in the {place}.")

    color, thing = w.pick(W.COLORS), w.pick(W.OBJECTS)
    out.append(f"{hero} had {_article(color)} {color} {thing} that {p['he']} loved very much.")
    lost = w.coin(0.5)
    if lost:
        out.append(f"But one day, the {thing} was gone!")
    else:
        hazard = w.pick(W.HAZARDS)
        out.append(f"But then, the {thing} fell into {hazard}!")
    out.append(f'"{w.pick(W.EXCLAIMS)}!" cried {hero}. "{w.pick(W.HELP_LINES)}"')
    out.append(f'"{w.pick(W.REPLIES)}," {w.pick(["said", "replied", "whispered", "answered"])} {friend}.')
    if lost:
        other = w.pick(W.OBJECTS, exclude=thing)
        out.append(f"They looked in the {w.pick(W.PLACES)} and under the {other}, and at last they found the {thing}.")
    else:
        out.append(f"So {hero} and {friend} {w.pick(W.HELPERS_ACTIONS)}, and soon the {thing} was safe again.")
    out.append(f"{hero} felt very {w.pick(W.FEELINGS)}.")
    ending = w.pick(W.ENDINGS)
    ending = ending.replace("{food}", w.pick(W.FOODS)) if "{food}" in ending else ending
    ending = ending.replace("{place}", w.pick(W.PLACES)) if "{place}" in ending else ending
    ending = ending.replace("{feeling}", w.pick(W.FEELINGS)) if "{feeling}" in ending else ending
    out.append(f"{p['He']} hugged {friend}, {ending}.")
    if w.coin(0.4):
        out.append(f"The moral of the story is that {w.pick(W.MORALS)}.")
    return Story(" ".join(out), w.logprob, tuple(w.choices))


def generate(n_stories: int, seed: int, version: int = 1, world: World | None = None) -> list[Story]:
    """n stories of a version from the random stream `seed`; version 2 tells them about `world`
    (default: the world of corpus seed 0)."""
    rng = random.Random(seed)
    if version == 1:
        return [write_story(rng) for _ in range(n_stories)]
    if version == 2:
        world = world or World(0)
        return [storyworld_v2.write_story(rng, world) for _ in range(n_stories)]
    raise ValueError(f"storyworld has versions {', '.join(map(str, VERSIONS))}, not {version}")


def generate_splits(
    train_stories: int = DEFAULT_TRAIN_STORIES,
    validation_stories: int = DEFAULT_VALIDATION_STORIES,
    seed: int = 0,
    version: int = 1,
    entities: int = DEFAULT_ENTITIES,
) -> tuple[list[Story], list[Story]]:
    """Disjoint train and validation stories: separate random streams (in version 2 about one world,
    that of `seed`), and any validation story that also occurs in train (rare, but possible by
    chance) is dropped from validation."""
    world = World(seed, entities) if version == 2 else None
    train = generate(train_stories, 2 * seed, version, world)
    seen = {s.text for s in train}
    validation = []
    for s in generate(validation_stories, 2 * seed + 1, version, world):
        if s.text not in seen:
            seen.add(s.text)
            validation.append(s)
    return train, validation


def entropy_bits_per_byte(stories: list[Story]) -> float:
    """The corpus's true entropy: -sum(log2 p(story)) / sum(UTF-8 bytes of the stories)."""
    bits = -sum(s.logprob for s in stories) / math.log(2)
    return bits / sum(len(s.text.encode("utf-8")) for s in stories)


def world_free_bits_per_byte(stories: list[Story]) -> float | None:
    """Version 2: the cross-entropy of a model that knows the grammar and the world's laws but no
    character's facts (each fact at its prior, once per story); None for version 1."""
    if any(s.prior_logprob is None for s in stories):
        return None
    return -sum(s.prior_logprob for s in stories) / math.log(2) / sum(len(s.text.encode("utf-8")) for s in stories)
