"""Tokenizers. The default is raw bytes: 256 symbols, one token per byte, so the loss in
bits per token is exactly bits per byte and no vocabulary has to be trained or downloaded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ByteTokenizer:
    """Identity over bytes: token i is the byte with value i."""

    name: str = "bytes"
    vocab_size: int = 256

    def encode(self, data: bytes) -> bytes:
        return bytes(data)

    def decode(self, tokens: bytes) -> bytes:
        return bytes(tokens)

    def bytes_per_token(self, token: int) -> int:
        return 1
