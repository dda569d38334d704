"""Writing a report with a :class:`~radsight.nn.caption_decoder.CaptionDecoder`: greedy and beam search,
both one token per step against the decoder's key-value cache (``cached=False`` re-reads the whole
prefix every step instead: the reference the cache is checked and timed against).

Beam search keeps ``width`` running sequences per image ranked by their summed log-probability. A
sequence that writes the end token leaves the running set for the image's pool of finished ones, ranked
by score / length^alpha (``length_penalty`` alpha; length counts the written tokens with the end). A
plain sum (alpha 0) favours stopping early, since every further token lowers it: on the phantom reports
a beam of 3 then settles on "Normal chest." for most images. Alpha 1 ranks by the mean log-probability
per token. The search of an image stops once its pool holds ``width`` sequences and no running one ranks
above the worst of them at its present length; with ``width`` 1 it is exactly greedy decoding.
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


class _Finished:
    """One image's finished sequences: the ``width`` best by score / length^alpha."""

    def __init__(self, width: int, length_penalty: float) -> None:
        self.width, self.alpha = width, length_penalty
        self.kept: list[tuple[float, list[int]]] = []
        self.closed = False

    def ranked(self, score: float, length: int) -> float:
        return score / max(length, 1) ** self.alpha  # length 0: max_tokens 1 leaves only the begin token

    def add(self, sequence: list[int], score: float, length: int) -> None:
        self.kept.append((self.ranked(score, length), sequence))
        self.kept.sort(key=lambda kept: kept[0], reverse=True)
        del self.kept[self.width :]

    def close_if_settled(self, running: list[float], length: int) -> None:
        """Closed once ``width`` sequences have finished and no running beam ranks above the worst of
        them at its present length (the usual stopping rule; exact when alpha is 0)."""
        alive = [self.ranked(score, length) for score in running if score > float("-inf")]
        full = len(self.kept) == self.width
        self.closed = not alive or (full and max(alive) <= self.kept[-1][0])

    def best(self) -> list[int]:
        return self.kept[0][1]


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
    length_penalty: float = 1.0,
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
    offsets = torch.arange(batch, device=device)[:, None] * width
    pools = [_Finished(width, length_penalty) for _ in range(batch)]
    for length in range(1, _steps(decoder, max_tokens) + 1):
        logp = prefix.next_logits(tokens).float().log_softmax(dim=-1).view(batch, width, -1)
        vocab = logp.shape[-1]
        top, index = (scores[..., None] + logp).view(batch, -1).topk(min(2 * width, width * vocab), dim=-1)
        source, chosen = (index // vocab).tolist(), (index % vocab).tolist()
        keep_source = torch.zeros((batch, width), dtype=torch.long)
        keep_token = torch.full((batch, width), pad_id, dtype=torch.long)
        keep_score = torch.full((batch, width), float("-inf"))
        for image, pool in enumerate(pools):
            if pool.closed:
                continue
            kept = 0
            for rank, score in enumerate(top[image].tolist()):
                if score == float("-inf") or kept == width:
                    break
                beam, token = source[image][rank], chosen[image][rank]
                if token == eos_id:
                    if rank < width:  # an end only counts where it ranks among the beams kept
                        pool.add([*tokens[image * width + beam].tolist(), eos_id], score, length)
                    continue
                keep_source[image, kept], keep_token[image, kept] = beam, token
                keep_score[image, kept] = score
                kept += 1
            pool.close_if_settled(keep_score[image].tolist(), length)
        rows = (keep_source.to(device) + offsets).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), keep_token.to(device).view(-1, 1)], dim=1)
        prefix.reorder(rows)
        scores = keep_score.to(device)
        if all(pool.closed for pool in pools):
            break
    length = tokens.shape[1] - 1
    for image, pool in enumerate(pools):  # the steps ran out: unfinished beams compete too
        if not pool.closed:
            for beam, score in enumerate(scores[image].tolist()):
                if score > float("-inf"):
                    pool.add(tokens[image * width + beam].tolist(), score, length)
    best = [torch.tensor(pool.best(), dtype=torch.long) for pool in pools]
    return torch.nn.utils.rnn.pad_sequence(best, batch_first=True, padding_value=pad_id).to(device)
