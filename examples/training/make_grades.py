"""Writes grades_ca.jsonl: a small fine-tuning set for the grading task (issue 16's tests and README guide).

Each line is a prompt/completion pair: a student's short answer in Catalan, and the grade a teacher gave it
as the JSON the grading task returns, `{"nota": 0-5, "feedback": "..."}`. The answers are built from
templates, so the set is small, deterministic and learnable in a few dozen steps on CPU: enough to see the
loss fall and the held-out perplexity drop. It is a pipeline fixture, not a real grading corpus.

    python examples/training/make_grades.py        # rewrites examples/training/grades_ca.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

QUESTIONS = [
    ("Per què les plantes necessiten llum?", "fotosíntesi", "la llum dona energia per fer la fotosíntesi"),
    ("Què és un ecosistema?", "éssers vius", "el conjunt d'éssers vius i el medi on viuen"),
    ("Per què bull l'aigua a 100 graus?", "pressió", "a nivell del mar la pressió fa que bulli a 100 graus"),
    ("Què va ser la Renaixença?", "cultura catalana", "un moviment de recuperació de la cultura catalana"),
    ("Com es forma la pluja?", "condensació", "el vapor d'aigua es condensa en gotes als núvols"),
    ("Què fa el cor?", "sang", "bombeja la sang per tot el cos"),
    ("Per què hi ha estacions de l'any?", "inclinació", "per la inclinació de l'eix de la Terra"),
    ("Què és un nombre primer?", "divisors", "un nombre que només té dos divisors, l'u i ell mateix"),
]
FEEDBACK = {
    0: "La resposta no respon la pregunta. Repassa el tema.",
    1: "Hi ha una idea, però és incorrecta. Falta {key}.",
    2: "La resposta és incompleta: cal parlar de {key}.",
    3: "Correcte en part. Explica millor {key}.",
    4: "Bona resposta. Només falta precisar {key}.",
    5: "Excel·lent: respon bé i esmenta {key}.",
}
OPENERS = ["Crec que", "Jo diria que", "Segons el llibre,", "Penso que", "", "A classe vam veure que"]
WRONG = ["no ho sé", "perquè sí", "és una cosa de la natura", "passa sempre així", "ho diu el mestre"]


def answer(rng: random.Random, nota: int, full: str, key: str) -> str:
    opener = rng.choice(OPENERS)
    if nota == 0:
        body = rng.choice(WRONG)
    elif nota <= 2:
        body = f"{rng.choice(WRONG)}, potser per {key.split()[0]}"
    elif nota <= 4:
        body = full.split(",")[0] if "," in full else " ".join(full.split()[: max(3, len(full.split()) - 3)])
    else:
        body = full
    return f"{opener} {body}.".strip().capitalize()


def main() -> None:
    rng = random.Random(16)
    lines = []
    for n in range(240):
        question, key, full = QUESTIONS[n % len(QUESTIONS)]
        nota = rng.randint(0, 5)
        text = answer(rng, nota, full, key)
        lines.append({
            "system": "Ets un corrector de respostes d'alumnes. Respon només amb JSON.",
            "prompt": f"Pregunta: {question}\nResposta de l'alumne: {text} (alumne {n + 1})",
            "completion": json.dumps({"nota": nota, "feedback": FEEDBACK[nota].format(key=key)}, ensure_ascii=False),
        })
    out = Path(__file__).with_name("grades_ca.jsonl")
    out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    print(f"wrote {len(lines)} lines to {out}")


if __name__ == "__main__":
    main()
