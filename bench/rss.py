#!/usr/bin/env python3
"""bench/rss.py: the gateway's resident memory in the three scenarios of issue 12.

Plays both the clients and a slow upstream, in one asyncio process, and reads the gateway's
VmRSS / VmHWM from /proc/PID/status:

  baseline   the gateway fresh, after a few warm-up requests
  idle       N keep-alive client connections open, each has made one request (--batch at
             a time) and waits
  in-flight  each of the N connections has a request the upstream has not answered yet
             (the upstream holds every request until the script has read the figure; with
             the pool's default cap of 256 connections per endpoint, the rest wait in the
             gateway's pool queue, which is part of the figure)
  after      every client connection closed, the gateway left alone for --settle seconds

Prints one line per scenario and, with --json FILE, writes them as JSON. The gateway must be
started by the caller on a configuration whose only upstream is http://127.0.0.1:UPSTREAM_PORT
(this script listens there). Needs an open-file limit above 3 x N.

Usage: bench/rss.py --pid PID [--pid PID ...] --gateway 127.0.0.1:PORT --upstream-port PORT
                    [--connections 1000] [--path P] [--header 'name: value' ...]
                    [--settle 3] [--json FILE]
"""

import argparse
import asyncio
import json
import sys
import time

ANSWER = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n"
    b'{"message":"Pipeline transitioning from stopped to running"}'
)


def memory(pids):
    """(VmRSS, VmHWM) in MiB, summed over `pids` (nginx: master and workers)."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for pid in pids:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] += int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Upstream:
    """A pipeline manager that answers at once, or holds every request while `hold` is set."""

    def __init__(self):
        self.hold = False
        self.released = asyncio.Event()
        self.received = 0

    async def serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.received += 1
                if self.hold:
                    await self.released.wait()
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def wait_until(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"rss.py: timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def main(args):
    # Tasks of the upstream's connections end cancelled when the script stops: not an error.
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
    upstream = Upstream()
    server = await asyncio.start_server(
        upstream.serve, "127.0.0.1", args.upstream_port, backlog=4096
    )
    host, port = args.gateway.rsplit(":", 1)
    def request(i=0):
        # A pipeline per client: the gateway's per-pipeline quota (pipeline_concurrency)
        # would otherwise refuse the 91st concurrent request with 429.
        return (
            f"POST {args.path.format(i=i)} HTTP/1.1\r\nhost: {args.gateway}\r\n"
            "content-length: 0\r\n" + "".join(f"{h}\r\n" for h in args.header) + "\r\n"
        ).encode()

    figures = {}

    def take(name):
        rss, hwm = memory(args.pid)
        figures[name] = {"rss_mb": round(rss, 1), "hwm_mb": round(hwm, 1)}
        print(f"  {name:<10} VmRSS {rss:6.1f} MB   VmHWM {hwm:6.1f} MB", flush=True)

    # Warm up on one connection, then the fresh gateway's figure.
    reader, writer = await asyncio.open_connection(host, int(port))
    for _ in range(20):
        writer.write(request())
        status = await read_response(reader)
        if status >= 400:
            raise SystemExit(f"rss.py: the gateway answered {status} to the warm-up request")
    writer.close()
    await asyncio.sleep(args.settle)
    take("baseline")

    # 1. N idle keep-alive connections, each after one request.
    connections = []
    for _ in range(args.connections):
        connections.append(await asyncio.open_connection(host, int(port)))

    async def one(i, pair):
        reader, writer = pair
        writer.write(request(i))
        return await read_response(reader)

    # A few at a time: idle clients arrived over time, not all at once (that is step 2).
    statuses = []
    for start in range(0, len(connections), args.batch):
        batch = connections[start : start + args.batch]
        statuses += await asyncio.gather(*(one(start + i, c) for i, c in enumerate(batch)))
    failed = [s for s in statuses if s >= 400]
    if failed:
        raise SystemExit(
            f"rss.py: {len(failed)} of {len(statuses)} requests failed (idle step): "
            f"statuses {sorted(set(failed))}"
        )
    await asyncio.sleep(args.settle)
    take("idle")

    # 2. Every connection with a request in flight at a slow upstream.
    upstream.hold = True
    before = upstream.received
    pending = [asyncio.ensure_future(one(i, c)) for i, c in enumerate(connections)]
    expected = min(args.connections, args.upstream_cap)
    await wait_until(
        lambda: upstream.received - before >= expected, 30, f"{expected} requests upstream"
    )
    await asyncio.sleep(args.settle)
    take("in-flight")
    upstream.released.set()
    upstream.hold = False
    statuses = await asyncio.gather(*pending)
    failed = sum(1 for s in statuses if s >= 400)
    if failed:
        print(f"  ({failed} of {len(statuses)} in-flight requests failed)", flush=True)
    figures["in_flight_failed"] = failed

    # 3. The clients leave.
    for _, writer in connections:
        writer.close()
    await asyncio.sleep(args.settle)
    take("after")
    base = figures["baseline"]["rss_mb"]
    figures["after_vs_baseline"] = round(figures["after"]["rss_mb"] / base, 3)
    figures["connections"] = args.connections
    server.close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pid", type=int, action="append", required=True,
        help="the process id of the system under test (repeat: their sum)",
    )
    parser.add_argument("--gateway", required=True, help="IP:PORT of the gateway")
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--path",
        default="/v0/pipelines/bench-{i}/activate?initial=running",
        help="{i} is the client's number",
    )
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    parser.add_argument(
        "--batch", type=int, default=50, help="concurrent first requests in the idle step"
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before a reading")
    parser.add_argument(
        "--upstream-cap",
        type=int,
        default=256,
        help="the gateway's max_connections per endpoint (requests reaching the upstream)",
    )
    parser.add_argument("--json", help="write the figures here")
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)
