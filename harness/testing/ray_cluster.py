"""A real Ray cluster on loopback for tests and benchmarks: a head node and worker nodes.

Each node is a ``ray start --block`` process, stopped on exit by killing that process and every
process below it (never ``ray stop``, which would end every Ray process on the machine, other users'
too).

    with local_cluster(nodes=2, cpus_per_node=2) as address:
        ...  # ray is connected here; other processes join with --ray-address ADDRESS
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.engine.ray_executor import connect

OBJECT_STORE_BYTES = 100_000_000  # small: tests move requests and verdicts, not tensors


def _ray_command() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command is not installed (pip install 'ray[data]')")
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # Token authentication on for every node (the token in ~/.ray/auth_token): a node joining the
    # head does not turn it on by itself.
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", RAY_AUTH_MODE="token")
    with log.open("ab") as out:
        return subprocess.Popen(
            [_ray_command(), "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: raylet and workers go down with it
        )


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Wait for the node's "Ray runtime started." line (its port opens before drivers can join)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if proc.poll() is not None:
            raise RuntimeError(f"ray node exited:\n{text[-3000:]}")
        if "Ray runtime started." in text:
            return
        time.sleep(0.5)
    raise RuntimeError(f"ray node not started after {timeout_s}s")


def _wait_nodes(ray: Any, count: int, timeout_s: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while (alive := sum(n["Alive"] for n in ray.nodes())) < count:
        if time.monotonic() > deadline:
            tails = "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs)
            raise RuntimeError(f"only {alive} of {count} Ray nodes came up; logs:\n{tails}")
        time.sleep(0.5)


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (Ray's workers start sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the node process and every process below it (SIGTERM makes a node drain for 30 s)."""
    for pid in [*_descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: float = 2, timeout_s: float = 90) -> Iterator[str]:
    """Start a head and ``nodes - 1`` worker nodes, connect ``ray`` to them; yield the address."""
    import ray

    port = _free_port()
    # Every node binds 127.0.0.1; the head is addressed as 127.0.0.2 (loopback too) because Ray
    # swaps "127.0.0.1" and "localhost" in an address for the machine's outward address.
    address = f"127.0.0.2:{port}"
    temp = Path(
        tempfile.mkdtemp(prefix="ray", dir="/tmp")
    )  # short: Ray's socket paths have a limit
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}"]
    common.append(f"--object-store-memory={OBJECT_STORE_BYTES}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        head = _start_node(
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--temp-dir={temp}",
                *common,
            ],
            temp / "head.log",
        )
        procs.append(head)
        _wait_started(head, temp / "head.log", timeout_s)
        for k in range(1, nodes):
            procs.append(_start_node([f"--address={address}", *common], temp / f"node{k}.log"))
        connect(address)
        _wait_nodes(ray, nodes, timeout_s, [temp / f"node{k}.log" for k in range(1, nodes)])
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)
