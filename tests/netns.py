"""Threads that live in a network namespace: setns(2) is per thread, so a pool whose
threads entered the namespace reaches test hosts there without any subprocess."""
from __future__ import annotations

import ctypes
import os
import socket
from concurrent.futures import ThreadPoolExecutor

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def executor(ns: str, workers: int = 8) -> ThreadPoolExecutor:
    """A thread pool whose threads all live in network namespace `ns`."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ns-{ns}",
                              initializer=enter, initargs=(ns,))


def tcp_connects(ip: str, port: int, timeout: float) -> bool:
    """A TCP handshake with ip:port within `timeout` (run it on a thread that entered the
    namespace to test from; a firewall that drops the SYN shows as a timeout)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False
