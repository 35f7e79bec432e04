"""Loaded by every Python process of the sandboxed pipeline run (PYTHONPATH): no network.

Any attempt to resolve a host name or connect to a non-local address raises and is logged to
``$OCRSLIM_NETLOG``, so the test can assert that nothing even tried.
"""

import os
import socket

_LOG = os.environ.get("OCRSLIM_NETLOG")
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")


def _record(what: str) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {what}\n")


def _is_local(addr) -> bool:
    if isinstance(addr, tuple) and addr:
        return str(addr[0]).startswith(_LOCAL)
    return True  # AF_UNIX paths


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _guard_connect(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(addr):
        _record(f"connect {addr!r}")
        raise OSError(101, "network blocked by the ocrslim test sandbox")
    return _connect(self, addr)


def _guard_connect_ex(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(addr):
        _record(f"connect_ex {addr!r}")
        return 101
    return _connect_ex(self, addr)


_getaddrinfo = socket.getaddrinfo


def _guard_getaddrinfo(host, *args, **kwargs):
    if host is not None and not str(host).startswith(_LOCAL):
        _record(f"getaddrinfo {host!r}")
        raise socket.gaierror(-3, "name resolution blocked by the ocrslim test sandbox")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guard_connect
socket.socket.connect_ex = _guard_connect_ex
socket.getaddrinfo = _guard_getaddrinfo
