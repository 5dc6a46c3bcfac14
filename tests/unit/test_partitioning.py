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
