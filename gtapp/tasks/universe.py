"""Generated task families mirroring the paper's datasets, each with many variants.

Families (paper dataset they stand in for -> metric):
  math        GSM8K / AQuA-RAT word problems -> numeric exact match
  commonsense CommonsenseQA multiple choice  -> letter exact match
  reading     DROP discrete reasoning        -> exact match (numbers or spans)
  dialogue    SAMSum / DialogSum summaries   -> ROUGE-L
  lm          language modelling             -> perplexity

A variant fixes a domain, an operation/question type, a template and a difficulty. Every
example is a pure function of (variant, split, seed, index), so the same name and seed give
the same task anywhere, and shadow and private tasks can be chosen disjoint within a family
(different variants) or across families.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import gtapp.tasks.world as W
from gtapp.tasks.base import Example, Task, extract_letter, extract_number, first_line

LETTERS = "ABCDE"


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "math/add-fruit-easy"
    family: str
    params: dict = field(default_factory=dict, hash=False, compare=False)


# ----------------------------------------------------------------------------- math

def _math_example(rng: random.Random, p: dict) -> Example:
    name = rng.choice(W.NAMES)
    sing, plural = rng.choice(W.COUNTABLES[p["domain"]])
    lo, hi = (1, 9) if p["difficulty"] == "easy" else (10, 40)
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    op, t = p["op"], p["template"]
    if op == "add":
        ans = a + b
        q = [f"{name} has {a} {plural} and gets {b} more. How many {plural} does {name} have now?",
             f"There are {a} {plural} in a box. {name} puts in {b} more. How many {plural} are in the box?"][t]
    elif op == "sub":
        a, b = max(a, b) + 1, min(a, b)
        ans = a - b
        q = [f"{name} has {a} {plural} and gives away {b}. How many {plural} are left?",
             f"A shelf holds {a} {plural}. {name} takes {b} of them. How many {plural} stay on the shelf?"][t]
    elif op == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 9 if p["difficulty"] == "easy" else 12)
        ans = a * b
        q = [f"{name} buys {a} bags with {b} {plural} in each bag. How many {plural} does {name} buy?",
             f"Each of {a} friends brings {b} {plural}. How many {plural} do they bring in total?"][t]
    elif op == "twostep":
        c = rng.randint(1, min(a + b - 1, 9))
        ans = a + b - c
        q = [f"{name} has {a} {plural}, finds {b} more and loses {c}. How many {plural} does {name} have?",
             f"A basket has {a} {plural}. {name} adds {b} and eats {c}. How many {plural} remain?"][t]
    else:
        raise ValueError(op)
    return Example(prompt=f"Question: {q}\nAnswer:", answer=f" {ans}", meta={"value": ans})


def _math_story(rng: random.Random, p: dict) -> str:
    name = rng.choice(W.NAMES)
    _, plural = rng.choice(W.COUNTABLES[p["domain"]])
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    return f"{name} had {a} {plural}. Then {name} got {b} more {plural}. Now {name} had {a + b} {plural}."


MATH_VARIANTS = [
    ("add", "fruit", "easy", 0), ("add", "coins", "hard", 1), ("add", "books", "easy", 1),
    ("sub", "fruit", "easy", 1), ("sub", "marbles", "hard", 0), ("sub", "cookies", "easy", 0),
    ("mul", "books", "easy", 0), ("mul", "flowers", "hard", 1), ("mul", "coins", "easy", 1),
    ("twostep", "cookies", "easy", 1), ("twostep", "marbles", "easy", 0), ("twostep", "flowers", "hard", 0),
]

# ----------------------------------------------------------------------------- commonsense

_CS_TEMPLATES = {
    "tool_use": ["What do people use to {s}?", "Which thing helps you {s}?"],
    "animal_sound": ["What does a {s} do?", "Which sound does the {s} make?"],
    "animal_home": ["Where does a {s} live?", "What is the home of a {s}?"],
    "food_color": ["What colour is the {s}?", "Which colour is a {s}?"],
    "place_activity": ["What do people do at the {s}?", "Why do people go to the {s}?"],
    "weather_wear": ["What do people take in the {s}?", "What helps in the {s}?"],
}


def _cs_example(rng: random.Random, p: dict) -> Example:
    facts = W.FACTS[p["relation"]]
    subject, answer = rng.choice(facts)
    others = sorted({a for _, a in facts if a != answer})
    options = rng.sample(others, p["n_options"] - 1) + [answer]
    rng.shuffle(options)
    letter = LETTERS[options.index(answer)]
    q = _CS_TEMPLATES[p["relation"]][p["template"]].format(s=subject)
    opts = " ".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
    return Example(prompt=f"Question: {q}\nOptions: {opts}\nAnswer:", answer=f" {letter}",
                   meta={"option_text": answer})


def _cs_story(rng: random.Random, p: dict) -> str:
    rel = p["relation"]
    picks = rng.sample(W.FACTS[rel], 3)
    return " ".join(W.FACT_SENTENCES[rel].format(s=s, a=a).capitalize() for s, a in picks)


CS_VARIANTS = [(rel, n, t) for rel in W.FACTS for n, t in ((3, 0), (4, 1))]  # 12

# ----------------------------------------------------------------------------- reading

def _passage(rng: random.Random, domain: str) -> tuple[str, list[tuple[str, int]]]:
    """A short passage and its (actor, number) events."""
    if domain == "sports":
        a, b = rng.sample(W.TEAMS, 2)
        ev = [(a, rng.randint(1, 9)), (b, rng.randint(1, 9)), (a, rng.randint(1, 9))]
        text = (f"In the first half the {ev[0][0]} scored {ev[0][1]} points and the {ev[1][0]} scored "
                f"{ev[1][1]} points. In the second half the {ev[2][0]} added {ev[2][1]} points.")
    elif domain == "sales":
        a, b = rng.sample(W.SHOPS, 2)
        ev = [(a, rng.randint(1, 9)), (b, rng.randint(1, 9)), (a, rng.randint(1, 9))]
        text = (f"On Monday {ev[0][0]} sold {ev[0][1]} cakes and {ev[1][0]} sold {ev[1][1]} cakes. "
                f"On Tuesday {ev[2][0]} sold {ev[2][1]} more cakes.")
    elif domain == "history":
        a, b = rng.sample(W.ARMIES, 2)
        ev = [(a, rng.randint(1, 9)), (b, rng.randint(1, 9)), (a, rng.randint(1, 9))]
        text = (f"In the first battle {ev[0][0]} lost {ev[0][1]} ships and {ev[1][0]} lost {ev[1][1]} ships. "
                f"Later {ev[2][0]} lost {ev[2][1]} more ships.")
    elif domain == "weather":
        a, b = rng.sample(W.CITIES, 2)
        ev = [(a, rng.randint(1, 9)), (b, rng.randint(1, 9)), (a, rng.randint(1, 9))]
        text = (f"In May {ev[0][0]} had {ev[0][1]} rainy days and {ev[1][0]} had {ev[1][1]} rainy days. "
                f"In June {ev[2][0]} had {ev[2][1]} rainy days.")
    else:
        raise ValueError(domain)
    return text, ev


def _reading_example(rng: random.Random, p: dict) -> Example:
    text, ev = _passage(rng, p["domain"])
    a, b = ev[0][0], ev[1][0]
    total_a = ev[0][1] + ev[2][1]
    qt = p["qtype"]
    if qt == "sum":
        q, ans = f"How many in total for {a}?", str(total_a)
    elif qt == "diff":
        q, ans = f"How many more for {a} than {b}?", str(total_a - ev[1][1])
    elif qt == "more":
        while total_a == ev[1][1]:
            text, ev = _passage(rng, p["domain"])
            a, b = ev[0][0], ev[1][0]
            total_a = ev[0][1] + ev[2][1]
        q, ans = f"Who had more in all, {a} or {b}?", a if total_a > ev[1][1] else b
    elif qt == "first":
        q, ans = f"How many for {a} in the first part?", str(ev[0][1])
    else:
        raise ValueError(qt)
    return Example(prompt=f"Passage: {text}\nQuestion: {q}\nAnswer:", answer=f" {ans}")


READING_VARIANTS = [(d, q) for d in ("sports", "sales", "history", "weather")
                    for q in ("sum", "diff", "more")] + [("sports", "first"), ("weather", "first")]  # 14

# ----------------------------------------------------------------------------- dialogue

def _dialogue_example(rng: random.Random, p: dict) -> Example:
    x, y = rng.sample(W.NAMES, 2)
    d = p["domain"]
    if d == "meeting":
        place, time = rng.choice(W.PLACES), rng.choice(W.TIMES)
        turns = [f"{x}: Shall we meet at the {place}?", f"{y}: Sure, what time?", f"{x}: At {time}.", f"{y}: See you then."]
        summary = f"{x} and {y} will meet at the {place} at {time}."
    elif d == "shopping":
        item, item2 = rng.sample(W.ITEMS, 2)
        turns = [f"{x}: Are you at the shop?", f"{y}: Yes, need anything?", f"{x}: Please buy {item} and {item2}.", f"{y}: Ok."]
        summary = f"{y} will buy {item} and {item2} for {x}."
    elif d == "borrow":
        thing, day = rng.choice(W.THINGS), rng.choice(W.DAYS)
        turns = [f"{x}: Can I borrow your {thing}?", f"{y}: Yes, when do you need it?", f"{x}: On {day}.", f"{y}: Fine."]
        summary = f"{x} will borrow the {thing} from {y} on {day}."
    elif d == "homework":
        subj, day = rng.choice(W.SUBJECTS), rng.choice(W.DAYS)
        turns = [f"{x}: Did you do the {subj} homework?", f"{y}: Not yet.", f"{x}: It is due on {day}.", f"{y}: Thanks, I will do it."]
        summary = f"The {subj} homework is due on {day} and {y} has not done it yet."
    elif d == "cooking":
        dish, time = rng.choice(W.DISHES), rng.choice(W.TIMES)
        turns = [f"{x}: What is for dinner?", f"{y}: I am making {dish}.", f"{x}: When is it ready?", f"{y}: At {time}."]
        summary = f"{y} is making {dish} for dinner, ready at {time}."
    elif d == "travel":
        city, day = rng.choice(W.CITIES), rng.choice(W.DAYS)
        turns = [f"{x}: When do you go to {city}?", f"{y}: On {day}.", f"{x}: By train?", f"{y}: Yes, by train."]
        summary = f"{y} will go to {city} by train on {day}."
    else:
        raise ValueError(d)
    if p["style"] == 1:  # a longer, chattier variant with small talk around the content
        turns = [f"{x}: Hi {y}!", f"{y}: Hello {x}, how are you?"] + turns + [f"{x}: Bye!"]
    dialogue = "\n".join(turns)
    return Example(prompt=f"Dialogue:\n{dialogue}\nSummary:", answer=f" {summary}")


def _dialogue_story(rng: random.Random, p: dict) -> str:
    ex = _dialogue_example(rng, p)
    return ex.prompt.removeprefix("Dialogue:\n").removesuffix("\nSummary:")


DIALOGUE_VARIANTS = [(d, s) for d in ("meeting", "shopping", "borrow", "homework", "cooking", "travel")
                     for s in (0, 1)]  # 12

# ----------------------------------------------------------------------------- language modelling

def _lm_text(rng: random.Random, p: dict) -> str:
    d, style = p["domain"], p["style"]
    x = rng.choice(W.NAMES)
    if d == "weather":
        c, t = rng.choice(W.CITIES), rng.randint(5, 30)
        s = [f"Weather for {c}: {rng.choice(['sunny', 'rainy', 'cloudy', 'windy'])} with {t} degrees.",
             f"Tomorrow in {c} it will be {t} degrees and {rng.choice(['dry', 'wet', 'grey', 'bright'])}."]
    elif d == "sports":
        a, b = rng.sample(W.TEAMS, 2)
        s = [f"The {a} beat the {b} {rng.randint(2, 9)} to {rng.randint(0, 1)}.",
             f"Match report: {a} {rng.randint(0, 5)}, {b} {rng.randint(0, 5)}. A close game."]
    elif d == "recipe":
        dish, item = rng.choice(W.DISHES), rng.choice(W.ITEMS)
        s = [f"To make {dish}, mix {item} with water and cook for {rng.randint(5, 40)} minutes.",
             f"Recipe: {dish}. You need {item}. Cook it slowly and serve it hot."]
    elif d == "diary":
        place, day = rng.choice(W.PLACES), rng.choice(W.DAYS)
        s = [f"Dear diary, on {day} I went to the {place} with {x}.",
             f"{day}: {x} and I spent the day at the {place}. It was fun."]
    elif d == "review":
        thing = rng.choice(W.THINGS)
        s = [f"I bought a {thing}. It works well. {rng.randint(3, 5)} stars.",
             f"Review of the {thing}: {rng.choice(['good', 'bad', 'fine', 'great'])} value, would buy again."]
    elif d == "facts":
        rel = rng.choice(sorted(W.FACTS))
        subj, ans = rng.choice(W.FACTS[rel])
        s = [W.FACT_SENTENCES[rel].format(s=subj, a=ans).capitalize(),
             f"Everyone knows: {W.FACT_SENTENCES[rel].format(s=subj, a=ans).lower()}"]
    else:
        raise ValueError(d)
    return s[style]


LM_VARIANTS = [(d, s) for d in ("weather", "sports", "recipe", "diary", "review", "facts") for s in (0, 1)]  # 12


def _lm_example(rng: random.Random, p: dict) -> Example:
    return Example(prompt="", answer=" ".join(_lm_text(rng, p) for _ in range(3)))


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Family:
    name: str
    metric: str
    mirrors: str
    example: Callable[[random.Random, dict], Example]
    story: Callable[[random.Random, dict], str]  # pretraining text in the family's domain
    extract: Callable[[str], str]
    max_new_tokens: int


FAMILIES = {
    "math": Family("math", "numeric_exact_match", "GSM8K, AQuA-RAT", _math_example, _math_story, extract_number, 6),
    "commonsense": Family("commonsense", "letter_exact_match", "CommonsenseQA", _cs_example, _cs_story, extract_letter, 3),
    "reading": Family("reading", "exact_match", "DROP", _reading_example, lambda r, p: _passage(r, p["domain"])[0],
                      first_line, 6),
    "dialogue": Family("dialogue", "rouge_l", "SAMSum, DialogSum", _dialogue_example, _dialogue_story, first_line, 24),
    "lm": Family("lm", "perplexity", "language modelling", _lm_example, _lm_text, first_line, 0),
}


def _variants() -> dict[str, Variant]:
    v: list[Variant] = []
    for op, dom, diff, t in MATH_VARIANTS:
        v.append(Variant(f"math/{op}-{dom}-{diff}", "math", {"op": op, "domain": dom, "difficulty": diff, "template": t}))
    for rel, n, t in CS_VARIANTS:
        v.append(Variant(f"commonsense/{rel}-{n}opt", "commonsense", {"relation": rel, "n_options": n, "template": t}))
    for dom, qt in READING_VARIANTS:
        v.append(Variant(f"reading/{dom}-{qt}", "reading", {"domain": dom, "qtype": qt}))
    for dom, s in DIALOGUE_VARIANTS:
        v.append(Variant(f"dialogue/{dom}-{'chatty' if s else 'short'}", "dialogue", {"domain": dom, "style": s}))
    for dom, s in LM_VARIANTS:
        v.append(Variant(f"lm/{dom}-{s}", "lm", {"domain": dom, "style": s}))
    return {x.name: x for x in v}


VARIANTS: dict[str, Variant] = _variants()


def task_names(family: str | None = None) -> list[str]:
    """All generated task names, optionally of one family."""
    return [n for n, v in VARIANTS.items() if family is None or v.family == family]


def _rng(name: str, split: str, seed: int) -> random.Random:
    return random.Random(f"{name}|{split}|{seed}")


def make_task(name: str, seed: int = 0, n_train: int = 512, n_test: int = 128) -> Task:
    """The generated task ``name`` (see :func:`task_names`), deterministic from ``seed``.

    Train and test examples come from independent streams; test prompts that also occur in
    train are replaced so the test split measures generalisation, not recall.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown task '{name}'; `gtapp tasks list` shows the {len(VARIANTS)} tasks")
    v = VARIANTS[name]
    fam = FAMILIES[v.family]
    r = _rng(name, "train", seed)
    train = [fam.example(r, v.params) for _ in range(n_train)]
    seen = {e.prompt for e in train} if fam.metric != "perplexity" else set()
    r = _rng(name, "test", seed)
    test: list[Example] = []
    tries = 0
    while len(test) < n_test and tries < n_test * 20:
        e = fam.example(r, v.params)
        tries += 1
        if e.prompt in seen and tries < n_test * 10:
            continue
        test.append(e)
    return Task(name=name, family=v.family, metric=fam.metric, train=train, test=test, extract=fam.extract,
                max_new_tokens=fam.max_new_tokens, description=f"{v.family} variant mirroring {fam.mirrors}",
                source={"generator": "gtapp.tasks.universe", "variant": v.params, "seed": seed,
                        "n_train": n_train, "n_test": n_test})


def pretraining_corpus(n_docs: int, seed: int) -> list[str]:
    """Text for pretraining the zoo: each family's domain text (stories, passages, dialogues,
    facts) plus, for a quarter of documents, formatted question/answer pairs, so the models
    know the world and have seen the formats but are not yet good at the tasks."""
    rng = random.Random(f"corpus|{seed}")
    names = sorted(VARIANTS)
    docs = []
    # Every fact once, so the world's "common sense" is in the corpus.
    for rel, facts in W.FACTS.items():
        for s, a in facts:
            docs.append(W.FACT_SENTENCES[rel].format(s=s, a=a).capitalize())
    while len(docs) < n_docs:
        v = VARIANTS[rng.choice(names)]
        fam = FAMILIES[v.family]
        if rng.random() < 0.25 and v.family != "lm":
            e = fam.example(rng, v.params)
            docs.append(e.prompt + e.answer)
        else:
            docs.append(" ".join(fam.story(rng, v.params) for _ in range(rng.randint(1, 3))))
    return docs[:n_docs]
