"""Random-generation tasks: options with surface forms, chat instructions and raw contexts.

A task is a versioned YAML file (see ``docs/tasks.md`` for the schema). Built-in tasks ship in
``builtin/``; users add their own with ``--tasks-dir``. Validation is strict: an unknown key, a
wrong type, an empty list, a duplicate option or a surface form shared by two options is a
:class:`~crystallab.errors.TaskError` naming the file and the field.

Contexts and instructions come in *families* (SCIENCE.md, "Objects"): a family holds one content
in several wordings, so that spread inside a family is wording alone. Built-in tasks must have at
least 3 contexts per raw family, at least 5 chat families and at least 3 paraphrases per chat
family; a user task that does not is loaded with one warning (:class:`TaskWarning`).

>>> t = load_task("coin_flip")
>>> t.labels
('heads', 'tails')
>>> len(t.chat_families) >= 5 and t.instructions[0].family in t.chat_families
True
>>> t.instruction_texts[0] == t.instructions[0].text
True
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from crystallab.errors import TaskError, UserError
from crystallab.yamlconf import kind_of

BUILTIN_DIR = Path(str(resources.files("crystallab.suite").joinpath("builtin")))

LEADING_SPACE = ("both", "never", "always")
# Preambles chat models put before an answer; the parser strips them (case-insensitively).
DEFAULT_PREAMBLES = (
    "sure!",
    "sure,",
    "sure.",
    "sure",
    "okay,",
    "okay.",
    "ok,",
    "alright,",
    "here is a random pick:",
    "here's a random pick:",
    "here is my pick:",
    "here's my pick:",
    "my answer is",
    "my answer:",
    "answer:",
    "the answer is",
    "i pick",
    "i'll pick",
    "i will pick",
    "i choose",
    "i'll choose",
    "i will choose",
    "i'll go with",
    "i will go with",
    "let's go with",
    "i get",
    "i got",
    "it's",
    "it is",
    "my pick is",
    "my pick:",
    "i say",
    "i'd say",
    "i would say",
    "how about",
    "random pick:",
    "result:",
    "**",
)
_TOP_KEYS = (
    "id",
    "version",
    "kind",
    "description",
    "leading_space",
    "options",
    "parser",
    "stop",
    "instructions",
    "contexts",
    "metadata",
)
# closed: a fixed option set, scored exactly; open: free text, sampled and clustered into
# semantic options (crystallab.open)
KINDS = ("closed", "open")
_CLOSED_ONLY = ("options", "parser", "leading_space")
_STOP_KEYS = ("at", "max_tokens")
# where an open task's completion ends (besides EOS and max_tokens): the first newline, sentence
# end, phrase end (, ; : . ! ?) or word
STOP_AT = ("line", "sentence", "phrase", "word")
_OPTION_KEYS = ("label", "forms")
_PARSER_KEYS = ("case_sensitive", "preambles")
_CONTEXT_KEYS = ("family", "text")
_INSTRUCTION_KEYS = ("family", "text")
_PROMPT_KEYS = ("family", "text", "split")  # allowed; split is optional
# a lab task marks the prompts training never sees (SCIENCE.md, "Controlled experiments")
SPLITS = ("train", "heldout")
# the family of an instruction written as a plain string (tasks written before families)
DEFAULT_INSTRUCTION_FAMILY = "instruction"
# family sizes (SCIENCE.md, "Objects"): enforced for built-in tasks, a warning for user tasks
MIN_CONTEXTS_PER_FAMILY = 3
MIN_CHAT_FAMILIES = 5
MIN_PARAPHRASES_PER_FAMILY = 3


class TaskWarning(UserWarning):
    """A user task that loads but does not meet the family sizes the statistics assume."""


@dataclass(frozen=True)
class Option:
    label: str
    forms: tuple[str, ...]  # the label first, then the other surface forms


@dataclass(frozen=True)
class Context:
    family: str
    text: str
    split: str | None = None  # train | heldout (a lab task's mark), None: not split


@dataclass(frozen=True)
class Instruction:
    family: str  # the framing: plain, game, code, person, story, ...
    text: str  # the user turn of one chat prompt
    split: str | None = None  # train | heldout (a lab task's mark), None: not split


@dataclass(frozen=True)
class Task:
    id: str
    version: int
    description: str
    options: tuple[Option, ...]
    instructions: tuple[Instruction, ...]
    contexts: tuple[Context, ...]
    leading_space: str = "both"
    case_sensitive: bool = False
    preambles: tuple[str, ...] = DEFAULT_PREAMBLES
    kind: str = "closed"  # closed | open
    stop_at: str = "line"  # an open task's completion ends at the first newline, or sentence end
    max_tokens: int = 48  # and after this many tokens at most
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(o.label for o in self.options)

    @property
    def families(self) -> tuple[str, ...]:
        """The raw contexts' families, sorted."""
        return tuple(sorted({c.family for c in self.contexts}))

    @property
    def chat_families(self) -> tuple[str, ...]:
        """The chat instructions' families, sorted."""
        return tuple(sorted({i.family for i in self.instructions}))

    @property
    def instruction_texts(self) -> tuple[str, ...]:
        """The instructions' texts, in order (what a chat prompt's user turn holds)."""
        return tuple(i.text for i in self.instructions)

    def family_sizes(self) -> dict[str, dict[str, int]]:
        """``{"raw": {family: contexts}, "chat": {family: instructions}}``, in first-seen order."""
        raw: dict[str, int] = {}
        chat: dict[str, int] = {}
        for c in self.contexts:
            raw[c.family] = raw.get(c.family, 0) + 1
        for i in self.instructions:
            chat[i.family] = chat.get(i.family, 0) + 1
        return {"raw": raw, "chat": chat}

    def family_problems(self) -> list[tuple[str, str]]:
        """``(field, problem)`` for each family size below the rules (empty when the task meets them)."""
        sizes = self.family_sizes()
        out = [
            (
                "contexts",
                f"raw family '{f}' has {n} context{'s' * (n != 1)}; a family needs at least {MIN_CONTEXTS_PER_FAMILY}",
            )
            for f, n in sizes["raw"].items()
            if n < MIN_CONTEXTS_PER_FAMILY
        ]
        chat = sizes["chat"]
        if len(chat) < MIN_CHAT_FAMILIES:
            named = f"{len(chat)} chat famil{'y' if len(chat) == 1 else 'ies'} ({', '.join(chat)})"
            out.append(("instructions", f"{named}; a task needs at least {MIN_CHAT_FAMILIES}"))
        out += [
            (
                "instructions",
                f"chat family '{f}' has {n} paraphrase{'s' * (n != 1)}; "
                f"a family needs at least {MIN_PARAPHRASES_PER_FAMILY}",
            )
            for f, n in chat.items()
            if n < MIN_PARAPHRASES_PER_FAMILY
        ]
        return out

    @property
    def is_open(self) -> bool:
        """Free-text answers (``kind: open``): no option list; sampled, then clustered."""
        return self.kind == "open"

    def to_json(self) -> dict[str, Any]:
        if self.is_open:
            return {
                "id": self.id,
                "version": self.version,
                "kind": "open",
                "description": self.description,
                "stop": {"at": self.stop_at, "max_tokens": self.max_tokens},
                "instructions": [_with_split({"family": i.family, "text": i.text}, i.split) for i in self.instructions],
                "contexts": [_with_split({"family": c.family, "text": c.text}, c.split) for c in self.contexts],
            }
        return {
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "leading_space": self.leading_space,
            "options": [{"label": o.label, "forms": list(o.forms)} for o in self.options],
            "parser": {"case_sensitive": self.case_sensitive, "preambles": list(self.preambles)},
            "instructions": [_with_split({"family": i.family, "text": i.text}, i.split) for i in self.instructions],
            "contexts": [_with_split({"family": c.family, "text": c.text}, c.split) for c in self.contexts],
        }


# ---------------------------------------------------------------------------------------------
# validation


def _fail(src: str, where: str, msg: str) -> TaskError:
    return TaskError(f"{src}: field '{where}': {msg}")


def _check_keys(src: str, where: str, obj: dict, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(allowed)})"
            raise _fail(src, f"{where}{key}", f"unknown key{hint}")
    for key in required:
        if key not in obj:
            raise _fail(src, f"{where}{key}", "missing")


def _str(src: str, where: str, value: Any, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(src, where, f"expected a string, got {kind_of(value)}")
    s = str(value)
    if not allow_empty and not s.strip():
        raise _fail(src, where, "must not be empty")
    return s


def _split_of(src: str, where: str, raw: dict) -> str | None:
    split = raw.get("split")
    if split is not None and split not in SPLITS:
        raise _fail(src, f"{where}.split", f"expected train or heldout, got {split!r}")
    return split


def _with_split(d: dict[str, Any], split: str | None) -> dict[str, Any]:
    return d if split is None else {**d, "split": split}


def _list(src: str, where: str, value: Any) -> list:
    if not isinstance(value, list):
        raise _fail(src, where, f"expected a list, got {kind_of(value)}")
    if not value:
        raise _fail(src, where, "must not be empty")
    return value


def task_from_dict(data: Any, src: str = "<task>") -> Task:
    """Validate a parsed YAML mapping and build a :class:`Task`."""
    if not isinstance(data, dict):
        raise TaskError(f"{src}: expected a mapping at the top level, got {kind_of(data)}")
    kind = data.get("kind", "closed")
    if kind not in KINDS:
        raise _fail(src, "kind", f"expected closed or open, got {kind!r}")
    required = ("id", "version", "instructions", "contexts") + (("options",) if kind == "closed" else ())
    _check_keys(src, "", data, _TOP_KEYS, required)
    if kind == "open":
        for key in _CLOSED_ONLY:
            if key in data:
                raise _fail(src, key, "an open task has no option list: its options are clusters of the completions")
    elif "stop" in data:
        raise _fail(src, "stop", "only an open task (kind: open) has a stop rule; a closed task stops at its options")
    task_id = _str(src, "id", data["id"])
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", task_id):
        raise _fail(src, "id", f"'{task_id}' must be lowercase letters, digits, '_' or '-'")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(src, "version", f"expected a positive integer, got {version!r}")
    leading = data.get("leading_space", "both")
    if leading not in LEADING_SPACE:
        raise _fail(src, "leading_space", f"expected one of {', '.join(LEADING_SPACE)}, got {leading!r}")

    parser = data.get("parser", {})
    if not isinstance(parser, dict):
        raise _fail(src, "parser", f"expected a mapping, got {kind_of(parser)}")
    _check_keys(src, "parser.", parser, _PARSER_KEYS, ())
    case_sensitive = parser.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise _fail(src, "parser.case_sensitive", f"expected true or false, got {case_sensitive!r}")
    preambles: tuple[str, ...] = DEFAULT_PREAMBLES
    if "preambles" in parser:
        extra = [
            _str(src, f"parser.preambles[{i}]", p)
            for i, p in enumerate(_list(src, "parser.preambles", parser["preambles"]))
        ]
        preambles = tuple(dict.fromkeys([*extra, *DEFAULT_PREAMBLES]))

    stop_at, max_tokens = "line", 48
    if kind == "open":
        stop = data.get("stop", {})
        if not isinstance(stop, dict):
            raise _fail(src, "stop", f"expected a mapping, got {kind_of(stop)}")
        _check_keys(src, "stop.", stop, _STOP_KEYS, ())
        stop_at = stop.get("at", stop_at)
        if stop_at not in STOP_AT:
            raise _fail(src, "stop.at", f"expected one of {', '.join(STOP_AT)}, got {stop_at!r}")
        max_tokens = stop.get("max_tokens", max_tokens)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 512:
            raise _fail(src, "stop.max_tokens", f"expected an integer from 1 to 512, got {max_tokens!r}")
    options: list[Option] = []
    owner: dict[str, str] = {}  # surface form (as the parser sees it) -> option label
    for i, raw in enumerate(_list(src, "options", data["options"]) if kind == "closed" else []):
        where = f"options[{i}]"
        if isinstance(raw, dict):
            _check_keys(src, f"{where}.", raw, _OPTION_KEYS, ("label",))
            label = _str(src, f"{where}.label", raw["label"])
            extra = raw.get("forms", [])
            forms = [label] + [
                _str(src, f"{where}.forms[{j}]", f)
                for j, f in enumerate(_list(src, f"{where}.forms", extra) if "forms" in raw else [])
            ]
        else:
            label = _str(src, where, raw)
            forms = [label]
        if label in (o.label for o in options):
            raise _fail(src, f"{where}.label", f"duplicate option '{label}'")
        if label != label.strip():
            raise _fail(
                src,
                f"{where}.label" if isinstance(raw, dict) else where,
                f"label {label!r} has leading or trailing whitespace",
            )
        forms = list(dict.fromkeys(forms))
        for f in forms:
            if f != f.strip():
                raise _fail(
                    src,
                    f"{where}.forms",
                    f"surface form {f!r} has leading or trailing whitespace; use leading_space instead",
                )
            key = f if case_sensitive else f.casefold()
            if key in owner and owner[key] != label:
                raise _fail(
                    src,
                    f"{where}.forms",
                    f"surface form {f!r} of option '{label}' is also a form of option '{owner[key]}'",
                )
            owner[key] = label
        options.append(Option(label=label, forms=tuple(forms)))
    if kind == "closed" and len(options) < 2:
        raise _fail(src, "options", f"a random task needs at least 2 options, got {len(options)}")

    instructions: list[Instruction] = []
    for i, raw in enumerate(_list(src, "instructions", data["instructions"])):
        where = f"instructions[{i}]"
        if isinstance(raw, dict):  # {family, text}
            _check_keys(src, f"{where}.", raw, _PROMPT_KEYS, _INSTRUCTION_KEYS)
            family, text = _str(src, f"{where}.family", raw["family"]), _str(src, f"{where}.text", raw["text"])
            instructions.append(Instruction(family=family, text=text, split=_split_of(src, where, raw)))
        else:  # a plain string: one family for all of them
            instructions.append(Instruction(family=DEFAULT_INSTRUCTION_FAMILY, text=_str(src, where, raw)))
    if len({ins.text for ins in instructions}) != len(instructions):
        raise _fail(src, "instructions", "duplicate instruction")
    contexts: list[Context] = []
    for i, raw in enumerate(_list(src, "contexts", data["contexts"])):
        where = f"contexts[{i}]"
        if not isinstance(raw, dict):
            raise _fail(src, where, f"expected a mapping with 'family' and 'text', got {kind_of(raw)}")
        _check_keys(src, f"{where}.", raw, _PROMPT_KEYS, _CONTEXT_KEYS)
        family, text = _str(src, f"{where}.family", raw["family"]), _str(src, f"{where}.text", raw["text"])
        contexts.append(Context(family=family, text=text, split=_split_of(src, where, raw)))
    if len({c.text for c in contexts}) != len(contexts):
        raise _fail(src, "contexts", "duplicate context text")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _fail(src, "metadata", f"expected a mapping, got {kind_of(metadata)}")
    return Task(
        id=task_id,
        version=version,
        description=_str(src, "description", data.get("description", task_id)),
        options=tuple(options),
        instructions=tuple(instructions),
        contexts=tuple(contexts),
        leading_space=leading,
        case_sensitive=case_sensitive,
        preambles=preambles,
        kind=kind,
        stop_at=stop_at,
        max_tokens=max_tokens,
        source=src,
        metadata=dict(metadata),
    )


def load_task_file(path: str | Path) -> Task:
    """Read, parse and validate one task file; a missing, binary, non-UTF-8 or malformed file,
    or one of the wrong shape, is a :class:`TaskError` naming the file (and the field)."""
    from crystallab.yamlconf import load_yaml

    path = Path(path)
    data = load_yaml(path, "task", TaskError)
    task = task_from_dict(data, str(path))
    if task.id != path.stem:
        raise _fail(str(path), "id", f"'{task.id}' must match the file name '{path.stem}'")
    check_family_sizes(task, builtin=path.resolve().parent == BUILTIN_DIR.resolve())
    return task


_WARNED: set[tuple[str, str, int]] = set()  # (source, id, version) already warned about


def check_family_sizes(task: Task, builtin: bool) -> None:
    """Enforce the family sizes: a built-in task that misses one is a :class:`TaskError` (its
    first problem, naming the file and the family); a user task gets one :class:`TaskWarning`
    line, once per task."""
    problems = task.family_problems()
    if not problems:
        return
    if builtin:
        where, msg = problems[0]
        raise _fail(task.source, where, msg)
    key = (task.source, task.id, task.version)
    if key in _WARNED:
        return
    _WARNED.add(key)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    msg = (
        f"{task.source}: task '{task.id}': {problems[0][1]}{more}; "
        f"family statistics (phi, n_basins) will be weak, see docs/tasks.md"
    )
    warnings.warn(msg, TaskWarning, stacklevel=2)


def _task_files(tasks_dir: str | Path | None) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}
    if tasks_dir is not None:
        d = Path(tasks_dir)
        if not d.is_dir():
            raise UserError(f"--tasks-dir {d}: not a directory")
        user: dict[str, Path] = {}
        try:
            found = sorted([*d.glob("*.yaml"), *d.glob("*.yml")])
        except OSError as exc:
            raise UserError(f"--tasks-dir {d}: cannot list the folder ({exc.strerror or exc})") from None
        for p in found:
            if p.stem in user:
                raise TaskError(
                    f"{p}: field 'id': task '{p.stem}' is defined twice in {d} ({user[p.stem].name} and {p.name})"
                )
            user[p.stem] = p
        files.update(user)
    return files


def task_ids(tasks_dir: str | Path | None = None) -> list[str]:
    return sorted(_task_files(tasks_dir))


@lru_cache(maxsize=256)
def _load_cached(path: str, mtime: float) -> Task:
    return load_task_file(path)


def load_task(task_id: str, tasks_dir: str | Path | None = None) -> Task:
    """Load a built-in task, or one from ``tasks_dir`` (which overrides a built-in of the same id)."""
    files = _task_files(tasks_dir)
    if task_id not in files:
        close = difflib.get_close_matches(task_id, list(files), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; run `crystallab tasks` to list them"
        raise UserError(f"unknown task '{task_id}'{hint}")
    p = files[task_id]
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:  # e.g. a dangling symlink
        raise TaskError(f"cannot read task file {p}: {exc.strerror or exc}") from None
    return _load_cached(str(p), mtime)


def tasks(tasks_dir: str | Path | None = None) -> list[Task]:
    """Every task: the built-ins, and those in ``tasks_dir`` (which override a built-in's id).

    >>> [t.id for t in tasks()][:3]
    ['animal', 'animal_reason', 'card_suit']
    """
    return [load_task(i, tasks_dir) for i in task_ids(tasks_dir)]


def load_tasks(spec: str | list[str], tasks_dir: str | Path | None = None) -> list[Task]:
    """Load a comma-separated list of task ids (or ``all``)."""
    ids = spec.split(",") if isinstance(spec, str) else list(spec)
    ids = [i.strip() for i in ids if i.strip()]
    if ids == ["all"]:  # every closed task: an open one is sampled and clustered, so it is named
        return [t for t in tasks(tasks_dir) if not t.is_open]
    if not ids:
        raise UserError("no task given")
    return [load_task(i, tasks_dir) for i in ids]


__all__ = [
    "Task",
    "Option",
    "Context",
    "Instruction",
    "TaskWarning",
    "check_family_sizes",
    "load_task",
    "load_tasks",
    "tasks",
    "load_task_file",
    "task_from_dict",
    "task_ids",
    "DEFAULT_PREAMBLES",
    "KINDS",
]
