"""Depth that means depth: the order of the network chain when the stored order is not a forward chain.

A checkpoint stores modules in registration order, which need not be the forward order (an
``outputDense`` registered before ``dcmodel``; safetensors' sorted names put ``decoder`` before
``encoder``). The stored order is kept when consecutive weight layers chain by shape (each one's
input channels are the previous one's output channels; a Linear after a conv may take a flattened
multiple; a grouped conv a divisor). When they do not, the stored order is cut into its chaining runs,
and the runs are put in the one order in which every junction chains too; when no such order, or more
than one, exists, the stored order stays and a warning says that the shapes do not chain.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

MAX_RUNS = 7
"""Runs ordered by trying every permutation (7! = 5040 checks at most); more stay in stored order."""


@dataclass(frozen=True)
class Link:
    """A weight layer of the chain: its key, kind and stored shape."""

    key: str
    name: str
    kind: str
    shape: tuple[int, ...]
    sure: bool = True
    """Whether the kind is known: a conv without SN may be a ConvTranspose (its weight stored (in, out, ...))
    that nothing in the file tells apart, so both readings are allowed."""

    def readings(self) -> list[tuple[int, int, bool]]:
        """(in, out, transposed) channels (features) of the layer as a map, for each possible reading."""
        forward = (self.shape[1], self.shape[0], False)
        transposed = (self.shape[0], self.shape[1], True)
        if self.kind.startswith("conv_transpose"):
            return [transposed]
        return [forward] if self.sure or not self.kind.startswith("conv") else [forward, transposed]


def chains(a: Link, b: Link) -> bool:
    """Whether ``b`` can take ``a``'s output (in some reading of each): equal channels; a Linear after a
    conv taking the flattened map, or a conv after a Linear taking its unflattened output (a
    multiple); a grouped conv (``a``'s channels a multiple of ``b``'s input per group, the group count
    dividing ``b``'s outputs)."""
    return any(_chains(a.kind, out, b.kind, n_in, n_out, transposed)
               for _, out, _ in a.readings() for n_in, n_out, transposed in b.readings())


def _chains(a_kind: str, out: int, b_kind: str, n_in: int, n_out: int, transposed: bool) -> bool:
    if n_in == out:
        return True
    a_conv, b_conv = a_kind.startswith("conv"), b_kind.startswith("conv")
    if (b_kind == "linear" and a_conv and n_in % out == 0) or (a_kind == "linear" and b_conv and out % n_in == 0):
        return True
    if b_conv and not transposed and out % n_in == 0:
        return n_out % (out // n_in) == 0
    return False


@dataclass(frozen=True)
class Order:
    """The chain's order: ``keys`` reordered (None: the stored order stands) and what to tell the reader."""

    keys: tuple[str, ...] | None
    warning: str | None = None


def chain_order(links: Sequence[Link]) -> Order:
    """The stored order when it chains; else the unique order of its chaining runs; else the stored
    order with a warning naming the first junction that does not chain."""
    breaks = [i for i in range(1, len(links)) if not chains(links[i - 1], links[i])]
    if not breaks:
        return Order(None)
    first = links[breaks[0] - 1], links[breaks[0]]
    where = (f"{first[0].name} ({_text(first[0])}) is followed by {first[1].name} ({_text(first[1])})")
    runs = [list(links[a:b]) for a, b in zip([0, *breaks], [*breaks, len(links)], strict=True)]
    if len(runs) <= MAX_RUNS:
        found = [p for p in itertools.permutations(range(len(runs)))
                 if all(chains(runs[p[i - 1]][-1], runs[p[i]][0]) for i in range(1, len(p)))]
        if len(found) == 1:
            return Order(tuple(link.key for i in found[0] for link in runs[i]))
    return Order(None, f"the stored order is not a forward chain by shape ({where}) and no single order of "
                       "the layers chains: the network chain, its bound and the depth figure follow the "
                       "stored order")


def positions(stored: Sequence[str], order: Sequence[str]) -> dict[str, int]:
    """Every key of ``stored`` at its place when the chain's keys follow ``order``: a key that is not in
    the chain (a BatchNorm, an embedding) moves with the chain key stored before it (the first one when
    none is)."""
    in_chain = set(order)
    owner: dict[str, str] = {}
    current = next(k for k in stored if k in in_chain)  # Precondition: ``order`` is not empty
    for key in stored:
        if key in in_chain:
            current = key
        owner[key] = current
    rank = {key: i for i, key in enumerate(order)}
    place = {key: i for i, key in enumerate(stored)}

    def sort_key(key: str) -> tuple[int, int, int]:
        head = owner[key]  # leading keys (stored before any chain key) go just before their owner
        return rank[head], (place[key] > place[head]) - (place[key] < place[head]), place[key]

    return {key: i for i, key in enumerate(sorted(stored, key=sort_key))}


def _text(link: Link) -> str:
    n_in, n_out, _ = link.readings()[0]
    return f"{n_in}→{n_out}"

