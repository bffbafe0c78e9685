"""agent.deps.Handles: the store handles one answer's tools query on. A call takes the answer's own handle
when it is free, else an idle handle of the server's pool for that one call, else waits for its own."""

from __future__ import annotations

import threading
import time

from agent.deps import Handles
from store import Store, StorePool


def test_a_second_call_takes_an_idle_spare_and_gives_it_back(root_store: Store) -> None:
    pool = StorePool(root_store, 1)
    handles = Handles(root_store, pool)
    try:
        with handles.borrow() as first, handles.borrow() as second:
            assert first is root_store
            assert second is not root_store and second.database == root_store.database
            assert second.query("SELECT 1").scalar() == 1
        assert pool.acquire(timeout=0) is second  # free again for another request
        pool.release(second)
    finally:
        pool.close()


def test_with_no_idle_spare_a_call_waits_for_its_own_handle(root_store: Store) -> None:
    pool = StorePool(root_store, 1)
    handles = Handles(root_store, pool)
    other_request = pool.acquire(timeout=0)  # another request holds the pool's only handle
    got: list[Store] = []

    def call() -> None:
        with handles.borrow() as store:
            got.append(store)

    try:
        with handles.borrow() as own:
            waiter = threading.Thread(target=call)
            waiter.start()
            waiter.join(timeout=0.5)
            assert waiter.is_alive() and not got, "it took a handle that another call or request holds"
        waiter.join(timeout=30)
        assert got == [own]
    finally:
        pool.release(other_request)
        pool.close()


def test_two_handles_run_their_queries_at_the_same_time(root_store: Store) -> None:
    """Two calls of one step take no longer than the slower of them, not their sum."""
    pool = StorePool(root_store, 1)
    handles = Handles(root_store, pool)
    both_in = threading.Barrier(2, timeout=30)

    def call() -> None:
        with handles.borrow() as store:
            both_in.wait()  # each thread holds a handle of its own before either query starts
            store.query("SELECT sleep(1)")

    try:
        threads = [threading.Thread(target=call) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.perf_counter() - t0
    finally:
        pool.close()
    assert 1.0 <= elapsed < 1.9, f"two 1 s queries on two handles took {elapsed:.2f} s"
