"""Queue order, counters and history paging follow ComfyUI (PROTOCOL §4.3, §4.5, §8)."""

from __future__ import annotations

import pytest

from sakuga.engine.queue import PromptQueue, QueueItem


def item(prompt_id: str, number: float) -> QueueItem:
    return QueueItem(number, prompt_id, {}, {"create_time": 1}, ["1"])


@pytest.mark.timeout(5)
async def test_heap_order_number_then_front() -> None:
    changes: list[int] = []
    queue = PromptQueue(lambda: changes.append(1))
    numbers = {"A": queue.next_number(False), "B": queue.next_number(False)}
    numbers["C"] = queue.next_number(True)
    numbers["D"] = queue.next_number(False)
    numbers["E"] = -100.0
    numbers["F"] = queue.next_number(True)
    assert numbers == {"A": 0, "B": 1, "C": -2, "D": 3, "E": -100.0, "F": -4}
    for prompt_id, number in numbers.items():
        queue.put(item(prompt_id, number))
    order = []
    while queue.pending:
        taken = await queue.get()
        order.append(taken.prompt_id)
        queue.task_done(taken, {"status": {}})
    assert order == ["E", "F", "C", "A", "B", "D"]
    assert len(changes) == 6 * 3
    assert queue.remaining == 0


async def test_delete_and_clear_touch_pending_only_with_one_status_each() -> None:
    changes: list[int] = []
    queue = PromptQueue(lambda: changes.append(1))
    for name, number in (("A", 0), ("B", 1), ("C", 2)):
        queue.put(item(name, number))
    running = await queue.get()
    changes.clear()
    queue.delete(["A", "B", "nope"])
    assert [i.prompt_id for i in queue.pending] == ["C"] and queue.running is running
    assert len(changes) == 1
    queue.clear()
    queue.clear()
    assert queue.pending == [] and len(changes) == 2
    assert [running.as_list()] == [[0, "A", {}, {"create_time": 1}, ["1"]]]


def test_history_paging_is_oldest_first_and_max_items_gives_the_last() -> None:
    queue = PromptQueue(lambda: None)
    for index in range(5):
        queue.task_done(item(f"p{index}", index), {"n": index})
    assert list(queue.history_items(2, -1)) == ["p3", "p4"]
    assert list(queue.history_items(2, 1)) == ["p1", "p2"]
    assert list(queue.history_items(None, -1)) == ["p0", "p1", "p2", "p3", "p4"]
    queue.delete_history(["p0", "missing"])
    assert "p0" not in queue.history
    queue.clear_history()
    assert queue.history == {}
