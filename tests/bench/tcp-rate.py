#!/usr/bin/env python3
"""TCP throughput for the lab's network benchmarks, run in dom0 (pushed beside them).

  tcp-rate.py send HOST PORT MIB   connect (retrying up to 150 s), send MIB MiB, wait for the
                                   peer to close; print MB/s
  tcp-rate.py recv HOST PORT MIB   accept one connection on HOST:PORT, read MIB MiB; print
                                   MB/s from the first byte
"""
import socket
import sys
import time


def send(host, port, n):
    for _ in range(150):
        try:
            s = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            time.sleep(1)
    else:
        sys.exit("no connection to %s:%d" % (host, port))
    buf = b"\0" * 65536
    t = time.time()
    left = n
    while left > 0:
        s.sendall(buf[: min(left, 65536)])
        left -= min(left, 65536)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(300)
    while s.recv(65536):
        pass
    print("%.1f" % (n / 1e6 / (time.time() - t)))


def recv(host, port, n):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    listener.settimeout(300)
    c, _ = listener.accept()
    c.settimeout(300)
    t = None
    got = 0
    while got < n:
        d = c.recv(1 << 20)
        if not d:
            break
        if t is None:
            t = time.time()
        got += len(d)
    print("%.1f" % (got / 1e6 / (time.time() - t)) if t else "0")


if __name__ == "__main__":
    mode, host, port, mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    {"send": send, "recv": recv}[mode](host, port, mib << 20)
