"""Which partition a record's key goes to: Kafka's own rule, murmur2 of the key's bytes.

Every Kafka client (Java's, librdkafka's `murmur2_random`, aiokafka's) puts a key on
`(murmur2(key) & 0x7fffffff) % partitions`, so a key keeps its partition whoever
publishes it. aiokafka's murmur2 reads the key a byte at a time in Python; the relay
works out a partition per outbox row, so this one reads it a word at a time. Tested
against aiokafka's on random keys.
"""

from __future__ import annotations

import random
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 as Kafka's Java client computes it (`Utils.murmur2`), unsigned."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        rest = data[words * 4:]
        if tail >= 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h = ((h ^ rest[0]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_of(key: bytes | None, partitions: list[int]) -> int:
    """The partition (of the topic's sorted partition ids) a key goes to; any, without one."""
    if key is None:
        return random.choice(partitions)  # spreading load, not a secret
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
