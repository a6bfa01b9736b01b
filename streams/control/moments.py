"""Embedding moments in fixed point, summed a whole vector at a time.

A window sums, per dimension, ``n * f`` and ``n * (v + (f * f + 2**63) >> 64)``, where ``f`` and
``v`` are a sketch's mean and variance in units of 2**-64, rounded half to even as ``round()``
does (see ``aggregate``). With Python integers that costs about 150 µs for a 384-dimension
sketch, most of the drift path. In the common case (every ``|mean| < 1`` and ``variance < 1``,
as for normalised embeddings) each ``f`` and ``v`` fits 64 bits, so numpy computes them and the
rounded square exactly in uint64 words. A sketch's contribution is then packed into one Python
integer, two :data:`SLOT_BITS` slots per dimension, and one multiplication and one addition
add it to the window's; the vectors are unpacked once, when the window is read. The integers
are the same as the per-value reference in ``aggregate`` gives: the tests hold the two to that,
the rounding edges included.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

SLOT_BITS = 128
"""Bits of one sum in the packed integer (two slots a dimension, its mean's and its square's).

A sketch adds below 2**65 per sample to a slot, so a slot holds 2**63 samples; past that the
window unpacks and starts over (:meth:`PackedMoments.room`)."""
_MAX_SAMPLES = 1 << (SLOT_BITS - 65)
_OFFSET = 1 << 64  # added to each signed mean so that every slot stays non-negative
_TWO63 = np.uint64(1 << 63)
_LOW31 = np.uint64((1 << 31) - 1)
_LOW32 = np.uint64((1 << 32) - 1)


def _fixed(x: FloatArray) -> npt.NDArray[np.uint64]:
    # round(ldexp(x, 64)) for x in [0, 1): scaling by a power of two is exact for the normal
    # floats the contract admits, and rint rounds half to even, as round() does.
    return np.rint(np.ldexp(x, 64)).astype(np.uint64)


def _square(f: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``(f * f + 2**63) >> 64`` for ``f < 2**64``, from 32-bit halves with explicit carries."""
    hi, lo = f >> np.uint64(32), f & _LOW32
    cross = hi * lo  # < 2**64; f*f = hi*hi*2**64 + cross*2**33 + lo*lo
    a = (cross & _LOW31) << np.uint64(33)
    low = a + lo * lo
    carry = (low < a).astype(np.uint64)
    rounded = low + _TWO63
    carry += rounded < low
    square: npt.NDArray[np.uint64] = hi * hi + (cross >> np.uint64(31)) + carry
    return square


def _pack(columns: tuple[npt.NDArray[np.uint64], ...]) -> int:
    words = np.empty((columns[0].size, len(columns)), dtype="<u8")
    for i, column in enumerate(columns):
        words[:, i] = column
    return int.from_bytes(words.tobytes(), "little")


def _unpack(value: int, dim: int) -> tuple[list[int], list[int]]:
    raw = np.frombuffer(value.to_bytes(dim * 4 * 8, "little"), dtype="<u8")
    rows = raw.reshape(dim, 4).tolist()
    return [a | b << 64 for a, b, _, _ in rows], [c | d << 64 for _, _, c, d in rows]


class PackedMoments:
    """Pending sums of a window's sketches, each a single integer of ``dim`` slots."""

    __slots__ = ("_packed", "dim", "samples")

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.samples = 0
        self._packed = 0

    def room(self, n: int) -> bool:
        """Whether ``n`` more samples keep every slot below its :data:`SLOT_BITS`."""
        return self.samples + n < _MAX_SAMPLES

    def add(self, n: int, means: FloatArray, variances: FloatArray) -> None:
        """Add a sketch of ``n`` samples: ``dim`` means in (-1, 1), variances in [0, 1)."""
        negative = means < 0
        f = _fixed(np.abs(means))
        # mean + 2**64 in two words: 2**64 - f below for a negative mean, f and a one above it.
        low = np.where(negative, -f, f)
        high = (~(negative & (f != 0))).astype(np.uint64)
        v = _fixed(variances)
        square = v + _square(f)  # < 2**65: its carry is the high word
        carry = (square < v).astype(np.uint64)
        self._packed += n * _pack((low, high, square, carry))
        self.samples += n

    def vectors(self) -> tuple[list[int], list[int]]:
        """The sums of ``n * f`` and of ``n * (v + rounded f * f)`` added so far, per dimension."""
        offset = self.samples * _OFFSET
        sums, squares = _unpack(self._packed, self.dim)
        return [s - offset for s in sums], squares
