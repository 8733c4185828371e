"""Question files: their format, their validation, and how their questions form conversations.

A question file is JSON:

    {"name": "bikeshop", "description": "...", "knowledge": "knowledge",
     "questions": [{"id": "saturday-open", "question": "What time do you open on Saturday?",
                    "category": "hours", "split": "dev", "expect_any": ["9 am", "nine"],
                    "evidence": ["saturday", "9 am"]}, ...]}

`knowledge` is the knowledge folder, relative to the file. Optional per question: `follows` (the id
of the question asked just before it, in the same conversation), `reject_any` (phrases a right
answer must not contain) and `expect_min` (how many distinct `expect_any` strings a right answer
states; 1 by default). The README's "Your own knowledge" section describes it for users.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CATEGORIES = ("figures", "yes_no", "lists", "hours", "out_of_knowledge", "follow_up")
OUT_OF_KNOWLEDGE = "out_of_knowledge"
SPLITS = ("dev", "heldout")
QUESTIONS_FILE = "questions.json"  # what a built-in base's folder holds beside its knowledge folder
DATA_DIR = Path(__file__).resolve().parent / "data"
FORMAT_POINTER = 'the format is in the README, section "Your own knowledge"'
# A base's name becomes a folder of the output directory: keep it a plain file name.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_REQUIRED = ("id", "question", "category", "split", "expect_any", "evidence")
_OPTIONAL = ("follows", "reject_any", "expect_min")
_TOP_LEVEL = ("name", "description", "knowledge", "questions")


class QuestionFileError(ValueError):
    """A question file that cannot be used; `problems` lists each thing wrong, one line each."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) ({FORMAT_POINTER}):\n{lines}")


@dataclass(frozen=True)
class Question:
    """One question of a base and what a right answer to it looks like."""

    id: str
    question: str
    category: str
    split: str
    expect_any: tuple[str, ...]
    evidence: tuple[str, ...]
    follows: str | None = None
    reject_any: tuple[str, ...] = ()
    expect_min: int = 1

    @classmethod
    def from_dict(cls, raw: dict) -> Question:
        """A question from its (already validated) JSON object."""
        return cls(
            id=raw["id"],
            question=raw["question"],
            category=raw["category"],
            split=raw["split"],
            expect_any=tuple(raw.get("expect_any", ())),
            evidence=tuple(raw.get("evidence", ())),
            follows=raw.get("follows"),
            reject_any=tuple(raw.get("reject_any", ())),
            expect_min=int(raw.get("expect_min", 1)),
        )

    def to_dict(self) -> dict:
        """The question as its file would hold it (optional fields only when set)."""
        out = {
            "id": self.id,
            "question": self.question,
            "category": self.category,
            "split": self.split,
            "expect_any": list(self.expect_any),
            "evidence": list(self.evidence),
        }
        if self.follows:
            out["follows"] = self.follows
        if self.reject_any:
            out["reject_any"] = list(self.reject_any)
        if self.expect_min != 1:
            out["expect_min"] = self.expect_min
        return out


@dataclass
class Base:
    """A knowledge folder and the questions asked about it."""

    name: str
    description: str
    questions_file: Path
    knowledge_dir: Path
    questions: list[Question] = field(default_factory=list)

    def question(self, qid: str) -> Question:
        return next(q for q in self.questions if q.id == qid)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def _question_problems(raw: object, where: str) -> list[str]:
    """What is wrong with one question object on its own (not counting its links to the others)."""
    if not isinstance(raw, dict):
        return [f"{where}: must be an object, got {type(raw).__name__}"]
    problems = [f"{where}: missing {key!r}" for key in _REQUIRED if key not in raw]
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        # A misspelt optional field ("reject" for "reject_any") would otherwise be silently ignored.
        problems.append(f"{where}: unknown field(s) {unknown}; allowed: {list(_REQUIRED + _OPTIONAL)}")
    for key in ("id", "question"):
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip()):
            problems.append(f"{where}: {key!r} must be a non-empty string")
    if "category" in raw and raw["category"] not in CATEGORIES:
        problems.append(f"{where}: category {raw['category']!r} is not one of {list(CATEGORIES)}")
    if "split" in raw and raw["split"] not in SPLITS:
        problems.append(f"{where}: split {raw['split']!r} is not one of {list(SPLITS)}")
    for key in ("expect_any", "evidence", "reject_any"):
        if key in raw and not _is_str_list(raw[key]):
            problems.append(f"{where}: {key!r} must be a list of non-empty strings")
    answerable = raw.get("category") != OUT_OF_KNOWLEDGE
    if answerable and _is_str_list(raw.get("expect_any")) and not raw["expect_any"]:
        problems.append(f"{where}: 'expect_any' is empty: nothing would make an answer right")
    if answerable and _is_str_list(raw.get("evidence")) and not raw["evidence"]:
        problems.append(f"{where}: 'evidence' is empty: retrieval could not be checked")
    if "follows" in raw and not (isinstance(raw["follows"], str) and raw["follows"].strip()):
        problems.append(f"{where}: 'follows' must be the id of another question")
    if "expect_min" in raw:
        need = raw["expect_min"]
        if not isinstance(need, int) or isinstance(need, bool) or need < 1:
            problems.append(f"{where}: 'expect_min' must be a whole number of at least 1")
        elif _is_str_list(raw.get("expect_any")) and need > len(set(raw["expect_any"])):
            problems.append(
                f"{where}: 'expect_min' is {need} but 'expect_any' has only {len(set(raw['expect_any']))} strings"
            )
    return problems


def _link_problems(questions: list[object]) -> list[str]:
    """Duplicate ids, `follows` pointing nowhere, two questions after one, loops (among the questions
    with an id: the others have been reported already)."""
    questions = [raw for raw in questions if isinstance(raw, dict) and isinstance(raw.get("id"), str)]
    problems = []
    seen: set[str] = set()
    for raw in questions:
        if raw["id"] in seen:
            problems.append(f'question "{raw["id"]}": the id is used more than once')
        seen.add(raw["id"])
    follower_of: dict[str, str] = {}
    for raw in questions:
        parent = raw.get("follows")
        if not isinstance(parent, str):
            continue
        where = f'question "{raw["id"]}"'
        if parent == raw["id"]:
            problems.append(f"{where}: follows itself")
        elif parent not in seen:
            problems.append(f"{where}: follows {parent!r}, which is not a question of this file")
        elif parent in follower_of:
            # A conversation asks one question after another: two cannot both come right after it.
            problems.append(f'{where}: follows {parent!r}, as "{follower_of[parent]}" already does')
        else:
            follower_of[parent] = raw["id"]
    parent_of = {raw["id"]: raw.get("follows") for raw in questions if isinstance(raw.get("follows"), str)}
    for raw in questions:
        chain, current = [raw["id"]], parent_of.get(raw["id"])
        while current is not None and current in parent_of and current not in chain:
            chain.append(current)
            current = parent_of[current]
        if current == raw["id"] and len(chain) > 1:
            problems.append(f'question "{raw["id"]}": "follows" goes round in a loop: {" → ".join(chain)}')
    return problems


def validate(data: object) -> list[str]:
    """Every problem of a parsed question file, each naming the question (by id) and what is wrong."""
    if not isinstance(data, dict):
        return [f"the file must hold a JSON object with {list(_TOP_LEVEL)}, got {type(data).__name__}"]
    problems = [f"missing {key!r}" for key in _TOP_LEVEL if key not in data]
    if "name" in data and not (isinstance(data["name"], str) and _NAME.match(data["name"])):
        problems.append("'name' must be a plain name (letters, digits, '-', '_', '.'): it names a folder")
    if "description" in data and not isinstance(data["description"], str):
        problems.append("'description' must be a string")
    if "knowledge" in data and not (isinstance(data["knowledge"], str) and data["knowledge"].strip()):
        problems.append("'knowledge' must be the knowledge folder's path, relative to the file")
    questions = data.get("questions")
    if "questions" in data and not (isinstance(questions, list) and questions):
        problems.append("'questions' must be a non-empty list")
        return problems
    if not isinstance(questions, list):
        return problems
    for i, raw in enumerate(questions):
        qid = raw.get("id") if isinstance(raw, dict) else None
        where = f'question "{qid}"' if isinstance(qid, str) and qid.strip() else f"questions[{i}]"
        problems += _question_problems(raw, where)
    problems += _link_problems(questions)
    return problems


def load_base(path: Path | str, knowledge_dir: Path | str | None = None) -> Base:
    """Load and validate a base: `path` is a question file, or a folder holding questions.json.
    `knowledge_dir` replaces the file's own `knowledge` folder (`parley eval --kb`)."""
    path = Path(path)
    if path.is_dir():
        path = path / QUESTIONS_FILE
    if not path.is_file():
        raise QuestionFileError(path, ["no such file"])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise QuestionFileError(path, [problem]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionFileError(path, [f"cannot be read: {exc}"]) from None
    problems = validate(data)
    if problems:
        raise QuestionFileError(path, problems)
    folder = Path(knowledge_dir) if knowledge_dir is not None else path.parent / data["knowledge"]
    if not folder.is_dir():
        origin = "--kb" if knowledge_dir is not None else "its 'knowledge' field"
        raise QuestionFileError(path, [f"the knowledge folder {folder} ({origin}) is not a folder"])
    return Base(
        name=data["name"],
        description=data["description"],
        questions_file=path.resolve(),
        knowledge_dir=folder.resolve(),
        questions=[Question.from_dict(raw) for raw in data["questions"]],
    )


def builtin_bases(data_dir: Path = DATA_DIR) -> list[Base]:
    """Every built-in base: each folder of evals/data/ that holds a questions.json, by name."""
    if not data_dir.is_dir():
        return []
    return [load_base(folder) for folder in sorted(data_dir.iterdir()) if (folder / QUESTIONS_FILE).is_file()]


def select(
    questions: list[Question], split: str = "all", only: Iterable[str] | None = None
) -> list[Question]:
    """The questions to score: those of `split` ("dev", "heldout" or "all"), and of `only` if given."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split {split!r} is not one of {[*SPLITS, 'all']}")
    wanted = set(only) if only is not None else None
    return [
        q for q in questions if (split == "all" or q.split == split) and (wanted is None or q.id in wanted)
    ]


def conversations(questions: list[Question], wanted: Iterable[str] | None = None) -> list[list[Question]]:
    """The questions as conversations, in file order: a question with `follows` comes right after the
    one it follows, in its conversation (chains go on: a, then b following a, then c following b);
    any other question starts a conversation of its own.

    With `wanted` (ids), only conversations holding a wanted question are kept, cut after the last
    wanted one: questions before it are still asked, because a follow-up means nothing without them.
    """
    follower = {q.follows: q for q in questions if q.follows}
    chains = []
    for first in (q for q in questions if not q.follows):
        chain = [first]
        while chain[-1].id in follower:
            chain.append(follower[chain[-1].id])
        chains.append(chain)
    if wanted is None:
        return chains
    wanted = set(wanted)
    kept = []
    for chain in chains:
        last = max((i for i, q in enumerate(chain) if q.id in wanted), default=None)
        if last is not None:
            kept.append(chain[: last + 1])
    return kept


def previous_question(base: Base, question: Question) -> str:
    """The text of the question asked just before `question` in its conversation ("" if none)."""
    return base.question(question.follows).question if question.follows else ""
