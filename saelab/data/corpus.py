"""Text for the transformer sources: a default corpus every Python install has offline, or the
user's own ``.txt`` / ``.md`` files.

``data.text = "stdlib"`` (the default) is English the project does not write itself: the
docstrings of the Python standard library (modules, classes, functions), read from the ``.py``
files with ``ast`` (nothing is imported), plus the pages of the Python Language Reference that
``pydoc`` ships in ``pydoc_data/topics.py``. About 0.5M MiniLM tokens on CPython 3.11.

A corpus is identified by a content hash computed from the raw bytes of its files (cheap: a
cached activation set can be found without parsing anything), so a different Python version or
an edited text file never reuses stale activations.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Bump when the extraction rules change: it is part of every corpus hash, so old caches go stale.
EXTRACTOR_VERSION = "stdlib-docstrings-v1"
# Test suites are not prose about the library; the others are shipped as separate packages by
# Linux distributions (python3-tk, idle, python3-distutils, python3-venv, ...), so skipping them
# keeps the corpus (and its hash) the same on every install of one Python version.
STDLIB_SKIP_DIRS = frozenset(
    {"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "distutils", "ensurepip",
     "site-packages", "dist-packages", "lib-dynload", "__pycache__", "__phello__"}
)
TEXT_SUFFIXES = (".txt", ".md")
_SHUFFLE_SEED = 0  # fixed: the document order is part of the corpus, not of a run


@dataclass(frozen=True)
class Corpus:
    """A list of text files and how to turn them into documents.

    name: "stdlib" or the user's path; root: the folder the files live under; files: in a fixed
    order; digest: sha256 (hex) of the extraction rules, the relative file names and their bytes.
    """

    name: str
    kind: Literal["stdlib", "text"]
    root: Path
    files: tuple[Path, ...]
    digest: str

    def documents(self) -> Iterator[str]:
        """Documents in a fixed order. stdlib: every docstring and reference page, shuffled once
        with a fixed seed so that any prefix (``data.max_tokens``) samples the whole library;
        text: the files' paragraphs (blank-line separated), in file order, streamed."""
        if self.kind == "stdlib":
            docs = [d for path in self.files for d in _stdlib_documents(path, self.root)]
            random.Random(_SHUFFLE_SEED).shuffle(docs)
            yield from docs
        else:
            for path in self.files:
                yield from paragraphs(path)

    def describe(self) -> dict:
        return {"corpus": self.name, "corpus_files": len(self.files), "corpus_hash": self.digest}


def load_corpus(text: str) -> Corpus:
    """The corpus named by ``data.text``: "stdlib", a text file, or a folder searched
    recursively for .txt and .md files."""
    if text == "stdlib":
        return stdlib_corpus()
    path = Path(text).expanduser()
    if path.is_file():
        return _text_corpus(text, path.parent, (path,))
    if path.is_dir():
        files = tuple(
            p for p in sorted(path.rglob("*"))
            if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ValueError(f"data.text={text!r}: the folder holds no .txt or .md files")
        return _text_corpus(text, path, files)
    raise ValueError(f"data.text={text!r}: no such file or folder; use 'stdlib' or a .txt/.md file or a folder of them")


def stdlib_corpus(root: Path | None = None) -> Corpus:
    """The standard library's ``.py`` files under ``root`` (default: this interpreter's stdlib),
    walked in sorted order, skipping ``STDLIB_SKIP_DIRS``."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = tuple(_walk_py(root))
    if not files:
        raise ValueError(f"data.text='stdlib': found no .py files under {root}")
    return Corpus("stdlib", "stdlib", root, files, _digest("stdlib", root, files))


def _walk_py(folder: Path) -> Iterator[Path]:
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    for p in entries:
        if p.is_file() and p.suffix == ".py":
            yield p
    for p in entries:
        skip = p.name in STDLIB_SKIP_DIRS or p.name.startswith(("config-", "."))
        if p.is_dir() and not p.is_symlink() and not skip:
            yield from _walk_py(p)


def _text_corpus(name: str, root: Path, files: tuple[Path, ...]) -> Corpus:
    return Corpus(name, "text", root, files, _digest("text", root, files))


def _digest(kind: str, root: Path, files: tuple[Path, ...]) -> str:
    h = hashlib.sha256(f"{EXTRACTOR_VERSION}\0{kind}\0".encode())
    for path in files:
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def docstrings(source: bytes | str) -> list[str]:
    """Docstrings of a module and of every class and function in it, in ``ast.walk`` order,
    cleaned by ``ast.get_docstring`` (indentation removed). A file that does not parse gives []."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, kinds):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                out.append(doc.strip())
    return out


def reference_topics(source: bytes | str) -> list[str]:
    """The pages of ``pydoc_data/topics.py`` (``topics = {name: text}``), read with
    ``ast.literal_eval``; sorted by topic name."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "topics" for t in node.targets):
            try:
                topics = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [topics[k].strip() for k in sorted(topics) if isinstance(topics[k], str) and topics[k].strip()]
    return []


def _stdlib_documents(path: Path, root: Path) -> list[str]:
    source = path.read_bytes()
    if path.relative_to(root).as_posix() == "pydoc_data/topics.py":
        return reference_topics(source)
    return docstrings(source)


def paragraphs(path: Path) -> Iterator[str]:
    """Blank-line separated paragraphs of a UTF-8 text file (undecodable bytes replaced),
    read line by line so a large file is never held whole."""
    lines: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                lines.append(line.rstrip("\n"))
            elif lines:
                yield "\n".join(lines)
                lines = []
    if lines:
        yield "\n".join(lines)


# ----- packing text into model inputs ---------------------------------------------------------


def special_template(tokenizer) -> tuple[list[int], list[int]]:
    """Token ids the tokenizer puts before and after a single sequence ([CLS] / [SEP] for BERT,
    nothing for GPT-2), found by encoding a word with and without special tokens."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


def pack_tokens(documents: Iterator[str], tokenizer, body_len: int, max_tokens: int, sep: int | None) -> Iterator[list[int]]:
    """Token ids of the documents packed into bodies of ``body_len`` tokens (the last may be
    shorter), documents joined by ``sep``; stops after ``max_tokens`` text tokens."""
    stream: list[int] = []
    left = max_tokens
    docs = iter(documents)
    while left > 0:
        group = [d for _, d in zip(range(64), docs)]
        if not group:
            break
        for ids in tokenizer(group, add_special_tokens=False, verbose=False)["input_ids"]:
            if left <= 0:
                break
            stream.extend(ids[:left])
            left -= min(len(ids), left)
            if sep is not None and left > 0:
                stream.append(sep)
        while len(stream) >= body_len:
            yield stream[:body_len]
            del stream[:body_len]
    if stream:
        yield stream


def equal_length_groups(bodies: Iterator[list[int]], size: int) -> Iterator[list[list[int]]]:
    """Bodies in groups of up to ``size`` with equal length (only the corpus's last body is shorter)."""
    group: list[list[int]] = []
    for body in bodies:
        if group and (len(group) == size or len(body) != len(group[0])):
            yield group
            group = []
        group.append(body)
    if group:
        yield group
