"""A seeded generator of synthetic English text: the "builtin" data set, needing no files and no network.

The text is small-vocabulary but not trivial. A *story* introduces 4-6 people with a job, a home city, a pet and an
item, then continues with ~75-100 words of filler before anything is asked, so answering needs in-context recall over
100+ words. The filler is made of subject-verb agreement sentences with nested relative clauses whose nearest noun
usually has the other number ("The dog that the teachers who live by the river see is hungry."), plus distractor
sentences about other people. Scores therefore depend on depth, heads and attention window size.

Everything is deterministic given the seed: each function draws from its own ``random.Random`` instance, never from
the global generator, and the first ``n`` items do not depend on how many more are asked for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "GENERATOR_VERSION",
    "LABELS",
    "agreement_sentence",
    "classification_examples",
    "generation_examples",
    "pretraining_corpus",
    "qa_examples",
]

GENERATOR_VERSION = "1"  # bump whenever the output for a given seed changes (it is part of cache keys)
LABELS = ("true", "false", "not mentioned")

# fmt: off
NAMES = (
    "Mira", "Tomas", "Ada", "Omar", "Lena", "Ivan", "Nora", "Felix", "Hugo", "Iris", "Kofi", "Leo",
    "Maya", "Nico", "Olga", "Pablo", "Rosa", "Sami", "Tara", "Vera", "Yara", "Zane", "Bruno", "Clara",
    "Dara", "Ines", "Farid", "Greta", "Hana", "Igor", "Jonas", "Kira", "Lars", "Milo", "Nadia", "Oscar",
    "Petra", "Quinn", "Rafa", "Selma", "Theo", "Ulla", "Viktor", "Wanda", "Xena", "Yusuf", "Zara", "Anton",
)
CITIES = (
    "Oslo", "Lima", "Cairo", "Rome", "Paris", "Quito", "Dakar", "Hanoi", "Kyiv", "Riga", "Tunis", "Accra",
    "Delhi", "Seoul", "Tokyo", "Perth", "Dublin", "Madrid", "Lisbon", "Vienna", "Prague", "Berlin", "Athens",
    "Nairobi", "Sofia", "Zagreb", "Bern", "Minsk", "Baku", "Doha", "Manila", "Havana",
)
JOBS = (
    "baker", "pilot", "nurse", "farmer", "tailor", "painter", "sailor", "miner", "plumber", "chemist",
    "dentist", "barber", "butcher", "carpenter", "engineer", "architect",
)
COLOURS = ("red", "blue", "green", "grey", "black", "white", "brown", "pink", "yellow", "purple", "orange", "golden")
OBJECTS = (
    "kite", "drum", "lamp", "mug", "bell", "clock", "scarf", "kettle", "bike", "boat", "vase", "flute",
    "mirror", "umbrella", "book", "basket",
)
ANIMALS = (
    "cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goat", "horse", "pony", "snake", "lizard", "owl",
    "duck", "goose", "mouse", "ferret",
)
NOUNS = (  # (singular, plural); people only, so "who" fits; disjoint from jobs, animals and objects
    ("child", "children"), ("man", "men"), ("woman", "women"), ("teacher", "teachers"), ("student", "students"),
    ("neighbour", "neighbours"), ("singer", "singers"), ("guard", "guards"), ("visitor", "visitors"),
    ("cousin", "cousins"), ("doctor", "doctors"), ("driver", "drivers"), ("dancer", "dancers"), ("poet", "poets"),
    ("judge", "judges"), ("clerk", "clerks"),
)
PLACES = ("river", "tower", "market", "bridge", "station", "harbour", "school", "park", "library", "square", "mill")
TRANSITIVE = (  # (singular, plural)
    ("sees", "see"), ("likes", "like"), ("helps", "help"), ("knows", "know"), ("follows", "follow"),
    ("watches", "watch"), ("trusts", "trust"), ("visits", "visit"), ("thanks", "thank"), ("praises", "praise"),
)
INTRANSITIVE = (("lives", "live"), ("works", "work"), ("waits", "wait"), ("sings", "sing"), ("sleeps", "sleep"))
PREPOSITIONS = ("near", "by", "behind", "at")
COPULAS = (("is", "are"), ("was", "were"))
ADJECTIVES = ("hungry", "tired", "happy", "late", "busy", "quiet", "angry", "proud", "calm", "brave", "lonely")
# fmt: on

ATTRIBUTES = ("job", "city", "pet", "item")
JOB_TEMPLATES = ("{n} is {job} from {city}.", "{n} works as {job} and comes from {city}.")
KEEP_TEMPLATES = ("{n} keeps {pet} and {item}.", "{n} owns {item} and keeps {pet}.")
QUESTIONS = {
    "city": "Where is {} from?",
    "job": "What is {}'s job?",
    "pet": "What pet does {} keep?",
    "item": "What item does {} keep?",
}
CLAIMS = {"city": "{} is from {}", "job": "{} is {}", "pet": "{} keeps {}", "item": "{} keeps {}"}
DISTRACTORS = (
    "{n} is {job} from {city}.",
    "{n} keeps {pet}.",
    "{n} once visited {city}.",
    "{n} met {job} near the {place}.",
)
_T = TypeVar("_T")
MIN_RECALL_WORDS = 100  # most questions/claims target a fact stated at least this many words earlier


def _pick(rng: random.Random, seq: Sequence[_T]) -> _T:
    """``rng.choice(seq)``, about three times faster (a float draw instead of rejection sampling)."""
    return seq[int(rng.random() * len(seq))]


def _a(phrase: str) -> str:
    """``phrase`` with the indefinite article in front ("a baker", "an orange cat")."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _np(rng: random.Random, depth: int, contrast: bool, top: bool = False) -> tuple[str, bool]:
    """A noun phrase ``the N ...`` nested up to ``depth`` clauses; its number is ``not contrast`` 70% of the time."""
    plural = (not contrast) if rng.random() < 0.7 else contrast
    text = "the " + _pick(rng, NOUNS)[plural]
    if depth > 0:
        r = rng.random() * (0.8 if top else 1.0)  # the top level always gets a clause holding another noun
        if r < 0.5:  # object relative: "the dog that the teachers see"
            inner, inner_plural = _np(rng, depth - 1, plural)
            text += f" that {inner} {_pick(rng, TRANSITIVE)[inner_plural]}"
        elif r < 0.8:  # subject relative: "the dogs who help the teacher"
            text += f" who {_pick(rng, TRANSITIVE)[plural]} {_np(rng, depth - 1, plural)[0]}"
        else:  # "the dogs who live by the river"
            text += f" who {_pick(rng, INTRANSITIVE)[plural]} {_pick(rng, PREPOSITIONS)} the {_pick(rng, PLACES)}"
    return text, plural


def agreement_sentence(rng: random.Random, depth: int | None = None) -> tuple[str, bool]:
    """One agreement sentence with 1-2 levels of nesting; returns ``(sentence, head_is_plural)``.

    The final "is/are" or "was/were" agrees with the head noun (the second word), not with the nearer nouns.
    """
    subject, plural = _np(rng, depth if depth is not None else _pick(rng, (1, 2)), rng.random() < 0.5, top=True)
    sentence = f"{subject} {_pick(rng, COPULAS)[plural]} {_pick(rng, ADJECTIVES)}."
    return sentence[0].upper() + sentence[1:], plural


@dataclass(frozen=True)
class _Story:
    """A story's text, its entities (name -> attribute values), where each fact sits, and every name it uses."""

    text: str
    entities: list[dict[str, str]]
    facts: dict[tuple[int, str], tuple[int, int]]  # (entity, attribute) -> (char offset of value, words after it)
    mentioned: frozenset[str]


def _random_value(rng: random.Random, attr: str) -> str:
    """A value for ``attr`` drawn from the whole world."""
    if attr == "city":
        return _pick(rng, CITIES)
    if attr == "job":
        return _pick(rng, JOBS)
    return f"{_pick(rng, COLOURS)} {_pick(rng, ANIMALS if attr == 'pet' else OBJECTS)}"


def _phrase(attr: str, value: str) -> str:
    """How a value reads in a sentence: cities bare, everything else with an article."""
    return value if attr == "city" else _a(value)


def _story(rng: random.Random) -> _Story:
    """Facts about 4-6 people, then 75-100+ words of agreement sentences with 1-3 distractors mixed in."""
    k = rng.randint(4, 6)
    names = rng.sample(NAMES, k + 3)
    pets = [f"{_pick(rng, COLOURS)} {animal}" for animal in rng.sample(ANIMALS, k)]  # distinct within a story
    items = [f"{_pick(rng, COLOURS)} {obj}" for obj in rng.sample(OBJECTS, k)]
    rows = zip(names[:k], rng.sample(JOBS, k), rng.sample(CITIES, k), pets, items, strict=True)
    entities = [dict(zip(("name", "job", "city", "pet", "item"), row, strict=True)) for row in rows]
    sentences: list[str] = []
    where: dict[tuple[int, str], int] = {}  # (entity, attribute) -> index of its fact sentence
    for i, e in enumerate(entities):
        n = e["name"]
        sentences.append(_pick(rng, JOB_TEMPLATES).format(n=n, job=_a(e["job"]), city=e["city"]))
        where[i, "job"] = where[i, "city"] = len(sentences) - 1
        sentences.append(_pick(rng, KEEP_TEMPLATES).format(n=n, pet=_a(e["pet"]), item=_a(e["item"])))
        where[i, "pet"] = where[i, "item"] = len(sentences) - 1
    filler: list[str] = []
    target, words = rng.randint(75, 100), 0
    while words < target:
        filler.append(agreement_sentence(rng)[0])
        words += filler[-1].count(" ") + 1
    used = rng.randint(1, 3)
    for other in names[k : k + used]:
        d = _pick(rng, DISTRACTORS).format(
            n=other,
            job=_a(_pick(rng, JOBS)),
            city=_pick(rng, CITIES),
            pet=_a(_random_value(rng, "pet")),
            place=_pick(rng, PLACES),
        )
        filler.insert(rng.randint(0, len(filler)), d)
    sentences += filler
    starts, ends, pos, count = [], [], 0, 0
    for s in sentences:
        starts.append(pos)
        pos += len(s) + 1
        count += s.count(" ") + 1
        ends.append(count)
    facts = {
        (i, attr): (starts[si] + sentences[si].index(entities[i][attr]), count - ends[si])
        for (i, attr), si in where.items()
    }
    return _Story(" ".join(sentences), entities, facts, frozenset(names[: k + used]))


def _targets(rng: random.Random, story: _Story, count: int) -> list[tuple[int, str]]:
    """``count`` distinct (entity, attribute) pairs, 75% of the time among facts >= MIN_RECALL_WORDS words back."""
    keys = list(story.facts)
    far = [key for key in keys if story.facts[key][1] >= MIN_RECALL_WORDS]
    chosen: list[tuple[int, str]] = []
    while len(chosen) < count:
        key = _pick(rng, far if far and rng.random() < 0.75 else keys)
        if key not in chosen:
            chosen.append(key)
    return chosen


def _question(story: _Story, key: tuple[int, str]) -> tuple[str, str]:
    """(question, answer) for a fact: "Where is Mira from?" -> "Oslo", "What pet does Mira keep?" -> "a grey cat"."""
    e = story.entities[key[0]]
    value = e[key[1]]
    return QUESTIONS[key[1]].format(e["name"]), value if key[1] in ("city", "job") else _a(value)


def pretraining_corpus(seed: int, n_documents: int) -> list[str]:
    """``n_documents`` training texts: ~3 in 4 a story plus 2-4 "Question: ...\\nAnswer: ...." lines, else a
    paragraph of 6-10 agreement sentences."""
    rng = random.Random(f"builtin-pretrain-{seed}")
    docs = []
    for _ in range(n_documents):
        if rng.random() < 0.25:
            docs.append(" ".join(agreement_sentence(rng)[0] for _ in range(rng.randint(6, 10))))
            continue
        story = _story(rng)
        qa = (_question(story, key) for key in _targets(rng, story, rng.randint(2, 4)))
        docs.append(story.text + "".join(f"\nQuestion: {q}\nAnswer: {a}." for q, a in qa))
    return docs


def classification_examples(seed: int, n: int) -> list[dict]:
    """``n`` examples ``{"text": story + "\\nClaim: <claim>.", "label": "true" | "false" | "not mentioned"}``.

    "true" states a fact of the story, "false" gives a story person a different value of that attribute (half the
    time another person's value), "not mentioned" is about a name absent from the story. Labels are drawn uniformly.
    """
    rng = random.Random(f"builtin-classify-{seed}")
    out = []
    for _ in range(n):
        story = _story(rng)
        label = _pick(rng, LABELS)
        if label == "not mentioned":
            name = _pick(rng, [m for m in NAMES if m not in story.mentioned])
            attr = _pick(rng, ATTRIBUTES)
            value = _pick(rng, story.entities)[attr] if rng.random() < 0.5 else _random_value(rng, attr)
        else:
            i, attr = _targets(rng, story, 1)[0]
            name, value = story.entities[i]["name"], story.entities[i][attr]
            if label == "false":
                own = value
                others = [e[attr] for j, e in enumerate(story.entities) if j != i]
                value = _pick(rng, others) if rng.random() < 0.5 else own
                while value == own:
                    value = _random_value(rng, attr)
        claim = CLAIMS[attr].format(name, _phrase(attr, value))
        out.append({"text": f"{story.text}\nClaim: {claim}.", "label": label})
    return out


def qa_examples(seed: int, n: int) -> list[dict]:
    """``n`` SQuAD-style examples, 2-4 per story (same ``title``, e.g. "story-17"), so callers can split by story.

    Answers are short ("Oslo", "baker", "grey cat", "red kite"); ``answer_start`` is their first occurrence in the
    context, inside the fact sentence about that person.
    """
    rng = random.Random(f"builtin-qa-{seed}")
    out: list[dict] = []
    story_no = 0
    while len(out) < n:
        story = _story(rng)
        title = f"story-{story_no}"
        for j, key in enumerate(_targets(rng, story, min(rng.randint(2, 4), n - len(out)))):
            answer = story.entities[key[0]][key[1]]
            out.append(
                {
                    "id": f"{title}-q{j}",
                    "title": title,
                    "context": story.text,
                    "question": QUESTIONS[key[1]].format(story.entities[key[0]]["name"]),
                    "answers": {"text": [answer], "answer_start": [story.facts[key][0]]},
                }
            )
        story_no += 1
    return out


def generation_examples(seed: int, n: int) -> list[dict]:
    """``n`` examples ``{"prompt": story + "\\nQuestion: <q>\\nAnswer:", "completion": " <answer>."}``, one per story,
    in the same format as the Q/A lines of :func:`pretraining_corpus`."""
    rng = random.Random(f"builtin-generate-{seed}")
    out = []
    for _ in range(n):
        story = _story(rng)
        question, answer = _question(story, _targets(rng, story, 1)[0])
        out.append({"prompt": f"{story.text}\nQuestion: {question}\nAnswer:", "completion": f" {answer}."})
    return out
