"""What llama.cpp's weight repacking changes on this CPU: speed, and whether guessed rows compute as alone.

On x86 CPUs without AMX and on ARM, llama.cpp copies the weights of the common
quantized types into an interleaved layout ("repacking") whose kernels run
faster, and ingle keeps it on by default. Those kernels compute a batch's rows
in blocks of four, each adding up in another order than a lone token's, and
have no reference version (core/runtime/reference_kernels.py): so there, a
speculative guess can still tip a greedy answer at a near tie, and
`deterministic = true` keeps the weights unpacked. This prints, with the
weights repacked and unpacked, in turns, medians of `--rounds`:
- a 512-token prompt read in one step, in seconds;
- a one-token step after it and a 16-token step (prompt lookup's guesses), in ms;
- the largest step (of 2 to 8 tokens) whose every row equals the same token
  decoded alone, bit for bit;
for the default model and for two models of Qwen2.5-1.5B's shape (Q4_K_M and
Q4_0, the types llama.cpp repacks most), written here with random weights:
their speed is a real model's, their answers mean nothing.

It needs a llama.cpp that repacks on this CPU. On a CPU with AMX, ingle never
repacks (llama.cpp's AMX kernels crash: core/runtime/llama_model.py), so build
llama-cpp-python for plain AVX2 into a folder of its own and put it first:

    CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/pip install --no-cache-dir --no-deps \\
        --target /tmp/avx2 llama-cpp-python==0.3.36
    PYTHONPATH=/tmp/avx2 .venv/bin/python bench/repack.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import statistics
import sys
import time
from pathlib import Path

import gguf
import llama_cpp as llama
import numpy as np
from kv_cache import CHUNK, MODEL, default_model, read_prompt
from rich.console import Console
from rich.table import Table

from ingle.core.runtime.llama_model import Batch, ContextShape, LlamaContext, LlamaModel, model_params

THREADS = 2
PROMPT = CHUNK  # read in one step
GUESSES = 16
LONGEST_CHECKED = 8
# Qwen2.5-1.5B's shape: hidden size, feed-forward size, layers, attention heads, key/value heads.
SHAPE = {"embedding_length": 1536, "feed_forward_length": 8960, "block_count": 28}
HEADS, KV_HEADS = 12, 2
QUANTIZED = {"Q4_K_M": llama.LLAMA_FTYPE_MOSTLY_Q4_K_M, "Q4_0": llama.LLAMA_FTYPE_MOSTLY_Q4_0}
STORE = Path("~/.cache/ingle-bench/repack").expanduser()


def write_random_model(template: Path, path: Path) -> None:
    """A GGUF of SHAPE in f16 with random weights and the template's tokenizer and chat template."""
    source = gguf.GGUFReader(template)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    sizes = {f"qwen2.{key}": value for key, value in SHAPE.items()}
    sizes |= {"qwen2.attention.head_count": HEADS, "qwen2.attention.head_count_kv": KV_HEADS}
    for key, field in source.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, field.contents())
        else:
            writer.add_key_value(key, sizes.get(key, field.contents()), kind)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    hidden, ffn = SHAPE["embedding_length"], SHAPE["feed_forward_length"]
    kv_width = hidden // HEADS * KV_HEADS
    vocab = len(source.fields["tokenizer.ggml.tokens"].data)
    generator = np.random.default_rng(0)

    def weights(rows: int, columns: int) -> np.ndarray:
        return (generator.standard_normal((rows, columns), dtype=np.float32) * 0.02).astype(np.float16)

    writer.add_tensor("token_embd.weight", weights(vocab, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for layer in range(SHAPE["block_count"]):
        name = f"blk.{layer}."
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(name + norm + ".weight", np.ones(hidden, np.float32))
        for part, width in (("attn_q", hidden), ("attn_k", kv_width), ("attn_v", kv_width)):
            writer.add_tensor(f"{name}{part}.weight", weights(width, hidden))
            writer.add_tensor(f"{name}{part}.bias", np.zeros(width, np.float32))
        writer.add_tensor(name + "attn_output.weight", weights(hidden, hidden))
        writer.add_tensor(name + "ffn_gate.weight", weights(ffn, hidden))
        writer.add_tensor(name + "ffn_up.weight", weights(ffn, hidden))
        writer.add_tensor(name + "ffn_down.weight", weights(hidden, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def random_models(template: Path, console: Console) -> dict[str, Path]:
    """The 1.5B-shaped models, written and quantized once into STORE."""
    paths = {name: STORE / f"qwen2-1.5b-shape-random-{name}.gguf" for name in QUANTIZED}
    if all(path.exists() for path in paths.values()):
        return paths
    STORE.mkdir(parents=True, exist_ok=True)
    f16 = STORE / "qwen2-1.5b-shape-random-f16.gguf"
    console.print(f"Writing a model of Qwen2.5-1.5B's shape with random weights to {STORE} (3 GB in f16)…")
    write_random_model(template, f16)
    try:
        for name, path in paths.items():
            console.print(f"Quantizing it to {name}…")
            params = llama.llama_model_quantize_default_params()
            params.ftype, params.nthread = QUANTIZED[name], THREADS
            partial = path.with_suffix(".partial")
            if llama.llama_model_quantize(str(f16).encode(), str(partial).encode(), ctypes.pointer(params)) != 0:
                raise SystemExit(f"llama.cpp could not quantize {f16} to {name}.")
            partial.rename(path)
    finally:
        f16.unlink()
    return paths


def decode(context: LlamaContext, batch: Batch, tokens: list[int], start: int) -> float:
    """Decode `tokens` at positions start… in one step, every row with logits; seconds taken."""
    batch.clear()
    for offset, token in enumerate(tokens):
        batch.add(token, start + offset, 0, True)
    started = time.perf_counter()
    context.decode(batch, generated_only=True)
    return time.perf_counter() - started


def measure(model: LlamaModel) -> dict[str, float]:
    """One round of every figure for one model, loaded repacked or not."""
    shape = ContextShape(sequences=1, tokens_per_sequence=1024, batch_tokens=PROMPT, threads=THREADS)
    context = model.new_context(shape)
    batch = Batch(PROMPT)
    prompt = [1000 + position for position in range(PROMPT)]
    try:
        read = read_prompt(context, batch, prompt)
        # The answer's tokens one at a time: each step's logits are what a guessed row must equal.
        answer = [int(np.argmax(context.logits(PROMPT - 1)))]
        alone, steps = [], []
        for offset in range(GUESSES):
            steps.append(decode(context, batch, answer[-1:], PROMPT + offset))
            alone.append(context.logits(0).copy())
            answer.append(int(np.argmax(alone[-1])))
        context.forget(0, PROMPT)
        guess_step = decode(context, batch, answer[:GUESSES], PROMPT)
        as_alone = 1
        for size in range(2, LONGEST_CHECKED + 1):
            context.forget(0, PROMPT)
            decode(context, batch, answer[:size], PROMPT)
            if not all(np.array_equal(context.logits(row), alone[row]) for row in range(size)):
                break
            as_alone = size
    finally:
        batch.free()
        context.free()
    return {"read": read, "lone": statistics.median(steps) * 1000, "guesses": guess_step * 1000, "alone": as_alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="turns of repacked and unpacked (medians kept)")
    arguments = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 140)
    if not model_params(repack=True).use_extra_bufts:
        console.print(
            "llama.cpp does not repack weights in this build on this CPU (it has AMX, whose kernels crash): "
            "run this with a llama-cpp-python built for plain AVX2, as the top of bench/repack.py shows."
        )
        raise SystemExit(2)
    _, default = asyncio.run(default_model(console))
    models = {f"{MODEL} (Q5_0/Q8_0/Q6_K)": default} | {
        f"Qwen2.5-1.5B shape, random, {name}": path for name, path in random_models(default, console).items()
    }
    console.print(llama.llama_print_system_info().decode().strip())
    for label, path in models.items():
        rounds: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for number in range(arguments.rounds):
            for repack in (True, False) if number % 2 == 0 else (False, True):
                model = LlamaModel(path, repack=repack)
                try:
                    rounds[repack].append(measure(model))
                finally:
                    model.free()
        figures = {
            repack: {key: statistics.median(result[key] for result in results) for key in results[0]}
            for repack, results in rounds.items()
        }
        table = Table(title=f"{label}, {THREADS} threads, median of {arguments.rounds}")
        for column in ("measure", "repacked", "unpacked", "repacked / unpacked"):
            table.add_column(column, justify="left" if column == "measure" else "right")
        for name, key, form in (
            (f"{PROMPT}-token prompt, s (lower is better)", "read", "{:.2f}"),
            ("one-token step, ms (lower is better)", "lone", "{:.1f}"),
            (f"{GUESSES}-token step, ms (lower is better)", "guesses", "{:.0f}"),
        ):
            ours, theirs = figures[True][key], figures[False][key]
            table.add_row(name, form.format(ours), form.format(theirs), f"{ours / theirs:.2f}x")
        table.add_row(
            f"largest step (up to {LONGEST_CHECKED}) whose rows all equal lone decodes",
            f"{figures[True]['alone']:.0f}",
            f"{figures[False]['alone']:.0f}",
            "",
        )
        console.print(table)


if __name__ == "__main__":
    main()
