"""Session-wide pytest hooks (the fixtures are in tests/conftest.py).

`make test` runs the unit tests, then every chapter notebook with nbval, then the
book build, which reuses the notebooks nbval has just executed (tests/test_book.py),
so each chapter is executed once per run.
"""

import pytest


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
