"""Fill-in-the-middle prompts, built by ingle from the model's vocabulary.

llama.cpp recognises the FIM tokens of the common code-model families
(Qwen2.5-Coder, CodeLlama, StarCoder2, DeepSeek-Coder, Codestral, CodeGemma)
when it loads the vocabulary; this module asks it for their ids and lays out
the prompt itself. User text is tokenized with special-token parsing off, so
code that happens to contain `<|fim_prefix|>` cannot inject a marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import llama_cpp as llama

from ..errors import UnsupportedFeature
from ..generation import ContextChunk
from .llama_model import LlamaModel

# The repository name written ahead of extra context in repo-level FIM formats.
_REPOSITORY_NAME = "workspace"


# Line-comment markers by file extension, for the path header of a context chunk; `//` for the rest.
_HASH_COMMENT = frozenset({"py", "sh", "bash", "rb", "pl", "r", "yaml", "yml", "toml", "cfg", "conf", "mk", "cmake"})
_DASH_COMMENT = frozenset({"lua", "sql", "hs", "elm", "ada"})


def _line_comment(filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in _HASH_COMMENT or filename.endswith(("Makefile", "Dockerfile")):
        return "#"
    return "--" if extension in _DASH_COMMENT else "//"


@dataclass(frozen=True)
class FimTokens:
    """The FIM marker tokens of one model (None where the family has none)."""

    prefix: int
    suffix: int
    middle: int
    repository: int | None = None
    file_separator: int | None = None
    pad: int | None = None
    suffix_first: bool = False
    """Codestral's order: suffix, then prefix."""

    @classmethod
    def of(cls, model: LlamaModel) -> FimTokens | None:
        """The model's FIM tokens, or None if it cannot fill in the middle."""
        vocab = model.vocab

        def token(getter) -> int | None:
            value = getter(vocab)
            return value if value >= 0 else None

        prefix, suffix, middle = (
            token(llama.llama_vocab_fim_pre),
            token(llama.llama_vocab_fim_suf),
            token(llama.llama_vocab_fim_mid),
        )
        if prefix is None or suffix is None or middle is None:
            return None
        return cls(
            prefix=prefix,
            suffix=suffix,
            middle=middle,
            repository=token(llama.llama_vocab_fim_rep),
            file_separator=token(llama.llama_vocab_fim_sep),
            pad=token(llama.llama_vocab_fim_pad),
            suffix_first=model.token_text(prefix) == "[PREFIX]",
        )

    def stop_tokens(self) -> frozenset[int]:
        """Markers that end a completion if the model emits them."""
        markers = {self.prefix, self.suffix, self.middle, self.repository, self.file_separator, self.pad}
        return frozenset(marker for marker in markers if marker is not None)


def build_fim_prompt(
    model: LlamaModel,
    fim: FimTokens | None,
    prefix: str,
    suffix: str,
    extra_context: list[ContextChunk],
    filename: str | None,
) -> list[int]:
    """Token ids of a FIM prompt: extra context chunks first, then prefix/suffix, then the middle marker.

    The extra context comes first so that it stays a stable prompt prefix
    between keystrokes and the scheduler's prompt reuse applies.
    """
    if fim is None:
        raise UnsupportedFeature(
            "This model cannot fill in the middle (its vocabulary has no FIM tokens): use a code model "
            "such as qwen2.5-coder."
        )
    tokens = _repository_head(model, fim, extra_context, filename)
    prefix_part = [fim.prefix] + _text(model, prefix)
    suffix_part = [fim.suffix] + _text(model, suffix)
    if fim.suffix_first:
        tokens += suffix_part + prefix_part
    else:
        tokens += prefix_part + suffix_part
    return tokens + [fim.middle]


def build_file_prompt(
    model: LlamaModel, fim: FimTokens | None, text: str, extra_context: list[ContextChunk], filename: str | None
) -> list[int]:
    """Token ids of a plain continuation of a file's `text`, with the extra context ahead as in a FIM prompt.

    Repository-level code models were trained on exactly this: other files, then the file being written,
    continued where it stops. The head is the FIM prompt's, so a sequence that switches between the two keeps
    the other files cached; the file's own text after the head is decoded again (unless kv_reuse.py, off by
    default, moves it past the FIM marker).
    """
    return _repository_head(model, fim, extra_context, filename) + _text(model, text)


def _repository_head(
    model: LlamaModel, fim: FimTokens | None, extra_context: list[ContextChunk], filename: str | None
) -> list[int]:
    """BOS, the extra context chunks, and the header of the file being completed where the format has one."""
    tokens: list[int] = [model.bos] if model.add_bos else []
    if fim is not None and fim.file_separator is not None:
        # Qwen2.5-Coder's `<|repo_name|>` / `<|file_sep|>`, StarCoder2's `<repo_name>` / `<file_sep>`: whichever
        # the vocabulary has (llama.cpp may know a family's file separator but not its repository marker).
        if fim.repository is not None:
            tokens += [fim.repository] + _text(model, f"{_REPOSITORY_NAME}\n")
        for chunk in extra_context:
            tokens += [fim.file_separator] + _text(model, f"{chunk.filename}\n{chunk.text}")
        if extra_context or filename:
            tokens += [fim.file_separator] + _text(model, f"{filename or 'untitled'}\n")
    else:
        # Families without a repository format get each chunk's path as a comment, as a file header reads.
        for chunk in extra_context:
            tokens += _text(model, f"{_line_comment(chunk.filename)} {chunk.filename}\n{chunk.text}")
    return tokens


def _text(model: LlamaModel, value: str) -> list[int]:
    """User text as tokens, with special-token parsing off (see the module's docstring)."""
    return model.tokenize(value, add_special=False, parse_special=False)
