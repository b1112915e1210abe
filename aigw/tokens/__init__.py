"""Token counting: exact offline tiktoken counts for OpenAI models, declared estimates otherwise."""
from .counting import (
    Count,
    Tokenizer,
    count_chat,
    count_completion_text,
    count_embeddings,
    count_text,
    normalize_model,
    tokenizer_for,
)
from .encodings import TokenizerDataError, build_encoding, get_encoding

__all__ = [
    "Count", "Tokenizer", "TokenizerDataError", "build_encoding", "count_chat",
    "count_completion_text", "count_embeddings", "count_text", "get_encoding",
    "normalize_model", "tokenizer_for",
]
