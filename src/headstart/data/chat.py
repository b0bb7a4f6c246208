"""Instruction / chat data for the generation task: every example becomes a conversation.

Schemas (inferred from the fields of the first record, or forced by naming the prompt and
response columns with ``--text-col`` / ``--label-col``):

``alpaca``            ``instruction``, optional ``input``, ``output`` (optional ``system``, and
                      ``history``: earlier ``[user, assistant]`` turns). The prompt is the
                      instruction, then a blank line and the input when there is one. Self-Instruct's
                      ``instruction`` + ``instances: [{input, output}, ...]`` gives one example per
                      instance.
``messages``          ``messages: [{"role": "system"|"user"|"assistant", "content": ...}, ...]``
                      (OpenAI/TRL), or ShareGPT ``conversations: [{"from": "human"|"gpt"|"system",
                      "value": ...}, ...]``; it must end with an assistant turn.
``prompt-completion`` ``prompt`` and ``completion`` strings (or the two named columns).

Files: JSON (an array of records), JSONL, or a table (CSV/TSV/Parquet) for the flat schemas.
Every assistant turn is learned (multi-turn data supervises each reply); the last one is the
reference that evaluation generates against from the turns before it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import BadInput

SCHEMAS = ("alpaca", "messages", "prompt-completion")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                  "model": "assistant", "system": "system"}

Message = dict[str, str]
Conversation = tuple[Message, ...]


@dataclass(frozen=True, eq=False)
class ChatSet:
    """Conversations (each ends with the assistant reply to learn and to generate), with where
    each came from (``file:line`` / ``file: record N``) for error messages."""

    conversations: list[Conversation]
    source: str
    schema: str
    origin: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.conversations)

    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256(b"chat")
        for conv in self.conversations:
            h.update(json.dumps(conv, ensure_ascii=False, sort_keys=True).encode())
            h.update(b"\n")
        return h.hexdigest()

    def subset(self, index: list[int]) -> ChatSet:
        return ChatSet(conversations=[self.conversations[i] for i in index], source=self.source, schema=self.schema,
                       origin=[self.origin[i] for i in index] if self.origin else [], columns=self.columns)

    def prompts(self) -> list[Conversation]:
        """Each conversation without its last (assistant) turn: what generation continues."""
        return [conv[:-1] for conv in self.conversations]

    def references(self) -> list[str]:
        return [conv[-1]["content"] for conv in self.conversations]


def load_chat(path, *, prompt_col: str | None = None, response_col: str | None = None, fmt: str | None = None,
              header: bool | None = None) -> ChatSet:
    """Conversations from a JSON/JSONL file or a table, checked; one line naming the file and
    record otherwise (a missing field, an empty reply, a conversation not ending with the
    assistant)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInput(f"{p}: no such file; give instruction data as JSON/JSONL (alpaca, messages or prompt/completion "
                       "records) or a table with prompt and response columns")
    if p.is_dir():
        raise BadInput(f"{p} is a folder: generation reads one JSON/JSONL file or table of examples")
    records, origin = _records(p, fmt, header, (prompt_col, response_col))
    if not records:
        raise BadInput(f"{p}: no examples; add records (alpaca: instruction/output, messages, or prompt/completion)")
    if prompt_col or response_col:
        if not (prompt_col and response_col):
            raise BadInput(f"{p}: name both the prompt column (--text-col) and the response column (--label-col)")
        schema, cols = "prompt-completion", {"prompt": prompt_col, "completion": response_col}
    else:
        schema, cols = _infer_schema(p, records[0], origin[0])
    convs: list[Conversation] = []
    where: list[str] = []
    for rec, at in zip(records, origin, strict=True):
        if not isinstance(rec, dict):
            raise BadInput(f"{at}: a record must be a JSON object (got {type(rec).__name__})")
        for conv in _conversations(rec, schema, cols, at):
            convs.append(conv)
            where.append(at)
    return ChatSet(conversations=convs, source=str(p), schema=schema, origin=where, columns=cols)


def _records(p: Path, fmt: str | None, header: bool | None, names) -> tuple[list, list[str]]:
    from .readers import read_table, read_utf8

    suffix = (fmt or p.suffix.lstrip(".")).lower()
    if suffix == "json":
        try:
            data = json.loads(read_utf8(p))
        except ValueError as e:
            raise BadInput(f"{p}: not valid JSON ({e}); give a JSON array of records, or JSONL (one record per line)") from None
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise BadInput(f"{p}: a JSON file of examples must hold an array of records")
        return data, [f"{p}: record {i + 1}" for i in range(len(data))]
    if suffix == "jsonl":
        records, origin = [], []
        for n, line in enumerate(read_utf8(p).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise BadInput(f"{p}:{n}: not valid JSON ({e}); each line must be one JSON object") from None
            origin.append(f"{p}:{n}")
        return records, origin
    columns, origin = read_table(p, fmt=fmt, header=header, names=names)
    names_ = list(columns)
    rows = [{k: columns[k][i] for k in names_} for i in range(len(origin))]
    return rows, origin


def _infer_schema(p: Path, first, at: str) -> tuple[str, dict[str, str]]:
    keys = set(first) if isinstance(first, dict) else set()
    if "messages" in keys:
        return "messages", {"messages": "messages"}
    if "conversations" in keys:
        return "messages", {"messages": "conversations"}
    if "instruction" in keys and ("output" in keys or "instances" in keys):
        return "alpaca", {"instruction": "instruction", "output": "output"}
    if "prompt" in keys and "completion" in keys:
        return "prompt-completion", {"prompt": "prompt", "completion": "completion"}
    raise BadInput(f"{at}: cannot tell the schema from the fields {', '.join(sorted(map(str, keys))) or '(none)'}; "
                   "use alpaca (instruction, input, output), messages ([{role, content}...]) or prompt/completion, or name "
                   "the prompt and response columns with --text-col and --label-col")


def _text(value, at: str, what: str, *, required: bool = True) -> str:
    if value is None or (isinstance(value, float) and value != value):
        value = ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise BadInput(f"{at}: {what} must be text (got {type(value).__name__})")
    text = str(value)
    if required and not text.strip():
        raise BadInput(f"{at}: empty {what}; fill it in or remove the record")
    return text


def _conversations(rec: dict, schema: str, cols: dict[str, str], at: str) -> list[Conversation]:
    if schema == "messages":
        key = cols["messages"]
        if key not in rec:
            raise BadInput(f"{at}: no {key!r} field (the file's first record has one)")
        return [_messages(rec[key], at)]
    if schema == "prompt-completion":
        for k in cols.values():
            if k not in rec:
                raise BadInput(f"{at}: no {k!r} field")
        return [({"role": "user", "content": _text(rec[cols["prompt"]], at, f"prompt ({cols['prompt']!r})")},
                 {"role": "assistant", "content": _text(rec[cols["completion"]], at, f"response ({cols['completion']!r})")})]
    if "instruction" not in rec:
        raise BadInput(f"{at}: no 'instruction' field (alpaca records have instruction, input, output)")
    instruction = _text(rec["instruction"], at, "instruction")
    head: list[Message] = []
    if rec.get("system"):
        head.append({"role": "system", "content": _text(rec["system"], at, "system")})
    for turn in rec.get("history") or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise BadInput(f"{at}: history must be a list of [user, assistant] pairs")
        head += [{"role": "user", "content": _text(turn[0], at, "history turn")},
                 {"role": "assistant", "content": _text(turn[1], at, "history reply")}]
    if "instances" in rec:  # Self-Instruct: one example per instance
        instances = rec["instances"]
        if not isinstance(instances, list) or not instances:
            raise BadInput(f"{at}: 'instances' must be a non-empty list of {{input, output}} objects")
        out = []
        for inst in instances:
            if not isinstance(inst, dict) or "output" not in inst:
                raise BadInput(f"{at}: every instance needs an 'output'")
            out.append(tuple(head) + (_user(instruction, inst.get("input"), at),
                                      {"role": "assistant", "content": _text(inst["output"], at, "output")}))
        return out
    if "output" not in rec:
        raise BadInput(f"{at}: no 'output' field (the response to learn)")
    return [tuple(head) + (_user(instruction, rec.get("input"), at),
                           {"role": "assistant", "content": _text(rec["output"], at, "output")})]


def _user(instruction: str, extra, at: str) -> Message:
    extra = _text(extra, at, "input", required=False)
    return {"role": "user", "content": instruction + ("\n\n" + extra if extra.strip() else "")}


def _messages(value, at: str) -> Conversation:
    if not isinstance(value, list) or not value:
        raise BadInput(f"{at}: messages must be a non-empty list of {{role, content}} objects")
    out: list[Message] = []
    for i, m in enumerate(value, start=1):
        if not isinstance(m, dict):
            raise BadInput(f"{at}: message {i} is not an object")
        if "role" in m:
            role, content = m.get("role"), m.get("content")
        elif "from" in m:
            role, content = SHAREGPT_ROLES.get(str(m.get("from")).lower(), m.get("from")), m.get("value")
        else:
            raise BadInput(f"{at}: message {i} has neither role/content nor from/value")
        if role not in ROLES:
            raise BadInput(f"{at}: message {i} has role {role!r}; use one of {', '.join(ROLES)} (ShareGPT: human, gpt, system)")
        if role == "system" and i != 1:
            raise BadInput(f"{at}: message {i} is a system message; only the first message may be one")
        out.append({"role": role, "content": _text(content, at, f"message {i} ({role})")})
    if out[-1]["role"] != "assistant":
        raise BadInput(f"{at}: the conversation ends with a {out[-1]['role']} message; it must end with the assistant reply "
                       "to learn")
    if not any(m["role"] == "user" for m in out):
        raise BadInput(f"{at}: the conversation has no user message")
    return tuple(out)


__all__ = ["ChatSet", "Conversation", "SCHEMAS", "load_chat"]
