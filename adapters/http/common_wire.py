"""Field types every wire format shares: model and knowledge-base names, with the pattern the server enforces.

Each pattern is written once, in the dialect JSON Schema and Python's `re` read
alike (no `$`, which Python lets match before a final newline; the end is
`(?![\\s\\S])`), and the validator checks values against that same pattern, so
the OpenAPI document states exactly what the server accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ...core.errors import InvalidRequest
from ...core.knowledge.library import validate_name
from ...core.names import ModelName

_END = r"(?![\s\S])"
_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}"
MODEL_NAME_PATTERN = (
    rf"^(?![A-Za-z0-9._/:-]*\.\.){_PART}(?:/{_PART}){{0,2}}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?{_END}"
)
"""`[namespace/]model[:tag]`, as core/names.py validates it, with `..` nowhere."""
KNOWLEDGE_NAME_PATTERN = rf"^[a-z0-9][a-z0-9._-]{{0,63}}{_END}"
"""A knowledge base's name, as core/knowledge/library.py validates it."""
BASE64_PATTERN = rf"^(?:[A-Za-z0-9+/]{{4}})*(?:[A-Za-z0-9+/]{{2}}==|[A-Za-z0-9+/]{{3}}=)?{_END}"
"""Standard base64 with its padding, as `base64.b64decode(validate=True)` reads it."""
EXAMPLE_MODEL = "qwen2.5-coder:0.5b"


def _check_model_name(value: str) -> str:
    if re.search(MODEL_NAME_PATTERN, value):
        return value
    try:
        ModelName.parse(value)  # for the sentence that says what is wrong
    except InvalidRequest as error:
        raise ValueError(error.message) from None
    raise ValueError(f"'{value}' is not a valid model name: use letters, digits, '.', '_' and '-', no spaces.")


def _check_knowledge_name(value: str) -> str:
    if re.search(KNOWLEDGE_NAME_PATTERN, value):
        return value
    try:
        validate_name(value)  # for the sentence that says what is wrong
    except InvalidRequest as error:
        raise ValueError(error.message) from None
    raise ValueError(f"'{value}' is not a knowledge base name: use lowercase letters, digits, '.', '_' or '-'.")


ModelNameField = Annotated[
    str,
    AfterValidator(_check_model_name),
    Field(json_schema_extra={"pattern": MODEL_NAME_PATTERN, "examples": [EXAMPLE_MODEL]}),
]
"""A model's name, like `qwen2.5-coder:0.5b`; a valid name the store lacks is a 404, not a 400."""
KnowledgeNameField = Annotated[
    str,
    AfterValidator(_check_knowledge_name),
    Field(json_schema_extra={"pattern": KNOWLEDGE_NAME_PATTERN, "examples": ["handbook"]}),
]
"""A knowledge base's name: lowercase letters, digits, '.', '_' or '-', 64 at most."""


_BASE64_ALPHABET = re.compile(r"[A-Za-z0-9+/]*")


def _check_base64(value: str) -> str:
    # BASE64_PATTERN's checks without its repeated group, which costs Python's `re` memory per group
    # (300 MB for an 8 MiB body): a length of whole groups, at most two '=', the alphabet before them.
    body = value.rstrip("=")
    if len(value) % 4 or len(value) - len(body) > 2 or not _BASE64_ALPHABET.fullmatch(body):
        raise ValueError("is not valid base64 (standard alphabet, padded with '=')")
    return value


Base64Field = Annotated[str, AfterValidator(_check_base64), Field(json_schema_extra={"pattern": BASE64_PATTERN})]
"""Bytes in standard, padded base64."""


@dataclass(frozen=True, eq=False)
class Limit:
    """A limit on a field that ingle enforces with its own sentence and states in the schema with JSON-schema keywords.

    For what a wire format allows but ingle cannot do (`n` other than 1, images to a
    text model): `Annotated[int | None, Limit({"enum": [1, None]}, "only 1 is supported", lambda n: n in (1, None))]`.
    The keywords go beside the field's own schema, where JSON Schema applies each to
    the instances of its type, so a limit on an array leaves `null` allowed.
    """

    keywords: dict[str, Any]
    sentence: str
    holds: Callable[[Any], bool] = field(repr=False)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """Check the value after the field's own validation."""
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The field's schema with the limit's keywords added."""
        return {**handler(schema), **self.keywords}

    def _check(self, value: Any) -> Any:
        if not self.holds(value):
            raise ValueError(self.sentence)
        return value


def absent(sentence: str) -> Limit:
    """A field that must be left out (or null): the wire format has it, ingle cannot do it."""
    return Limit({"type": "null"}, sentence, lambda value: value is None)


def empty(sentence: str) -> Limit:
    """A list or text that must be empty when sent."""
    return Limit({"maxItems": 0, "maxLength": 0}, sentence, lambda value: not value)


ONLY_ONE = Limit({"maximum": 1}, "only 1 is supported", lambda count: count in (None, 1))
"""A count (of choices, candidates) that wire formats allow to be more; ingle makes one."""


def one_prompt(min_length: int) -> Limit:
    """A prompt: a text, or a list holding one text; of `min_length` characters at least."""
    text = {"type": "string", "minLength": min_length}
    return Limit(
        {"anyOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": 1}]},
        "send one prompt as text, not empty; token-id arrays and several prompts are not supported",
        lambda prompt: (
            (isinstance(prompt, str) and len(prompt) >= min_length)
            or (
                isinstance(prompt, list)
                and len(prompt) == 1
                and isinstance(prompt[0], str)
                and len(prompt[0]) >= min_length
            )
        ),
    )


class ModelPath(BaseModel):
    """The path of `/v1/models/{model}`."""

    model_config = ConfigDict(extra="forbid")

    model: ModelNameField
    """The model's name."""


class KnowledgePath(BaseModel):
    """The path of `/api/knowledge/{name}` and the routes under it."""

    model_config = ConfigDict(extra="forbid")

    name: KnowledgeNameField
    """The knowledge base's name."""


class ResponsePath(BaseModel):
    """The path of `/v1/responses/{response_id}`."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1)
    """The id a created response carried, like `resp_…`."""
