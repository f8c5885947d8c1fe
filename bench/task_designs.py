"""Other designs of the builtin claims and answer tasks, measured like bench/task_recipes.py.

The builtin claims (classification) and answer (generation) tasks stay at chance on `cpu-tiny`
(bench/RESULTS.md, task_recipes). This bench asks whether the task's *design*, not the recipe, is
what a small model cannot meet. It swaps the builtin example generators for one of:

- ``echo``: the claim / question is stated before the story as well as after it, so that, as in
  qa's question-first layout, the story's tokens can attend to what is asked.
- ``probe``: the near grade becomes subject-verb agreement across nested clauses (claims: is
  "Claim: <sentence>." grammatical, true / false; answer: the sentence's start as prompt, the
  candidates " is <adj>." and " are <adj>." or "was / were"), and the mid grade of claims becomes
  a one-person story (true / false / not mentioned decided by which name and value it states);
  the far grade is unchanged.

then runs bench/task_recipes.py with the remaining arguments (its JSON output defaults to
``task_designs_<design>.json``; give each design its own ``--out``: a JSON file's rows are keyed by the
protocol, not the design; the printed grade names are the builtin's own: near / mid / far).

    python bench/task_designs.py probe --archs 3 --steps 40 160 --tasks claims answer \\
        --set tasks.claims.enabled=true --set tasks.answer.enabled=true
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import task_recipes  # noqa: E402

from nas.data import builtin  # noqa: E402

HERE = Path(__file__).resolve().parent
_CLASSIFY, _GENERATE = builtin.classification_examples, builtin.generation_examples


def agreement(rng: random.Random) -> tuple[str, str, str, str]:
    """An agreement sentence cut before its copula: (start, right copula, wrong copula, adjective)."""
    sentence, _ = builtin.agreement_sentence(rng)
    *start, copula, adjective = sentence[:-1].split(" ")
    singular, plural = next(pair for pair in builtin.COPULAS if copula in pair)
    return " ".join(start), copula, plural if copula == singular else singular, adjective


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _value(rng: random.Random, attr: str) -> str:
    """A value of ``attr`` as it reads in a sentence: "Oslo", "a baker", "a grey cat", "a red kite"."""
    if attr == "city":
        return rng.choice(builtin.CITIES)
    if attr == "job":
        return _a(rng.choice(builtin.JOBS))
    return _a(f"{rng.choice(builtin.COLOURS)} {rng.choice(builtin.ANIMALS if attr == 'pet' else builtin.OBJECTS)}")


def one_person(rng: random.Random) -> tuple[str, str]:
    """A one-person story (the builtin's two fact sentences) and a claim about it: (text, label)."""
    name = rng.choice(builtin.NAMES)
    person = {attr: _value(rng, attr) for attr in builtin.ATTRIBUTES}
    text = " ".join(
        (
            rng.choice(builtin.JOB_TEMPLATES).format(n=name, job=person["job"], city=person["city"]),
            rng.choice(builtin.KEEP_TEMPLATES).format(n=name, pet=person["pet"], item=person["item"]),
        )
    )
    attr, label = rng.choice(builtin.ATTRIBUTES), rng.choice(builtin.LABELS)
    claimed, value = name, person[attr]
    if label == "not mentioned":
        claimed = rng.choice([m for m in builtin.NAMES if m != name])
    elif label == "false":
        while value == person[attr]:
            value = _value(rng, attr)
    return f"{text}\nClaim: {builtin.CLAIMS[attr].format(claimed, value)}.", label


def echo_classification(seed: int, n: int, grades=builtin.GRADES) -> list[dict]:
    out = []
    for x in _CLASSIFY(seed, n, grades):
        story, claim = x["text"].rsplit("\n", 1)
        out.append({**x, "text": f"{claim}\n{story}\n{claim}"})
    return out


def echo_generation(seed: int, n: int, grades=builtin.GRADES) -> list[dict]:
    out = []
    for x in _GENERATE(seed, n, grades):
        story, question, answer = x["prompt"].rsplit("\n", 2)
        out.append({**x, "prompt": f"{question}\n{story}\n{question}\n{answer}"})
    return out


def probe_classification(seed: int, n: int, grades=builtin.GRADES) -> list[dict]:
    rng = random.Random(f"task-designs-classify-{seed}")
    out = []
    for x in _CLASSIFY(seed, n, grades):
        if x["grade"] == "near":
            start, right, wrong, adjective = agreement(rng)
            ok = rng.random() < 0.5
            x = {**x, "text": f"Claim: {start} {right if ok else wrong} {adjective}.", "label": str(ok).lower()}
        elif x["grade"] == "mid":
            text, label = one_person(rng)
            x = {**x, "text": text, "label": label}
        out.append(x)
    return out


def probe_generation(seed: int, n: int, grades=builtin.GRADES) -> list[dict]:
    rng = random.Random(f"task-designs-generate-{seed}")
    out = []
    for x in _GENERATE(seed, n, grades):
        if x["grade"] == "near":
            start, right, wrong, adjective = agreement(rng)
            choices = [f" {right} {adjective}.", f" {wrong} {adjective}."]
            if rng.random() < 0.5:
                choices.reverse()
            x = {**x, "prompt": start, "completion": f" {right} {adjective}.", "choices": choices}
        out.append(x)
    return out


DESIGNS = {"echo": (echo_classification, echo_generation), "probe": (probe_classification, probe_generation)}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in DESIGNS:
        sys.exit(f"usage: task_designs.py {{{','.join(DESIGNS)}}} [bench/task_recipes.py arguments]\n\n{__doc__}")
    design, rest = sys.argv[1], sys.argv[2:]
    builtin.classification_examples, builtin.generation_examples = DESIGNS[design]
    if not any(a == "--out" or a.startswith("--out=") for a in rest):
        rest += ["--out", str(HERE / f"task_designs_{design}.json")]
    sys.argv = ["task_recipes.py", *rest]
    task_recipes.main()


if __name__ == "__main__":
    main()
