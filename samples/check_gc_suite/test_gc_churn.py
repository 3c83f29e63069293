"""A pure-Python test suite with heavy garbage-collector pressure and big builtin calls.

`gilscope check` must pass it: every long GIL hold here is CPython's own work (full
collections over many objects, `sorted` over millions of items), not an extension's. The
collections are long on purpose (hundreds of thousands of tracked objects that survive, so
every full collection walks them all) and start both explicitly and from allocation.
"""

import gc
import random


class Node:
    def __init__(self, parent=None):
        self.parent = parent
        self.children = []
        if parent is not None:
            parent.children.append(self)


def make_cycles(n):
    """n two-object reference cycles: garbage only the cycle collector can free."""
    for _ in range(n):
        a = Node()
        Node(a)


# Long-lived tracked objects: every full collection has to traverse all of them.
KEEP = [Node() for _ in range(200_000)]


def test_full_collections():
    for _ in range(4):
        make_cycles(20_000)
        gc.collect()


def test_allocation_triggered_collections():
    # Collections started by the allocator, not by gc.collect().
    gc.set_threshold(700, 10, 10)
    for _ in range(10):
        make_cycles(50_000)


def test_big_sorted():
    rng = random.Random(1)
    data = [rng.random() for _ in range(600_000)]
    assert sorted(data)[0] == min(data)


def test_big_builtin_calls():
    words = [str(i) for i in range(600_000)]
    assert len(" ".join(words)) > 0
    assert sum(range(8_000_000)) > 0
