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
    hooked = _kernel_exit_code("from book._processes import stop_helpers_at_shutdown\n"
                               "assert stop_helpers_at_shutdown()\n" + START_WORKER)
    assert hooked == 0  # it exited: not killed by the client's SIGTERM
    unhooked = _kernel_exit_code(START_WORKER)
    assert unhooked != 0  # the problem the hook solves: the kernel waited on its helpers until terminated


def test_the_hook_does_nothing_outside_a_kernel():
    from IPython.core.interactiveshell import InteractiveShell

    from book._processes import stop_helpers_at_shutdown

    InteractiveShell.instance()  # a shell, as a terminal IPython (or another test) makes: not a kernel's
    assert stop_helpers_at_shutdown() is False
