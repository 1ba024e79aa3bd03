"""Seed counts, ranges (``--seeds 4-7``) and shards (``--shard K/N``: every N-th seed from the K-th), as
plain functions of the standard library: the study splits its seeds with them, and the report names
the seeds a saved study lacks with the same rules.
"""

from __future__ import annotations

import re

from bnprobe.errors import BnprobeError

SEED_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_seeds(seeds: int | str, first_seed: int = 0) -> tuple[int, int]:
    """``(first_seed, count)`` of ``seeds``: a count (``4``, seeds ``first_seed`` on) or a range ``"4-7"``."""
    if isinstance(seeds, str):
        match = SEED_RANGE.match(seeds)
        if match and first_seed:
            raise BnprobeError(f"seeds {seeds!r} is a range and first_seed is {first_seed}; give one of them")
        if match:
            first, last = int(match[1]), int(match[2])
            if last < first:
                raise BnprobeError(f"seeds {seeds!r}: the range ends before it starts; write FIRST-LAST, e.g. 4-7")
            return first, last - first + 1
        if not seeds.strip().isdigit():
            raise BnprobeError(f"seeds {seeds!r}: give a count (4: seeds 0-3) or a range (4-7)")
        seeds = int(seeds)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise BnprobeError(f"seeds must be at least 1, got {seeds!r}")
    if not isinstance(first_seed, int) or first_seed < 0:
        raise BnprobeError(f"first_seed must be 0 or more, got {first_seed!r}")
    return first_seed, seeds


def parse_shard(shard: str) -> tuple[int, int]:
    """``(K, N)`` of ``"K/N"``, 1 <= K <= N."""
    match = SHARD.match(str(shard))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise BnprobeError(f"shard {shard!r}: write K/N with 1 <= K <= N, e.g. 2/4 (the second of four parts)")
    return int(match[1]), int(match[2])


def shard_seeds(seeds: list[int], shard: str) -> list[int]:
    """The seeds of shard ``K/N``: every N-th of ``seeds`` from the K-th (each seed's runs stay together,
    so the ``bn`` reference of a seed is in the same shard)."""
    k, n = parse_shard(shard)
    part = seeds[k - 1::n]
    if not part:
        raise BnprobeError(f"shard {shard} has no seeds: the study has {len(seeds)} ({describe_seeds(seeds)}); "
                           f"use at most {len(seeds)} shards")
    return part


def describe_seeds(seeds: list[int]) -> str:
    """``0-3`` for consecutive seeds, else ``0, 2, 4``."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))
