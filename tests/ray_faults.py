"""A Ray worker setup hook for tests/test_sweep.py: the first job, on any worker, that writes
a results shard then kills its own worker process (exit 137, as an OOM kill would), so the test
can check that Ray retries the job and the table still comes out whole. crystallab itself has no
test hook; this patches the store from outside, in the worker only."""

from __future__ import annotations

import os

MARKER_ENV = "CRYSTALLAB_TEST_KILL_MARKER"  # a file that does not exist yet: created by the one kill


def kill_after_first_shard() -> None:
    marker = os.environ.get(MARKER_ENV)
    if not marker:
        return
    from crystallab.store import ResultStore

    write = ResultStore.write_rows

    def write_then_die(self, rows, samples=None):  # type: ignore[no-untyped-def]
        write(self, rows, samples)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(137)

    ResultStore.write_rows = write_then_die  # type: ignore[method-assign]
