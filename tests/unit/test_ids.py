"""Event and row ids: random version 4 UUIDs, unique, and never shared with a forked child."""

from __future__ import annotations

import os
import threading
import uuid

from shared.contracts import new_id


def test_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_id() for _ in range(20_000)]  # many refills of the random pool
    assert len(set(ids)) == len(ids)
    for text in ids[:: 97]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_threads_draw_their_own_ids() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=draw, args=(d,)) for d in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for d in drawn for i in d]
    assert len(set(every)) == len(every)


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    new_id()  # the parent's pool is filled and part-used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids and leave at once
        os.write(write, ",".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = set(os.read(read, 4096).decode().split(","))
    os.close(read)
    os.close(write)
    parent = {new_id() for _ in range(3)}
    assert len(child) == 3 and not child & parent
