"""A small transformer decoder that writes a report token by token while attending to image features
(VirTex-style: the encoder's spatial feature map, projected to the decoder width, is the memory).

Pre-norm layers of causal self-attention, cross-attention to the image and a feed-forward block, with
learnt positions and the output projection tied to the token embedding. Teacher forcing reads a whole
sequence at once (:meth:`CaptionDecoder.forward`); writing reads one token per call
(:meth:`CaptionDecoder.step`) against a :class:`KVCache` holding every layer's keys and values of the
tokens so far and of the image, so each new token costs one position of attention instead of the whole
prefix again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class KVCache:
    """Per layer: self-attention keys/values of the tokens written so far (B x heads x t x d), and the
    cross-attention keys/values of the image (computed once)."""

    self_keys: list[Tensor | None]
    self_values: list[Tensor | None]
    image_keys: list[Tensor]
    image_values: list[Tensor]
    length: int = 0

    def reorder(self, rows: Tensor) -> None:
        """Keep rows ``rows`` (in that order) of every cached tensor: beam search follows its beams."""
        for cached in (self.self_keys, self.self_values, self.image_keys, self.image_values):
            for k, tensor in enumerate(cached):
                if tensor is not None:
                    cached[k] = tensor.index_select(0, rows)


class Attention(nn.Module):
    """Multi-head attention through ``scaled_dot_product_attention``, its projections split so that
    keys and values can be computed once and cached."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} is not divisible by its {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def split(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        keys, values = self.key_value(x).chunk(2, dim=-1)
        return self.split(keys), self.split(values)

    def attend(self, x: Tensor, keys: Tensor, values: Tensor, causal: bool) -> Tensor:
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            self.split(self.query(x)), keys, values, dropout_p=dropout, is_causal=causal
        )
        return self.out(out.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_self, self.norm_image, self.norm_ff = (
            nn.LayerNorm(width),
            nn.LayerNorm(width),
            nn.LayerNorm(width),
        )
        self.self_attention = Attention(width, heads, dropout)
        self.image_attention = Attention(width, heads, dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, self_kv: tuple[Tensor, Tensor], image_kv: tuple[Tensor, Tensor], causal: bool
    ) -> Tensor:
        x = x + self.drop(self.self_attention.attend(self.norm_self(x), *self_kv, causal=causal))
        x = x + self.drop(self.image_attention.attend(self.norm_image(x), *image_kv, causal=False))
        return x + self.drop(self.feed_forward(self.norm_ff(x)))


class CaptionDecoder(nn.Module):
    """Image features (B x C x h x w) and report tokens (B x L) to next-token logits (B x L x vocab)."""

    def __init__(
        self,
        feature_dim: int,
        vocab_size: int,
        *,
        width: int = 512,
        heads: int = 8,
        layers: int = 1,
        max_tokens: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.project = nn.Sequential(nn.Linear(feature_dim, width), nn.LayerNorm(width))
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(max_tokens, width)
        self.layers = nn.ModuleList(DecoderLayer(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)

    def memory(self, features: Tensor) -> Tensor:
        """The encoder's B x C x h x w map as B x (h*w) x width positions to attend to."""
        return self.project(features.flatten(2).transpose(1, 2))

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        if start + tokens.shape[1] > self.max_tokens:
            raise ValueError(
                f"the decoder reads at most {self.max_tokens} tokens, not {start + tokens.shape[1]}"
            )
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        return self.drop(self.embed(tokens) + self.position(positions))

    def _logits(self, x: Tensor) -> Tensor:
        return self.norm(x) @ self.embed.weight.T

    def forward(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """Teacher forcing: logits at every position, each seeing only the tokens up to itself. Padding
        sits after a sequence's end, so no real position attends to it."""
        x = self._embed(tokens, 0)
        for layer in self.layers:
            image_kv = layer.image_attention.keys_values(memory)
            x = layer(x, layer.self_attention.keys_values(layer.norm_self(x)), image_kv, causal=True)
        return self._logits(x)

    def start(self, memory: Tensor) -> KVCache:
        """An empty cache for writing about ``memory`` (its image keys and values computed once)."""
        image = [layer.image_attention.keys_values(memory) for layer in self.layers]
        none: list[Tensor | None] = [None] * len(self.layers)
        return KVCache(list(none), list(none), [k for k, _ in image], [v for _, v in image])

    def step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """Logits (B x vocab) of the token after ``tokens`` (B, the latest token of each row), adding its
        keys and values to ``cache``."""
        x = self._embed(tokens[:, None], cache.length)
        for k, layer in enumerate(self.layers):
            keys, values = layer.self_attention.keys_values(layer.norm_self(x))
            if cache.self_keys[k] is not None:
                keys = torch.cat([cache.self_keys[k], keys], dim=2)
                values = torch.cat([cache.self_values[k], values], dim=2)
            cache.self_keys[k], cache.self_values[k] = keys, values
            x = layer(x, (keys, values), (cache.image_keys[k], cache.image_values[k]), causal=False)
        cache.length += 1
        return self._logits(x)[:, 0]
