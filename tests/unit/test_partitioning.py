"""The relay's partition for a key is the one every Kafka client gives it."""

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import partitioning


@given(st.binary(max_size=200))
def test_murmur2_is_kafkas(key: bytes) -> None:
    assert partitioning.murmur2(key) == murmur2(key)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_a_key_goes_where_aiokafka_puts_it(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partitioning.partition_of(key, partitions) == DefaultPartitioner()(
        key, partitions, partitions)


def test_known_values_from_kafkas_java_client() -> None:
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2, as unsigned 32-bit values.
    assert partitioning.murmur2(b"21") & 0xFFFFFFFF == (-973932308) & 0xFFFFFFFF
    assert partitioning.murmur2(b"foobar") & 0xFFFFFFFF == (-790332482) & 0xFFFFFFFF
    assert partitioning.murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == (
        -985981536) & 0xFFFFFFFF


def test_a_record_without_key_goes_to_some_partition() -> None:
    assert partitioning.partition_of(None, [0, 1, 2]) in {0, 1, 2}


@given(st.lists(st.binary(max_size=40), max_size=80),
       st.lists(st.binary(min_size=36, max_size=36), min_size=16, max_size=40))
def test_many_keys_hash_as_each_alone(mixed: list[bytes], same_length: list[bytes]) -> None:
    # Mixed lengths (mostly hashed one by one) and a column of one length (numpy).
    keys = mixed + same_length + [b"x" * 39] * 20 + [b"y" * 41] * 20 + [b""] * 17
    assert partitioning.murmur2_many(keys) == [murmur2(k) for k in keys]


def test_many_known_values_from_kafkas_java_client() -> None:
    keys = [b"21", b"foobar", b"a-little-bit-long-string"] * 20
    assert partitioning.murmur2_many(keys)[:3] == [
        v & 0xFFFFFFFF for v in (-973932308, -790332482, -985981536)]
