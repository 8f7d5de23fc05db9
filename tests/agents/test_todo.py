"""agents/todo.py: the watcher's durable to-do and its reader."""
import json
import os

from netoffload.agents import todo


def fail(todo_list, ref, now, wall=1000.0, error="cannot reach xapi"):
    todo_list.failed(ref, "VIF", "uuid-" + ref, "vm/vif0", error, now, wall)


def test_a_failed_object_is_due_after_a_doubling_backoff(tmp_path):
    items = todo.TodoList(str(tmp_path))
    fail(items, "r1", now=10.0)
    assert items.due(10.5) == [] and items.next_due() == 11.0
    assert items.due(11.0) == ["r1"]
    assert "r1" in items and items.next_due() is None  # stays until done
    fail(items, "r1", now=11.0)
    assert items.next_due() == 13.0
    assert [todo.retry_delay(n) for n in (1, 2, 3, 7, 8, 30)] == \
        [1.0, 2.0, 4.0, 60.0, 60.0, 60.0]


def test_done_takes_it_off_and_only_changes_mark_the_file(tmp_path):
    items = todo.TodoList(str(tmp_path))
    items.done(["never-there"])
    assert not items.changed and not items.save()
    assert not os.path.exists(todo.todo_path(str(tmp_path)))
    fail(items, "r1", now=1.0)
    assert items.save() and not items.changed
    items.done(["r1"])
    assert items.changed and items.save()
    assert todo.read_todo(str(tmp_path)) == todo.Todo(0, [])


def test_the_file_survives_a_restart_and_keeps_since_and_attempts(tmp_path):
    items = todo.TodoList(str(tmp_path))
    fail(items, "r2", now=1.0, wall=2000.0)
    fail(items, "r1", now=1.0, wall=1000.0)
    fail(items, "r1", now=2.0, wall=1500.0, error="SESSION_INVALID")
    items.save()
    assert oct(os.stat(todo.todo_path(str(tmp_path))).st_mode & 0o777) == "0o600"
    seen = todo.read_todo(str(tmp_path))
    assert seen.count == 2
    first = seen.entries[0]  # oldest first
    assert (first.ref, first.cls, first.uuid, first.since, first.attempts,
            first.error) == ("r1", "VIF", "uuid-r1", 1000.0, 2,
                             "SESSION_INVALID")
    again = todo.TodoList(str(tmp_path))
    assert again.load(now=50.0) == 2
    assert sorted(again.due(50.0)) == ["r1", "r2"]  # all due at start
    fail(again, "r1", now=50.0, wall=3000.0)
    assert again.entries["r1"].attempts == 3 and \
        again.entries["r1"].since == 1000.0


def test_no_file_and_a_broken_file_read_as_empty(tmp_path):
    assert todo.read_todo(str(tmp_path / "none")) == todo.Todo(0, [])
    path = todo.todo_path(str(tmp_path))
    for text in ("{not json", "[]", json.dumps({"objects": {"r": "x"}})):
        with open(path, "w") as handle:
            handle.write(text)
        assert todo.read_todo(str(tmp_path)).count == 0
        assert todo.TodoList(str(tmp_path)).load(now=0.0) == 0


def test_an_unreadable_file_reads_as_empty(tmp_path):
    os.mkdir(todo.todo_path(str(tmp_path)))  # EISDIR on open
    assert todo.read_todo(str(tmp_path)) == todo.Todo(0, [])
