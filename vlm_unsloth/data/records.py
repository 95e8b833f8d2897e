"""Rows in, canonical records out: the pure conversion every loader uses, and the checks that
say why a record cannot be trained on.

Canonical SFT record (a row of a `datasets.Dataset`, memory-mapped Arrow):

    {"messages": [{"role": "system"|"user"|"assistant",
                   "content": [{"type": "image", "text": None}, {"type": "text", "text": "..."}]}],
     "images": [{"bytes": b"..." | None, "path": "/abs/path.png" | "https://..." | None}],
     "source": "train.jsonl:12"}

Preference (DPO) records hold "prompt" (system? + user messages), "chosen" and "rejected"
(assistant messages), "images" and "source": TRL's vision DPO format. Images are references
only; `images.load_image` decodes them when a batch is built.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from datasets import Features, List, Value

from vlm_unsloth.errors import DataError

IMAGE_PLACEHOLDER = "<image>"
"""ShareGPT/LLaVA marker for an image inside a message's text."""

_PART = {"type": Value("string"), "text": Value("string")}
_MESSAGES = List({"role": Value("string"), "content": List(_PART)})
_IMAGES = List({"bytes": Value("binary"), "path": Value("string")})
SFT_FEATURES = Features({"messages": _MESSAGES, "images": _IMAGES, "source": Value("string")})
PREFERENCE_FEATURES = Features(
    {
        "prompt": _MESSAGES,
        "chosen": _MESSAGES,
        "rejected": _MESSAGES,
        "images": _IMAGES,
        "source": Value("string"),
    }
)

_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}


@dataclass(frozen=True)
class Columns:
    """Resolved column names for one dataset (spec flags over the adapter's defaults)."""

    image: str
    question: str | None
    answer: str
    chosen: str
    rejected: str
    instruction: str | None
    system_prompt: str | None
    text_only_rows: bool = False
    """--text-only-rows: an empty image cell is a text-only example, not a missing image."""


def table_row_to_record(row: dict, *, columns: Columns, base_dir: Path | None, source: str) -> dict:
    """A plain table row (image, question, answer) as a canonical SFT record."""
    images = _table_images(row[columns.image], columns, base_dir)
    prompt = _with_audio(_table_prompt(row, columns, n_images=len(images)), row)
    answer = _assistant(_answer_text(row[columns.answer]))
    return {"messages": [*prompt, answer], "images": images, "source": source}


def preference_row_to_record(
    row: dict, *, columns: Columns, base_dir: Path | None, source: str
) -> dict:
    """A preference row (image, question, chosen, rejected) as a canonical DPO record.

    TRL's layout is read too: `prompt` (text, or a list of messages with `<image>` or typed
    image parts) instead of a question column; `chosen` / `rejected` as assistant messages.
    """
    images = _table_images(row[columns.image], columns, base_dir)
    reads_question = columns.instruction is not None or columns.question in row
    if not reads_question and isinstance(row.get("prompt"), list):
        prompt = _with_system(_messages(row["prompt"]), columns.system_prompt)
    else:
        prompt_columns = columns if reads_question else replace(columns, question="prompt")
        prompt = _table_prompt(row, prompt_columns, n_images=len(images))
    return {
        "prompt": _with_audio(prompt, row),
        "chosen": _answer_messages(row[columns.chosen]),
        "rejected": _answer_messages(row[columns.rejected]),
        "images": images,
        "source": source,
    }


def messages_row_to_record(
    row: dict, *, columns: Columns, base_dir: Path | None, source: str
) -> dict:
    """A row already in conversation form: `messages` plus `images` (or inline image parts)."""
    messages = _messages(row["messages"])
    images = _row_images(row, columns)
    if images is None:
        images = [
            part.get("image") or part.get("path")
            for message in row["messages"]
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") == "image" and (part.get("image") or part.get("path"))
        ]
    return {
        "messages": _with_audio(_with_system(messages, columns.system_prompt), row),
        "images": image_references(images, base_dir),
        "source": source,
    }


def conversations_row_to_record(
    row: dict, *, columns: Columns, base_dir: Path | None, source: str
) -> dict:
    """A ShareGPT/LLaVA row: `conversations` of {"from", "value"} with `<image>` placeholders."""
    images = _row_images(row, columns)
    return {
        "messages": _with_audio(
            _with_system(_messages(row["conversations"]), columns.system_prompt), row
        ),
        "images": image_references(images, base_dir),
        "source": source,
    }


def image_references(value: Any, base_dir: Path | None) -> list[dict]:
    """Image reference(s) of a cell as {"bytes", "path"} dicts; nothing is decoded.

    A relative path is made absolute from `base_dir`; a URL is kept as it is; an empty cell
    becomes a reference with neither bytes nor path (rejected as missing_file at validation).
    """
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    return [_reference(item, base_dir) for item in values]


def _table_images(cell: Any, columns: Columns, base_dir: Path | None) -> list[dict]:
    """A table's image cell as references: an empty cell is one missing image (rejected at
    validation), or no image at all (a text-only row) with --text-only-rows."""
    empty = cell is None or (isinstance(cell, str) and not cell.strip())
    if empty and columns.text_only_rows:
        return []
    return image_references([None] if cell is None else cell, base_dir)


def _reference(item: Any, base_dir: Path | None) -> dict:
    if isinstance(item, dict):
        data, path = item.get("bytes"), item.get("path")
        if data is None and path:
            path = _resolve(path, base_dir)
        return {"bytes": data, "path": path}
    if isinstance(item, bytes):
        return {"bytes": item, "path": None}
    if isinstance(item, str) and item.strip():
        return {"bytes": None, "path": _resolve(item.strip(), base_dir)}
    if hasattr(item, "save"):  # a PIL image in a hand-made dataset: keep it as PNG bytes
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    return {"bytes": None, "path": None}


def _resolve(path: str, base_dir: Path | None) -> str:
    if path.startswith(("http://", "https://")):
        return path
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    return str(resolved.resolve())


_IMAGE_PART = {"type": "image", "text": None}
_AUDIO_PART = {"type": "audio", "text": None}
"""Kept only for the check to refuse (record_problem): audio is never trained."""
AUDIO_COLUMNS = ("audio", "audios")
"""Row fields holding audio (Gemma 3n's and Gemma 4's processors take it; this project trains
the image path only)."""


def _text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [_text_part(text)]}


def _with_audio(messages: list[dict], row: dict) -> list[dict]:
    """`messages` with one audio part per clip of the row's audio field (in its first user
    message), for the check to refuse; unchanged for a row without audio."""
    clips = [value for key in AUDIO_COLUMNS if row.get(key) for value in _as_list(row[key])]
    if not clips:
        return messages
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": [dict(_AUDIO_PART) for _ in clips]}, *messages]
    user = messages[first_user]
    with_audio = {**user, "content": [dict(_AUDIO_PART) for _ in clips] + user["content"]}
    return [*messages[:first_user], with_audio, *messages[first_user + 1 :]]


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": [_text_part(system_prompt)]}, *messages]


def _table_prompt(row: dict, columns: Columns, n_images: int) -> list[dict]:
    """[system?, user(images..., question)] for a table row."""
    question = columns.instruction
    if question is None:
        question = _answer_text(row[columns.question])
    content = [dict(_IMAGE_PART) for _ in range(n_images)]
    if question.strip():
        content.append(_text_part(question))
    return _with_system([{"role": "user", "content": content}], columns.system_prompt)


def _answer_text(value: Any) -> str:
    """A cell as answer text: a list (ChartQA's `label`) gives its first item; None gives ""."""
    if isinstance(value, list | tuple):
        return _answer_text(value[0]) if value else ""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _answer_messages(value: Any) -> list[dict]:
    """`chosen` / `rejected`: text, or TRL's list of assistant messages."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return _messages(value)
    return [_assistant(_answer_text(value))]


def _row_images(row: dict, columns: Columns) -> Any:
    """The image cell of a conversation row: `images`, else the image column, else None."""
    if "images" in row:
        return row["images"]
    if columns.image in row:
        return row[columns.image]
    return None


def _messages(raw: list[dict] | None) -> list[dict]:
    """Messages in canonical form, from {role, content} (typed parts or a string, where
    `<image>` marks images) or ShareGPT {from, value}. Unknown roles are kept for the check
    to name."""
    messages = []
    for message in raw or []:
        role = message.get("role") or message.get("from") or ""
        content = message.get("content")
        if content is None:
            content = message.get("value")
        messages.append({"role": _ROLES.get(role.lower(), role), "content": _content(content)})
    return messages


def _content(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return split_image_placeholders(content)
    parts = []
    for part in content:
        if part.get("type") in ("image", "image_url"):
            parts.append(dict(_IMAGE_PART))
        elif part.get("type") in ("audio", "input_audio"):
            parts.append(dict(_AUDIO_PART))
        elif part.get("text") is not None:
            parts.append(_text_part(part["text"]))
    return parts


def split_image_placeholders(text: str) -> list[dict]:
    """Text with `<image>` markers as parts: "<image>\\nWhat?" -> [image, text "What?"]."""
    parts: list[dict] = []
    for index, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if index > 0:
            parts.append(dict(_IMAGE_PART))
        if piece.strip():
            parts.append(_text_part(piece.strip()))
    return parts


# ---------------------------------------------------------------------------------------------
# Checks: why a record cannot be trained on


def record_problem(record: dict) -> tuple[str, str] | None:
    """(reason, message) of the first problem of an SFT or preference record, else None.

    Reasons: audio (an audio part or field: only images are trained), bad_roles,
    empty_question, empty_answer, same_answers (a preference pair whose chosen and rejected
    answers are the same text), image_count_mismatch. Messages name the message index, e.g.
    "message 3 (assistant) is empty".
    """
    conversation = [
        *record.get("prompt", []),
        *record.get("chosen", []),
        *record.get("messages", []),
    ]
    problem = _audio_problem(conversation)
    if problem is not None:
        return problem
    if "prompt" in record:
        return _preference_problem(record)
    problem = _turns_problem(record["messages"], final_role="assistant")
    return problem or _image_count_problem(record["messages"], record["images"])


def check_record(record: dict) -> None:
    """Raise DataError naming the row and message index if `record` cannot be trained on."""
    problem = record_problem(record)
    if problem is not None:
        raise DataError(
            problem[1],
            where=record["source"],
            fix="fix the row or leave it to be skipped (rejected rows are listed by "
            "scripts/inspect_data.py)",
        )


def _preference_problem(record: dict) -> tuple[str, str] | None:
    problem = _turns_problem(record["prompt"], final_role="user")
    if problem:
        return problem
    for key in ("chosen", "rejected"):
        answer = record[key]
        if [m["role"] for m in answer] != ["assistant"]:
            roles = ", ".join(m["role"] for m in answer) or "nothing"
            return "bad_roles", f"{key} must be one assistant message, got {roles}"
        if not _text_of(answer[0]).strip():
            return "empty_answer", f"{key} answer is empty"
    # Compared without surrounding whitespace only: answers that differ in nothing else give DPO
    # no preference to learn (a zero gradient where the chat template trims them, as Llama's
    # does; else a preference about a stray space), while case and punctuation may be the very
    # thing a pair prefers ("Red" over "red.").
    chosen, rejected = (_text_of(record[key][0]).strip() for key in ("chosen", "rejected"))
    if chosen == rejected:
        return (
            "same_answers",
            f"chosen and rejected answers are the same text ({chosen[:40]!r}): the pair teaches "
            "nothing",
        )
    return _image_count_problem(record["prompt"], record["images"])


def _turns_problem(messages: list[dict], *, final_role: str) -> tuple[str, str] | None:
    """Roles go [system] user assistant user ... ending with `final_role`; no empty turns."""
    if not messages:
        return "bad_roles", "conversation has no messages"
    start = 1 if messages[0]["role"] == "system" else 0
    if start == len(messages):
        return "bad_roles", "conversation has only a system message"
    for index, message in enumerate(messages[start:], start=start):
        expected = "user" if (index - start) % 2 == 0 else "assistant"
        role = message["role"]
        if role != expected:
            return "bad_roles", f"message {index} has role {role!r}, expected {expected!r}"
        has_image = any(part["type"] == "image" for part in message["content"])
        if role == "assistant" and has_image:
            return "bad_roles", f"message {index} (assistant) holds an image; put it in a user turn"
        if role == "assistant" and not _text_of(message).strip():
            return "empty_answer", f"message {index} (assistant) is empty"
        if role == "user" and not has_image and not _text_of(message).strip():
            return "empty_question", f"message {index} (user) has neither text nor an image"
    if messages[-1]["role"] != final_role:
        return (
            "bad_roles",
            f"conversation ends with a {messages[-1]['role']} message, not {final_role}",
        )
    return None


def _audio_problem(messages: list[dict]) -> tuple[str, str] | None:
    """The first message holding audio: Gemma 3n and Gemma 4 take it, but this project trains
    their image path only."""
    for index, message in enumerate(messages):
        if any(part["type"] == "audio" for part in message["content"]):
            return (
                "audio",
                f"message {index} ({message['role']}) holds audio: only images and text are "
                "trained (no family's audio tower is), drop the audio from the row",
            )
    return None


def _image_count_problem(messages: list[dict], images: list[dict]) -> tuple[str, str] | None:
    n_parts = sum(part["type"] == "image" for m in messages for part in m["content"])
    if n_parts == len(images):
        return None
    return (
        "image_count_mismatch",
        f"{n_parts} image placeholder(s) in the messages but {len(images)} image(s) in the row",
    )


def _text_of(message: dict) -> str:
    return "".join(part["text"] or "" for part in message["content"] if part["type"] == "text")


def to_chat_template_messages(messages: list[dict]) -> list[dict]:
    """Canonical messages as processors' chat templates take them (image parts without text)."""
    return [
        {
            "role": message["role"],
            "content": [
                {"type": "image"} if part["type"] == "image" else _text_part(part["text"])
                for part in message["content"]
            ],
        }
        for message in messages
    ]
