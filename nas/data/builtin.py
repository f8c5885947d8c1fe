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
    "GRADES",
    "GRADE_WORDS",
    "LABELS",
    "agreement_sentence",
    "classification_examples",
    "generation_examples",
    "pretraining_corpus",
    "qa_examples",
]

GENERATOR_VERSION = "1"  # bump whenever pretraining_corpus's output for a given seed changes (it is in cache keys)
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
# Task grades: the words between the end of the asked fact's sentence and the question (None: no upper bound).
GRADE_WORDS: dict[str, tuple[int, int | None]] = {"near": (0, 10), "mid": (30, 60), "far": (MIN_RECALL_WORDS, None)}
GRADES = tuple(GRADE_WORDS)


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


def _cast(rng: random.Random, k: int, extra: int) -> tuple[list[str], list[dict[str, str]]]:
    """``k + extra`` distinct names, and the first ``k`` as people with a job, a city, a pet and an item."""
    names = rng.sample(NAMES, k + extra)
    pets = [f"{_pick(rng, COLOURS)} {animal}" for animal in rng.sample(ANIMALS, k)]  # distinct within a story
    items = [f"{_pick(rng, COLOURS)} {obj}" for obj in rng.sample(OBJECTS, k)]
    rows = zip(names[:k], rng.sample(JOBS, k), rng.sample(CITIES, k), pets, items, strict=True)
    return names, [dict(zip(("name", "job", "city", "pet", "item"), row, strict=True)) for row in rows]


def _fact_sentences(rng: random.Random, e: dict[str, str]) -> tuple[str, str]:
    """A person's two fact sentences: job and city, then pet and item."""
    n = e["name"]
    return (
        _pick(rng, JOB_TEMPLATES).format(n=n, job=_a(e["job"]), city=e["city"]),
        _pick(rng, KEEP_TEMPLATES).format(n=n, pet=_a(e["pet"]), item=_a(e["item"])),
    )


def _distractor(rng: random.Random, name: str) -> str:
    """A sentence about someone who is not one of the story's people."""
    return _pick(rng, DISTRACTORS).format(
        n=name,
        job=_a(_pick(rng, JOBS)),
        city=_pick(rng, CITIES),
        pet=_a(_random_value(rng, "pet")),
        place=_pick(rng, PLACES),
    )


def _story(rng: random.Random) -> _Story:
    """Facts about 4-6 people, then 75-100+ words of agreement sentences with 1-3 distractors mixed in."""
    k = rng.randint(4, 6)
    names, entities = _cast(rng, k, 3)
    sentences: list[str] = []
    where: dict[tuple[int, str], int] = {}  # (entity, attribute) -> index of its fact sentence
    for i, e in enumerate(entities):
        sentences += _fact_sentences(rng, e)
        where[i, "job"] = where[i, "city"] = len(sentences) - 2
        where[i, "pet"] = where[i, "item"] = len(sentences) - 1
    filler: list[str] = []
    target, words = rng.randint(75, 100), 0
    while words < target:
        filler.append(agreement_sentence(rng)[0])
        words += filler[-1].count(" ") + 1
    used = rng.randint(1, 3)
    for other in names[k : k + used]:
        sentence = _distractor(rng, other)
        filler.insert(rng.randint(0, len(filler)), sentence)
    sentences += filler
    return _assemble(sentences, where, entities, frozenset(names[: k + used]))


def _assemble(
    sentences: list[str], where: dict[tuple[int, str], int], entities: list[dict[str, str]], mentioned: frozenset[str]
) -> _Story:
    """A story from its sentences; ``where`` maps (entity, attribute) to the index of its fact sentence."""
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
    return _Story(" ".join(sentences), entities, facts, mentioned)


def _words(sentences: list[str]) -> int:
    return sum(x.count(" ") + 1 for x in sentences)


def _graded_story(rng: random.Random, grade: str) -> tuple[_Story, tuple[int, str]]:
    """A story and the fact (entity, attribute) to ask about, with as many words between the end of that fact's
    sentence and the end of the story as ``grade`` says (:data:`GRADE_WORDS`).

    "far" is the story of :func:`pretraining_corpus` (4-6 people, then 75-100+ words of filler) asked about a fact
    100+ words back. "near" and "mid" tell 3-5 people's facts, the asked person's sentence followed by at most one
    distractor ("near") or by 30-60 words of other people's facts, filler and distractors ("mid"); both have 1-2
    distractor sentences about people who are not in the story."""
    if grade == "far":
        while True:
            story = _story(rng)
            far = [key for key, (_, after) in story.facts.items() if after >= MIN_RECALL_WORDS]
            if far:
                return story, _pick(rng, far)
    k = rng.randint(3, 5)
    names, entities = _cast(rng, k, 2)
    target, attr = rng.randrange(k), _pick(rng, ATTRIBUTES)
    blocks = [list(_fact_sentences(rng, e)) for e in entities]
    # the asked person's sentences with the asked one last; (entity, sentence) pairs keep track of the facts
    asked = 0 if attr in ("job", "city") else 1
    told = [(target, 1 - asked), (target, asked)]
    others = [i for i in range(k) if i != target]
    rng.shuffle(others)
    before: list[tuple[int, int] | str] = []
    after: list[tuple[int, int] | str] = []
    lo = GRADE_WORDS[grade][0]
    goal = rng.randint(lo, lo + 12)
    for i in others:
        words = _words([x if isinstance(x, str) else blocks[x[0]][x[1]] for x in after])
        side = after if grade == "mid" and words + _words(blocks[i]) <= goal else before
        side += [(i, 0), (i, 1)]
    for other in names[k : k + rng.randint(1, 2)]:  # "near": at most one distractor after the asked fact
        side = after if rng.random() < 0.5 and (grade == "mid" or not after) else before
        side.insert(rng.randint(0, len(side)), _distractor(rng, other))
    while grade == "mid" and _words([x if isinstance(x, str) else blocks[x[0]][x[1]] for x in after]) < lo:
        after.insert(rng.randint(0, len(after)), agreement_sentence(rng, depth=1)[0])
    sentences: list[str] = []
    where: dict[tuple[int, str], int] = {}
    for x in before + told + after:
        if isinstance(x, str):
            sentences.append(x)
            continue
        sentences.append(blocks[x[0]][x[1]])
        for a in ("job", "city") if x[1] == 0 else ("pet", "item"):
            where[x[0], a] = len(sentences) - 1
    return _assemble(sentences, where, entities, frozenset(names[: k + 2])), (target, attr)


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


def _grade(grades: Sequence[str], j: int) -> str:
    """The grade of the ``j``-th example: the grades in turn, so that every grade gets a share of any prefix."""
    grade = grades[j % len(grades)]
    if grade not in GRADE_WORDS:
        raise ValueError(f"unknown grade {grade!r}; known: {', '.join(GRADES)}")
    return grade


def classification_examples(seed: int, n: int, grades: Sequence[str] = GRADES) -> list[dict]:
    """``n`` examples ``{"text": story + "\\nClaim: <claim>.", "label": "true" | "false" | "not mentioned", "grade"}``.

    "true" states a fact of the story, "false" gives a story person a different value of that attribute (half the
    time another person's value), "not mentioned" is about a name absent from the story. Labels are drawn uniformly;
    the grade (the distance of the evidence, see :func:`_graded_story`) takes ``grades`` in turn.
    """
    rng = random.Random(f"builtin-classify-{seed}")
    out = []
    for j in range(n):
        grade = _grade(grades, j)
        story, (i, attr) = _graded_story(rng, grade)
        label = _pick(rng, LABELS)
        name, value = story.entities[i]["name"], story.entities[i][attr]
        if label == "not mentioned":
            name = _pick(rng, [m for m in NAMES if m not in story.mentioned])
            value = _pick(rng, story.entities)[attr] if rng.random() < 0.5 else _random_value(rng, attr)
        elif label == "false":
            own = value
            others = [e[attr] for j, e in enumerate(story.entities) if j != i]
            value = _pick(rng, others) if rng.random() < 0.5 else own
            while value == own:
                value = _random_value(rng, attr)
        claim = CLAIMS[attr].format(name, _phrase(attr, value))
        out.append({"text": f"{story.text}\nClaim: {claim}.", "label": label, "grade": grade})
    return out


def qa_examples(seed: int, n: int, grades: Sequence[str] = GRADES) -> list[dict]:
    """``n`` SQuAD-style examples, one per story (``title`` "story-17"), each with its ``grade`` (``grades`` in turn).

    Answers are short ("Oslo", "baker", "grey cat", "red kite"); ``answer_start`` is their offset in the fact
    sentence about that person (where the grade measures the distance from).
    """
    rng = random.Random(f"builtin-qa-{seed}")
    out: list[dict] = []
    for j in range(n):
        grade = _grade(grades, j)
        story, key = _graded_story(rng, grade)
        out.append(
            {
                "id": f"story-{j}-q0",
                "title": f"story-{j}",
                "context": story.text,
                "question": QUESTIONS[key[1]].format(story.entities[key[0]]["name"]),
                "answers": {"text": [story.entities[key[0]][key[1]]], "answer_start": [story.facts[key][0]]},
                "grade": grade,
            }
        )
    return out


def generation_examples(seed: int, n: int, grades: Sequence[str] = GRADES) -> list[dict]:
    """``n`` examples ``{"prompt": story + "\\nQuestion: <q>\\nAnswer:", "completion": " <answer>.", "choices",
    "grade"}``, one per story, in the format of the Q/A lines of :func:`pretraining_corpus`; ``grades`` in turn.
    ``choices`` are the completions naming each story person's value of the asked attribute, in the order the
    people are introduced (distinct, the completion among them): the candidates of a multiple-choice score."""
    rng = random.Random(f"builtin-generate-{seed}")
    out = []
    for j in range(n):
        grade = _grade(grades, j)
        story, key = _graded_story(rng, grade)
        question, answer = _question(story, key)
        values = [_question(story, (i, key[1]))[1] for i in range(len(story.entities))]
        out.append(
            {
                "prompt": f"{story.text}\nQuestion: {question}\nAnswer:",
                "completion": f" {answer}.",
                "choices": [f" {value}." for value in values],
                "grade": grade,
            }
        )
    return out
