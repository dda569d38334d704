"""Writing a report with a :class:`~radsight.nn.caption_decoder.CaptionDecoder`: greedy and beam search,
both one token per step against the decoder's key-value cache (``cached=False`` re-reads the whole
prefix every step instead: the reference the cache is checked and timed against).

Beam search keeps ``width`` sequences per image ranked by their summed log-probability; a finished one
(it wrote the end token) stays in the ranking at its score, extended by padding at no cost, and the
search stops once every kept sequence has finished, since extending a sequence can only lower its score.
With ``width`` 1 it is exactly greedy decoding. ``length_penalty`` alpha ranks the finished sequences by
score / length^alpha at the end (0: the plain sum).
"""

from __future__ import annotations

import torch
from torch import Tensor

from radsight.nn.caption_decoder import CaptionDecoder, KVCache


class _Prefix:
    """Next-token logits of growing prefixes, through the cache or by re-reading the prefix."""

    def __init__(self, decoder: CaptionDecoder, memory: Tensor, cached: bool) -> None:
        self.decoder, self.memory = decoder, memory
        self.cache: KVCache | None = decoder.start(memory) if cached else None

    def next_logits(self, tokens: Tensor) -> Tensor:
        if self.cache is not None:
            return self.decoder.step(tokens[:, -1], self.cache)
        return self.decoder(self.memory, tokens)[:, -1]

    def reorder(self, rows: Tensor) -> None:
        self.memory = self.memory.index_select(0, rows)
        if self.cache is not None:
            self.cache.reorder(rows)


def _steps(decoder: CaptionDecoder, max_tokens: int | None) -> int:
    return min(max_tokens or decoder.max_tokens, decoder.max_tokens) - 1


@torch.no_grad()
def greedy(
    decoder: CaptionDecoder,
    memory: Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    *,
    max_tokens: int | None = None,
    cached: bool = True,
) -> Tensor:
    """B x L token ids (begin token first), the most likely token at each step; padding after an end."""
    rows = memory.shape[0]
    tokens = torch.full((rows, 1), bos_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(rows, dtype=torch.bool, device=memory.device)
    prefix = _Prefix(decoder, memory, cached)
    for _ in range(_steps(decoder, max_tokens)):
        chosen = prefix.next_logits(tokens).argmax(dim=-1)
        chosen = torch.where(done, torch.full_like(chosen, pad_id), chosen)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        done |= chosen == eos_id
        if bool(done.all()):
            break
    return tokens


@torch.no_grad()
def beam_search(
    decoder: CaptionDecoder,
    memory: Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    *,
    width: int = 3,
    max_tokens: int | None = None,
    length_penalty: float = 0.0,
    cached: bool = True,
) -> Tensor:
    """B x L token ids of each image's best sequence among ``width`` beams (see the module's notes)."""
    if width < 1:
        raise ValueError(f"beam width must be at least 1, got {width}")
    batch, device = memory.shape[0], memory.device
    beams = torch.arange(batch, device=device).repeat_interleave(width)
    prefix = _Prefix(decoder, memory.index_select(0, beams), cached)
    tokens = torch.full((batch * width, 1), bos_id, dtype=torch.long, device=device)
    scores = torch.full((batch, width), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the beams start identical: only the first may expand
    done = torch.zeros((batch, width), dtype=torch.bool, device=device)
    lengths = torch.ones((batch, width), device=device)
    offsets = torch.arange(batch, device=device)[:, None] * width
    for _ in range(_steps(decoder, max_tokens)):
        logp = prefix.next_logits(tokens).float().log_softmax(dim=-1).view(batch, width, -1)
        vocab = logp.shape[-1]
        padded = torch.full((vocab,), float("-inf"), device=device)
        padded[pad_id] = 0.0
        logp = torch.where(done[..., None], padded, logp)
        best, index = (scores[..., None] + logp).view(batch, -1).topk(width, dim=-1)
        source, chosen = index // vocab, index % vocab
        rows = (source + offsets).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), chosen.view(-1, 1)], dim=1)
        prefix.reorder(rows)
        was_done = done.gather(1, source)
        lengths = lengths.gather(1, source) + (~was_done).float()
        done, scores = was_done | (chosen == eos_id), best
        if bool(done.all()):
            break
    ranked = scores / lengths**length_penalty if length_penalty else scores
    pick = ranked.argmax(dim=1) + offsets[:, 0]
    return tokens.index_select(0, pick)
