"""`ingle run`: answer one prompt, or chat interactively, streaming tokens as they come."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.status import Status

from ingle.core.errors import IngleError, InvalidRequest, ModelNotFound
from ingle.core.generation import ChatMessage, GenerationChunk, GenerationRequest, GenerationStats, SamplingOptions
from ingle.core.names import ModelName
from ingle.core.sources import DEFAULT_MODEL_NAME

from .context import CliContext, cli_context
from .engine_access import open_engine
from .formatting import parse_keep_alive
from .progress import pull_with_progress

if TYPE_CHECKING:
    from ingle.adapters.engine_api import EngineApi

# Rich keeps single newlines in help text, so each paragraph is one long line.
RUN_HELP = (
    "Chat with a model, or answer one prompt and exit.\n\n"
    "With a PROMPT the answer streams to stdout and ingle exits. Without one, in a terminal, "
    "you get an interactive chat (type /help there); with input piped in, that input is the prompt.\n\n"
    "The first word is the MODEL when it names a stored model, the default model, or any name with a tag "
    "(like 'llama3:8b', which must then be pulled first); otherwise every word is the prompt and the "
    "configured default model answers, pulled on first use.\n\n"
    "Examples:\n"
    '  ingle run "Write a haiku about the sea"\n'
    "  ingle run\n"
    '  ingle run qwen2.5-coder:0.5b "Write a haiku about Python"\n'
    "  cat question.txt | ingle run qwen2.5-coder:0.5b\n"
    '  ingle run qwen2.5-coder:0.5b --raw "def fibonacci(n):" --max-tokens 64\n'
)

CHAT_HELP = """Commands:
  /clear   forget the conversation so far
  /help    show this help
  /bye     leave (so does Ctrl-D)
Start and end a message with \"\"\" to write several lines.
Ctrl-C stops an answer."""

_MULTILINE_QUOTE = '"""'
# Done reasons of an answer the model finished: at a stop (token or string) or at its length limit.
_FINISHED = ("stop", "length")


class OutputFormat(StrEnum):
    """Constraints `--format` can put on the answer."""

    json = "json"


@dataclass
class RunOptions:
    """How each turn of `ingle run` is asked for, from its command-line options."""

    model: str
    system: str | None = None
    raw: bool = False
    format: str | None = None
    keep_alive: float | None = None
    sampling: SamplingOptions = field(default_factory=SamplingOptions)

    def request(self, history: list[ChatMessage], prompt: str) -> GenerationRequest:
        """The generation request for PROMPT after HISTORY (history is ignored for raw prompts)."""
        if self.raw:
            return GenerationRequest(
                model=self.model,
                prompt=prompt,
                raw=True,
                options=replace(self.sampling),
                format=self.format,
                keep_alive=self.keep_alive,
            )
        return GenerationRequest(
            model=self.model,
            messages=[*history, ChatMessage(role="user", content=prompt)],
            system=self.system,
            options=replace(self.sampling),
            format=self.format,
            keep_alive=self.keep_alive,
        )


def register(app: typer.Typer) -> None:
    """Add `run` to the app."""
    app.command("run", help=RUN_HELP)(run_model)


def run_model(
    ctx: typer.Context,
    words: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[MODEL] [PROMPT]...",
            help="An optional model name, then the prompt; several words are joined with spaces.",
            show_default=False,
        ),
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="System prompt, e.g. 'Answer in one sentence.' Overrides the model's own.")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(min=0.0, help="Sampling temperature, e.g. 0 for the most likely tokens, 1 for varied ones."),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many tokens, e.g. 128. Default: until the model stops.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, e.g. 42, for repeatable answers.")] = None,
    output_format: Annotated[
        OutputFormat | None, typer.Option("--format", help="Constrain the answer, e.g. 'json' for a JSON value.")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Complete PROMPT as plain text, without the chat template, e.g. for code.")
    ] = False,
    keep_alive: Annotated[
        float | None,
        typer.Option(
            parser=parse_keep_alive,
            metavar="DURATION",
            help="How long the model stays loaded afterwards, e.g. 30s, 5m, 1h, 0 or forever.",
        ),
    ] = None,
) -> None:
    """Chat with a model, or answer one prompt and exit."""
    context = cli_context(ctx)
    sampling_overrides = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    options = RunOptions(
        model=context.settings.default_model,
        system=system,
        raw=raw,
        format=output_format.value if output_format else None,
        keep_alive=keep_alive,
        sampling=SamplingOptions(**{key: value for key, value in sampling_overrides.items() if value is not None}),
    )
    # One runner for the whole command: input() runs between turns, outside the event loop, so
    # Ctrl-C at the chat prompt is an ordinary KeyboardInterrupt and Ctrl-C during an answer
    # cancels only that answer's task.
    with asyncio.Runner() as runner:
        resources = AsyncExitStack()
        engine = runner.run(resources.enter_async_context(open_engine(context.settings, context.engine_choice)))
        try:
            options.model, prompt = runner.run(split_model_and_prompt(engine, options.model, words or []))
            if prompt is None and not (sys.stdin is not None and sys.stdin.isatty()):
                prompt = _piped_prompt(raw)
            runner.run(ensure_model(engine, context, options.model))
            if prompt is None:
                _chat_loop(runner, engine, context, options)
            else:
                runner.run(stream_answer(engine, context, options.request([], prompt), spinner_text="loading model"))
        finally:
            runner.run(resources.aclose())


async def split_model_and_prompt(engine: EngineApi, default_model: str, words: list[str]) -> tuple[str, str | None]:
    """The model and the prompt (None if no words are left) from `ingle run`'s words.

    The first word is the model when it names a stored model, the default
    model, or any name with an explicit tag (`llama3:8b`): a mistyped tag then
    fails as "not found" instead of silently going to another model. Any other
    first word starts the prompt, which the default model answers.
    """
    if not words:
        return default_model, None
    first, rest = words[0], words[1:]
    prompt = " ".join(rest) or None
    try:
        name = ModelName.parse(first)
    except InvalidRequest:
        return default_model, " ".join(words)
    if name == ModelName.parse(default_model) or ":" in first:
        return first, prompt
    try:
        await engine.show(first)
    except ModelNotFound:
        return default_model, " ".join(words)
    return first, prompt


def _piped_prompt(raw: bool) -> str:
    """The prompt from standard input; a usage error if there is none."""
    # sys.stdin is None when the process was started with file descriptor 0 closed.
    text = sys.stdin.read() if sys.stdin is not None else ""
    if not text.strip():
        raise InvalidRequest("No prompt: give one after the model name or pipe it to standard input.")
    # A raw completion continues the text exactly as given; a chat message needs no trailing newline.
    return text if raw else text.strip()


async def ensure_model(engine: EngineApi, context: CliContext, name: str) -> None:
    """Pull the built-in default model on first use; any other missing model fails with ModelNotFound.

    Only the built-in model has a source ingle knows without being told; a
    configured default_model of another name must be pulled by hand.
    """
    if ModelName.parse(name) != ModelName.parse(DEFAULT_MODEL_NAME):
        return
    try:
        await engine.show(name)
    except ModelNotFound:
        context.err.print(f"{name} is not in the store yet: pulling it on first use.")
        await pull_with_progress(engine, context.err, "default")


async def stream_answer(engine: EngineApi, context: CliContext, request: GenerationRequest, spinner_text: str) -> str:
    """Stream one answer to stdout as it is generated and return its full text.

    An answer that ends neither at a stop nor at its length limit (the model was removed or
    unloaded under it) raises IngleError after the text so far, so `ingle run` does not exit 0
    with half an answer.
    """
    pieces: list[str] = []
    stats: GenerationStats | None = None
    spinner = Status(spinner_text, console=context.err) if context.err.is_terminal else None
    if spinner:
        spinner.start()
    try:
        chunk: GenerationChunk
        async for chunk in engine.generate(request):
            if spinner and (chunk.text or chunk.done):
                spinner.stop()
                spinner = None
            if chunk.text:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                pieces.append(chunk.text)
            if chunk.done:
                stats = chunk.stats
    finally:
        if spinner:
            spinner.stop()
        if pieces and not pieces[-1].endswith("\n"):
            sys.stdout.write("\n")
            sys.stdout.flush()
    if context.verbose and stats:
        context.err.print(_describe_stats(stats))
    if stats is None or stats.done_reason not in _FINISHED:
        raise IngleError(
            f"The answer of {request.model} was cut short: the model was stopped, removed or unloaded before it "
            "finished; run the command again."
        )
    return "".join(pieces)


def _describe_stats(stats: GenerationStats) -> str:
    def rate(tokens: int, seconds: float) -> str:
        return f"{tokens / seconds:.1f} tok/s" if seconds > 0 else "n/a"

    return (
        f"prompt: {stats.prompt_tokens} tokens ({stats.cached_tokens} cached), "
        f"{rate(stats.prompt_tokens - stats.cached_tokens, stats.prompt_seconds)}; "
        f"answer: {stats.completion_tokens} tokens, {rate(stats.completion_tokens, stats.generate_seconds)}; "
        f"load {stats.load_seconds:.2f}s, total {stats.total_seconds:.2f}s, done: {stats.done_reason}"
    )


def _chat_loop(runner: asyncio.Runner, engine: EngineApi, context: CliContext, options: RunOptions) -> None:
    import readline  # noqa: F401  (for its effect: line editing and history in input(); only the chat needs it)

    history: list[ChatMessage] = []
    spinner_text = "loading model"
    context.err.print(f"Chatting with {options.model}. Type /help for commands, /bye or Ctrl-D to leave.")
    while True:
        try:
            line = _read_message()
        except EOFError:
            context.err.print()
            return
        except KeyboardInterrupt:
            context.err.print("\nUse Ctrl-D or /bye to leave.")
            continue
        command = line.strip()
        if not command:
            continue
        if command in ("/bye", "/exit", "/quit"):
            return
        if command == "/clear":
            history.clear()
            context.err.print("Conversation cleared.")
            continue
        if command in ("/help", "/?"):
            context.err.print(CHAT_HELP)
            continue
        if command.startswith("/") and " " not in command:
            context.err.print(f"Unknown command '{command}'. Type /help for the commands.")
            continue
        try:
            answer = runner.run(stream_answer(engine, context, options.request(history, line), spinner_text))
        except KeyboardInterrupt:
            # The answer's task was cancelled; forget the unfinished turn and carry on.
            context.err.print("\n(stopped)")
            continue
        spinner_text = "thinking"
        if not options.raw:
            history += [ChatMessage(role="user", content=line), ChatMessage(role="assistant", content=answer)]
        sys.stdout.write("\n")


def _read_message() -> str:
    """Read one message; one that starts with \"\"\" goes on until a line that ends with \"\"\"."""
    line = input(">>> ")
    if not line.lstrip().startswith(_MULTILINE_QUOTE):
        return line
    text = line.lstrip()[len(_MULTILINE_QUOTE) :]
    lines = []
    while not text.rstrip().endswith(_MULTILINE_QUOTE):
        lines.append(text)
        text = input("... ")
    lines.append(text.rstrip()[: -len(_MULTILINE_QUOTE)])
    return "\n".join(lines).strip("\n")
