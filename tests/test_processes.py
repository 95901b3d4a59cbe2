"""A notebook kernel that started worker processes must still shut down by itself (book._processes)."""

import sys

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

# a forkserver start, as book.distributed.launch and book.practice.run_parallel_study make: it also starts
# multiprocessing's resource tracker, which ignores SIGTERM
START_WORKER = """
import multiprocessing, os
ctx = multiprocessing.get_context("forkserver")
p = ctx.Process(target=os.getpid)
p.start(); p.join()
assert p.exitcode == 0
"""


def _kernel_exit_code(code: str) -> int:
    """Run ``code`` in a fresh kernel, ask it to shut down as nbclient does, and return its exit code."""
    # Unix sockets, not TCP ports: no race for a port with the kernels that other test processes start
    km = jupyter_client.KernelManager(kernel_name="python3", transport="ipc")
    km.shutdown_wait_time = 6.0  # the client waits 3 s before it sends SIGTERM
    km.start_kernel(extra_arguments=["--HistoryManager.hist_file=:memory:"])
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(code, timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        kc.stop_channels()
        process = km.provisioner.process  # the kernel's Popen (the provisioner forgets it at shutdown)
        km.shutdown_kernel(now=False)
        return process.wait(timeout=30)
    finally:
        if km.is_alive():
            km.shutdown_kernel(now=True)


@pytest.mark.skipif(sys.platform != "linux", reason="the forkserver and ipykernel's child termination, on Linux")
def test_a_kernel_with_worker_processes_exits_by_itself_with_the_hook():
    # Without the hook the same kernel usually waited until the client terminated it (2.6 s, exit code -15,
    # on the 2-core machine where this was written), but not always: whether the helpers outlive ipykernel's
    # SIGTERM depends on timing, so only the hooked kernel's clean exit is asserted.
    hooked = _kernel_exit_code("from book._processes import stop_helpers_at_shutdown\n"
                               "assert stop_helpers_at_shutdown()\n" + START_WORKER)
    assert hooked == 0  # it exited: not killed by the client's SIGTERM


def test_the_hook_stops_the_helpers_when_the_kernel_is_asked_to_shut_down(monkeypatch):
    import IPython
    from traitlets import Bool, HasTraits

    import book._processes as processes

    class KernelShell(HasTraits):  # what matters of ipykernel's shell: a kernel, and exit_now
        exit_now = Bool(False)
        kernel = object()

    shell, stopped = KernelShell(), []
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.setattr(processes, "stop_helpers", lambda: stopped.append(True))
    assert processes.stop_helpers_at_shutdown() and processes.stop_helpers_at_shutdown()  # installed once
    assert stopped == []
    shell.exit_now = True  # what ipykernel's do_shutdown does, before it terminates the kernel's children
    assert stopped == [True]


def test_the_hook_does_nothing_outside_a_kernel():
    from IPython.core.interactiveshell import InteractiveShell

    from book._processes import stop_helpers_at_shutdown

    InteractiveShell.instance()  # a shell, as a terminal IPython (or another test) makes: not a kernel's
    assert stop_helpers_at_shutdown() is False
