"""The one check of a seed, wherever upo takes one: config files, every `--seed` flag and
`upo.generate(seed=...)`. Standard library only, so that the command line can use it before
numpy and torch are imported."""

from __future__ import annotations

from .errors import UpoError

# torch's generators take at most 2**64 - 1 and numpy's refuse negatives. Most callers derive
# further seeds as `seed + k` for small k (validation streams, pass@N samples): below 2**63
# leaves room for those offsets. `upo data make` and `upo demo` use the seed as it is.
SEED_LIMIT = 2**63
FULL_SEED_LIMIT = 2**64


class SeedError(UpoError, ValueError):
    """A seed out of range: a UpoError for the command line (one line), a ValueError for Python
    callers and for the config loader (which adds the file's name)."""


class SeedTypeError(UpoError, TypeError):
    """A seed that is not a whole number (a float, a string, a bool)."""


def check_seed(seed, name: str = "seed", limit: int = SEED_LIMIT) -> int:
    """`seed` as an int once every random generator upo seeds from it accepts it; SeedError
    naming `name` (e.g. "--seed", "seed") otherwise, before any work has started."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise SeedTypeError(
            f"{name} must be a whole number, got {type(seed).__name__} {seed!r:.40}"
        )
    seed = seed.__index__()  # numpy integers too
    if not 0 <= seed < limit:
        shown = seed if abs(seed) < 10**30 else f"{str(seed)[:20]}..."
        bits = limit.bit_length() - 1
        raise SeedError(f"{name} {shown}: must be a whole number from 0 to 2**{bits} - 1")
    return seed
