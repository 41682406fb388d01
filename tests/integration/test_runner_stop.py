"""A runner that stops while another writer holds its model's lock (a rebuild holds it for minutes) does not wait
for it: its last position is a head start for the next runner, not worth holding a process's shutdown for."""

import threading

from infrastructure.bootstrap import Container


def test_stopping_a_runner_does_not_wait_for_a_rebuild_holding_the_models_lock(quiet_container: Container) -> None:
    view = quiet_container.members
    runner = quiet_container.runner(view.name)
    written = view.position()
    view.observe(written + 3)  # this process has seen further than it wrote: a stop would write that position
    with view.datastore.transaction(commit=False) as curs:
        view.lock(curs)  # as a rebuild does, for its whole replay
        stopping = threading.Thread(target=runner.stop, daemon=True)
        stopping.start()
        stopping.join(10)
        assert not stopping.is_alive(), "the stop waited for the model's lock"
        assert view.position() == written
    runner.flush()  # the lock is free again: the position is written as before
    assert view.position() == written + 3
    runner.rebuild()  # back to the store's content
