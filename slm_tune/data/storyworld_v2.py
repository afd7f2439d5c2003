"""storyworld version 2's stories: version 1's plot, told about the characters of a fixed world.

A story draws its hero from the world (slm_tune/data/storyworld_world.py) by the Zipf law, states
the hero's facts, walks one to three steps along the best-friend relation (each friend named with
three of its own facts), and tells version 1's plot with the hero and the first friend, where the
place, the food, the activities and the treasured thing are now the hero's facts. Two sentences
need what came before rather than the world: a thing moved from one place to another and found
in the second, and a sum ("had five shells, and Tom gave her three more, so now she had eight").

Every choice is drawn from a known distribution and its log-probability added up; a fact is
certain given the world and adds nothing. The text determines the choices (a name gives back its
character), so the sum is the story's exact log-probability given the world.
"""

from __future__ import annotations

import math
import random

from slm_tune.data import storyworld_words as W
from slm_tune.data.storyworld_base import Story, Writer, article as _a
from slm_tune.data.storyworld_world import VILLAGES, Entity, World

HOPS = (1, 2, 3)  # steps along the best-friend relation
EVENTS = (0, 1, 2)  # plot events between the friends and the treasured thing
MORAL = 0.4
REPLY_VERBS = ["said", "replied", "whispered", "answered"]
CHILD = 0.5  # the share of characters that are children (the others are animals)
_PRIOR = {  # a fact's log-probability to a model that knows the world's laws but not the character
    "trait": -math.log(len(W.HERO_ADJECTIVES)), "village": -math.log(len(VILLAGES)),
    "pet": -math.log(len(W.ANIMALS)), "pet_name": -math.log(len(W.PET_NAMES)),
    "like1": -math.log(len(W.ACTIVITIES)), "like2": -math.log(len(W.ACTIVITIES) - 1),
    "food": -math.log(len(W.FOODS)), "color": -math.log(len(W.COLORS)), "thing": -math.log(len(W.OBJECTS)),
    "place": -math.log(len(W.PLACES))}


class WorldWriter(Writer):
    """A writer that also draws characters and keeps the prior log-probability of the facts told."""

    def __init__(self, rng: random.Random, world: World):
        super().__init__(rng)
        self.world = world
        self.prior = 0.0
        self.told: set[tuple[int, str]] = set()

    def character(self) -> Entity:
        rank = self.world.draw(self.rng.random())
        self.logprob += self.world.logprob(rank)
        self.choices.append(rank)
        return self.world.entity(rank)

    def tell(self, e: Entity, *facts: str) -> None:
        """The story states these facts of e: free given the world, at their prior the first time."""
        for fact in facts:
            if (e.rank, fact) in self.told:
                continue
            self.told.add((e.rank, fact))
            if fact == "kind":
                self.prior += math.log(CHILD if e.kind in ("girl", "boy") else (1 - CHILD) / len(W.ANIMALS))
            elif fact == "friend":
                self.prior += self.world.logprob(e.friend)
            else:
                self.prior += _PRIOR[fact]


def pronouns(e: Entity) -> dict[str, str]:
    return {"he": "she", "his": "her", "him": "her", "He": "She", "His": "Her"} if e.girl else \
        {"he": "he", "his": "his", "him": "him", "He": "He", "His": "His"}


def _introduce(w: WorldWriter, hero: Entity) -> list[str]:
    p = pronouns(hero)
    w.tell(hero, "trait", "kind", "village", "pet", "pet_name", "like1", "like2", "food")
    return [f"{w.pick(W.OPENERS)}, there was {_a(hero.trait)} {hero.trait} {hero.kind} named {hero.name}.",
            f"{p['He']} lived in {hero.village} with {p['his']} pet {hero.pet} {hero.pet_name}.",
            f"{p['He']} liked to {hero.likes[0]} and {hero.likes[1]}, and {p['his']} favorite food was {hero.food}."]


def _friends(w: WorldWriter, hero: Entity) -> list[str]:
    out, prev = [], hero
    for _ in range(w.pick(list(HOPS))):
        f = w.world.entity(prev.friend)
        w.tell(prev, "friend")
        w.tell(f, "trait", "kind", "village")
        out.append(f"{prev.given}'s best friend was {f.name}, {_a(f.trait)} {f.trait} {f.kind} from {f.village}.")
        prev = f
    return out


def _event(w: WorldWriter, hero: Entity, friend: Entity) -> str:
    h, f, place = hero.given, friend.given, hero.place
    event = w.pick([0, 1, 2, 3, 4, 5])
    w.tell(*((friend, "like1") if event == 2 else (hero, "place")))
    if event == 0:
        return f"One {w.pick(W.WEATHER)} {w.pick(W.TIMES)}, {h} and {f} went to the {place}."
    if event == 1:
        return f"At the {place}, they ate some {hero.food} and talked about how to {w.pick(W.ACTIVITIES)}."
    if event == 2:
        return f"{f} showed {h} how to {friend.likes[0]}, and {h} felt {w.pick(W.FEELINGS)}."
    if event == 3:
        color = w.pick(W.COLORS)
        return f"Together they saw {_a(color)} {color} {w.pick(W.ANIMALS)} near the {place}."
    if event == 4:
        animal = w.pick(W.ANIMALS)
        return f"{h} heard {_a(animal)} {animal} {w.pick(W.SOUNDS)} {w.pick(W.ADVERBS)} in the {place}."
    return f"Every day, {h} would {hero.likes[0]} with {f} in the {place}."


def _treasure(w: WorldWriter, hero: Entity, friend: Entity) -> list[str]:
    """The treasured thing lost (moved by the friend: found where it was moved) or in danger."""
    h, f, p, thing = hero.given, friend.given, pronouns(hero), hero.thing
    w.tell(hero, "color", "thing")
    out = [f"{h} had {_a(hero.color)} {hero.color} {thing} that {p['he']} loved very much."]
    lost = w.coin(0.5)
    if lost:
        left = w.pick(W.PLACES)
        moved = w.pick(W.PLACES, exclude=left)
        out += [f"One day, {h} left the {thing} in the {left}, and {f} moved it to the {moved}.",
                f"Later, {h} could not find the {thing}!"]
    else:
        out.append(f"But then, the {thing} fell into {w.pick(W.HAZARDS)}!")
    out.append(f'"{w.pick(W.EXCLAIMS)}!" cried {h}. "{w.pick(W.HELP_LINES)}"')
    out.append(f'"{w.pick(W.REPLIES)}," {w.pick(REPLY_VERBS)} {f}.')
    if lost:
        out.append(f"They looked in the {left}, and at last they found the {thing} in the {moved}.")
    else:
        out.append(f"So {h} and {f} {w.pick(W.HELPERS_ACTIONS)}, and soon the {thing} was safe again.")
    out.append(f"{h} felt very {w.pick(W.FEELINGS)}.")
    return out


def _ending(w: WorldWriter, hero: Entity, friend: Entity) -> list[str]:
    p, h = pronouns(hero), hero.given
    have, more = w.pick(list(range(2, 10))), w.pick(list(range(1, 10)))
    out = [f"{h} had {W.NUMBERS[have]} {w.pick(W.COUNTABLES)}, and {friend.given} gave {p['him']} "
           f"{W.NUMBERS[more]} more, so now {p['he']} had {W.NUMBERS[have + more]}."]
    ending = w.pick(W.ENDINGS)
    if "{food}" in ending:
        w.tell(hero, "food")
        ending = ending.replace("{food}", hero.food)
    ending = ending.replace("{place}", w.pick(W.PLACES)) if "{place}" in ending else ending
    ending = ending.replace("{feeling}", w.pick(W.FEELINGS)) if "{feeling}" in ending else ending
    out.append(f"{p['He']} hugged {friend.given}, {ending}.")
    if w.coin(MORAL):
        out.append(f"The moral of the story is that {w.pick(W.MORALS)}.")
    return out


def write_story(rng: random.Random, world: World) -> Story:
    w = WorldWriter(rng, world)
    hero = w.character()
    out = _introduce(w, hero) + _friends(w, hero)
    friend = world.entity(hero.friend)
    out += [_event(w, hero, friend) for _ in range(w.pick(list(EVENTS)))]
    out += _treasure(w, hero, friend) + _ending(w, hero, friend)
    return Story(" ".join(out), w.logprob, tuple(w.choices), w.logprob + w.prior)
