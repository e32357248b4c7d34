"""SQuAD v1.1 / v2.0: loading, an offline fixture generator, and QA samples for the FT layout.

Sources: a local SQuAD JSON file (``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``), or a Hugging Face dataset such as
``rajpurkar/squad`` / ``rajpurkar/squad_v2`` (fields id, title, context, question, answers{text, answer_start}).
Both become flat records ``{id, title, context, question, answers: [str], is_impossible}``.

    python -m icae.scripts.squad_fixture --out outputs/squad_fixture [--version 2.0]    # offline fixture files

Layout of a sample (:class:`icae.data.collators.FinetuneCollator`): the context is compressed; the decoder reads ``[slots][FT] prompt`` and learns ``answer EOS``
(an unanswerable v2.0 question learns EOS alone: the empty answer).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from icae.data.sources import SourceError, hub_dataset
from icae.data.tasks import AnswerSample, Split, limit
from icae.errors import entry
from icae.models.framing import Layout, token_ids
from icae.utils.io import atomic_write_json


def read_squad_json(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: not a readable SQuAD JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SourceError(f"{path}: expected SQuAD format {{'version', 'data': [articles]}}")
    records, problems = [], []
    for i, article in enumerate(data["data"]):
        where = f"data[{i}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs", []), list):
            problems.append(f"{where}: expected an article {{'title', 'paragraphs': [...]}}, got "
                            f"{type(article).__name__}")
            continue
        for j, paragraph in enumerate(article.get("paragraphs", [])):
            here = f"{where}.paragraphs[{j}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("qas", []), list):
                problems.append(f"{here}: expected {{'context': text, 'qas': [...]}}")
                continue
            for k, qa in enumerate(paragraph.get("qas", [])):
                record, problem = _squad_record(qa, article, paragraph["context"], f"{here}.qas[{k}]")
                if problem:
                    problems.append(problem)
                else:
                    records.append(record)
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SourceError(f"{path}: {len(problems)} record(s) not in SQuAD format (each question needs an 'id', a "
                          "'question' text and 'answers': [{'text': ..., 'answer_start': ...}]); fix or remove them:"
                          "\n  - " + "\n  - ".join(problems[:20]) + more)
    return records


def _squad_record(qa, article: dict, context: str, where: str) -> tuple[dict | None, str | None]:
    """One flat record from a SQuAD question, or the problem that keeps it from being one."""
    if not isinstance(qa, dict):
        return None, f"{where}: expected a question object, got {type(qa).__name__}"
    missing = [k for k in ("id", "question") if k not in qa]
    if missing:
        return None, f"{where}: missing {missing}"
    if not isinstance(qa["id"], (str, int)) or isinstance(qa["id"], bool) or not isinstance(qa["question"], str):
        return None, f"{where} (id {str(qa['id'])[:40]!r}): 'id' must be a string and 'question' a text"
    answers = qa.get("answers", [])
    if not isinstance(answers, list) or not all(isinstance(a, dict) and isinstance(a.get("text"), str)
                                                for a in answers):
        return None, (f"{where} (id {qa['id']!r}): 'answers' must be a list of {{'text': ..., 'answer_start': ...}} "
                      f"objects, got {str(answers)[:60]}")
    texts = [a["text"] for a in answers]
    title = article.get("title", "")
    return {"id": str(qa["id"]), "title": title if isinstance(title, str) else str(title), "context": context,
            "question": qa["question"], "answers": texts,
            "is_impossible": bool(qa.get("is_impossible", not texts))}, None


def load_squad(source: str, split: str = "train") -> list[dict]:
    """Flat SQuAD records from a local JSON file or a hub dataset split."""
    if not source:
        raise SourceError("no SQuAD source given: set dataset_repo (a local SQuAD JSON file or a hub name)")
    if Path(source).exists():
        records = read_squad_json(source)
    elif source.endswith(".json"):
        raise SourceError(f"no such file: {source}")
    else:
        ds = hub_dataset(source, split)
        records = [{"id": str(r["id"]), "title": r.get("title", ""), "context": r["context"],
                    "question": r["question"], "answers": list(r["answers"]["text"]),
                    "is_impossible": not r["answers"]["text"]} for r in ds]
    if not records:
        raise SourceError(f"{source}: no question found")
    return records


# ---------------------------------------------------------------------------------------------- offline fixture
_PLACES = ["Alder", "Brennick", "Corvale", "Dunmarsh", "Eastwick", "Farrow", "Glenhollow", "Harlow", "Ilsby",
           "Juniper Cove", "Kestrel", "Larkmoor", "Mirefield", "Northam", "Oakhaven", "Pellridge", "Quarry End",
           "Ravensford", "Saltmere", "Thornbury", "Umberdale", "Vellmoor", "Westerly", "Yarrowby"]
_KINDS = ["town", "village", "port", "market town", "hill town", "river town"]
_REGIONS = ["the northern valleys", "the coast of Merrow", "the Ashen Hills", "the lowlands of Tarn", "the eastern fens",
            "the Silver Downs"]
_PEOPLE = ["Ona Velt", "Marek Dunne", "Sera Quill", "Tomas Reyl", "Ada Finch", "Ivo Marsh", "Lena Crane", "Osric Pell"]
_GOODS = ["wool", "salt", "copper", "timber", "cider", "glass", "linen", "slate"]


def _article(rng: random.Random, name: str, index: int, version: str) -> dict:
    kind, region, person = rng.choice(_KINDS), rng.choice(_REGIONS), rng.choice(_PEOPLE)
    year, good, pop = str(rng.randint(1200, 1899)), rng.choice(_GOODS), str(rng.randint(2, 90) * 100)
    context = (f"{name} is a {kind} in {region}. It was founded in {year} by {person}. "
               f"Its main export is {good}, and about {pop} people live there.")
    facts = [(f"When was {name} founded?", year), (f"Who founded {name}?", person),
             (f"What is the main export of {name}?", good), (f"How many people live in {name}?", f"about {pop}")]
    qas = []
    for j, (question, answer) in enumerate(facts):
        qas.append({"id": f"{index:04d}{j}", "question": question,
                    "answers": [{"text": answer, "answer_start": context.index(answer)}]})
        if version == "2.0":
            qas[-1]["is_impossible"] = False
    if version == "2.0":
        qas.append({"id": f"{index:04d}9", "question": f"What is the name of the river in {name}?", "answers": [],
                    "is_impossible": True})
    return {"title": name, "paragraphs": [{"context": context, "qas": qas}]}


def write_fixture(out_dir: str | Path, n_train: int = 16, n_eval: int = 6, seed: int = 0,
                  version: str = "1.1") -> tuple[Path, Path]:
    """Write ``train.json`` and ``dev.json`` in the exact SQuAD format, from facts generated here (no copied text)."""
    if version not in ("1.1", "2.0"):
        raise ValueError(f"SQuAD version must be 1.1 or 2.0, got {version!r}")
    rng = random.Random(seed)
    names = rng.sample(_PLACES, min(len(_PLACES), n_train + n_eval))
    if len(names) < n_train + n_eval:
        names += [f"{rng.choice(_PLACES)} {i}" for i in range(n_train + n_eval - len(names))]
    out = Path(out_dir)
    paths = []
    for split, chunk in (("train", names[:n_train]), ("dev", names[n_train:])):
        data = [_article(rng, name, i, version) for i, name in enumerate(chunk)]
        path = out / f"{split}.json"
        atomic_write_json(path, {"version": version, "data": data})
        paths.append(path)
    return paths[0], paths[1]


# ---------------------------------------------------------------------------------------------- samples
@dataclass
class QASample(AnswerSample):
    """A question: its context (compressed), the prompt (the question) and the target (the first answer + EOS)."""

    id: str = ""
    question: str = ""
    answers: list[str] | None = None  # every gold answer; empty for an unanswerable v2.0 question
    context: str = ""


def qa_sample(tokenizer, record: dict, template: str, end: list[int] | None = None) -> QASample:
    """Token ids of one QA sample: context (compressed), prompt (question), target (answer + EOS).

    ``end`` (the layout's ``answer_end``; original layout) instead: the answer as the original tokenises it (no leading
    space), then ``end`` (EOS for ICAE, the chat template's end of turn for SimpleLLM, as the original)."""
    answer = record["answers"][0] if record["answers"] and not record["is_impossible"] else ""
    encode = functools.partial(token_ids, tokenizer)
    target = (encode(" " + answer) if answer else []) + [tokenizer.eos_token_id] if end is None else \
        (encode(answer) if answer else []) + list(end)
    return QASample(
        input_ids=encode(record["context"]),
        prompt_ids=encode(template.format(question=record["question"])),
        target_ids=target,
        id=record["id"], question=record["question"],
        answers=[] if record["is_impossible"] else list(record["answers"]), context=record["context"],
    )


def load_squad_task(config, layout: Layout, train: bool = True, test: bool = True) -> Split[QASample]:
    """Training questions (``dataset_repo``, ``dataset_split``, at most ``max_train_samples``) and test questions
    (``eval_dataset_repo`` or ``dataset_repo``, ``eval_split``, at most ``num_samples`` or ``max_eval_samples``);
    ``train``/``test`` False skips reading that part. ``layout`` (the model's, :mod:`icae.models.framing`) gives the
    tokenizer, the prompt template and how answers end."""
    data, tokenizer = config.data, layout.tokenizer
    template, end = layout.qa_template(config.squad.qa_prompt_template), layout.answer_end
    out = Split([], [], {"source": data.dataset_repo, "eval_source": data.eval_dataset_repo or data.dataset_repo})
    if train:
        records = limit(load_squad(data.dataset_repo, data.dataset_split), data.max_train_samples)
        out.train = [qa_sample(tokenizer, r, template, end) for r in records]
    if test:
        records = load_squad(data.eval_dataset_repo or data.dataset_repo, data.eval_split)
        records = limit(records, config.inference.num_samples or data.max_eval_samples)
        out.test = [qa_sample(tokenizer, r, template, end) for r in records]
    return out


def main(argv: list[str] | None = None) -> None:
    """The recipe (also ``python -m icae.scripts.squad_fixture``): it lives here so that the earlier command
    ``python -m icae.data.squad`` runs this module without the library importing a recipe."""
    parser = argparse.ArgumentParser(description="Write small SQuAD-format fixture files (train.json, dev.json).")
    parser.add_argument("--out", required=True)
    parser.add_argument("--version", default="1.1", choices=["1.1", "2.0"])
    parser.add_argument("--n_train", type=int, default=16)
    parser.add_argument("--n_eval", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    for path in write_fixture(a.out, a.n_train, a.n_eval, a.seed, a.version):
        print(path)


if __name__ == "__main__":  # the earlier entry point
    entry(main)
