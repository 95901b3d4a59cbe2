"""Session-wide pytest hooks (the fixtures are in tests/conftest.py).

`make test` runs the unit tests, then every chapter notebook with nbval, then the
book build, which reuses the notebooks nbval has just executed (tests/test_book.py),
so each chapter is executed once per run.

`make test` runs on two processes (pytest-xdist, ``-n 2``). Work is handed out in indivisible
units by :class:`BookScheduling`: the chapters and the book build form one unit, in that order,
so the build finds the chapters' executions in its own process; each other notebook is a unit
(its cells share one kernel, in order); each test file is a unit (its module-wide fixtures,
some of which grade whole notebooks, run once). The largest units go first, so the chapters
start at once and the rest of the suite runs beside them.
"""

from __future__ import annotations

import os

import pytest

# the tests that build the book from the chapters' executions (marked book_build; a test checks the list)
BOOK_BUILD_TESTS = ("tests/test_book.py::test_book_builds_without_warnings",)


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: "book" (every chapter cell and the build), else its file."""
    path = nodeid.split("::", 1)[0]
    if nodeid in BOOK_BUILD_TESTS or (path.startswith("chapters/") and path.endswith(".ipynb")):
        return "book"
    return path


class _Scheduler:
    """Registered when pytest-xdist is installed (its hook does not exist otherwise)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config, log):
        from xdist.scheduler import LoadScopeScheduling

        class BookScheduling(LoadScopeScheduling):
            """xdist's scope scheduling (a unit's tests on one process, in order; the largest units first)
            with the units of :func:`scope_of`."""

            def _split_scope(self, nodeid: str) -> str:
                return scope_of(nodeid)

        return BookScheduling(config, log)


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_Scheduler(), "book-scheduler")
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        # Share the cores between the processes: two processes with two math threads each on two cores make
        # every parallel operation wait for a thread that is not running (seen here: chapter 12 at two threads
        # took 442 s beside other work, 39 s at one).
        import torch

        threads = max(1, (os.cpu_count() or 1) // int(worker.get("workercount", 1)))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for the processes a test starts (kernels, graders)


def pytest_collection_modifyitems(session, config, items):
    """Move the book build after everything else, so it can reuse nbval's executions."""
    last = [item for item in items if item.get_closest_marker("book_build")]
    rest = [item for item in items if not item.get_closest_marker("book_build")]
    items[:] = rest + last


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item: the book build checks that every cell of
    a chapter passed before it reuses nbval's outputs."""
    report = yield
    if not hasattr(item, "book_reports"):
        item.book_reports = []
    item.book_reports.append(report)
    return report
