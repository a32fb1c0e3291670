#!/usr/bin/env python3
"""A fixed number of requests over a few keep-alive connections (for instruction counts).

wrk runs for a time, so the number of requests it sends depends on the machine; under
callgrind the system under test must see exactly N requests, so that two runs (N1 and N2
requests) give the instructions of N2 - N1 requests with startup and shutdown cancelled out.

Usage: fixed.py --target 127.0.0.1:PORT --requests N [--connections C] [--path P]
                [--method POST] [--header 'name: value' ...] [--body-file F]
Exits 1 if any answer is not 2xx.
"""

import argparse
import asyncio
import sys


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def worker(args, request, count, failures):
    host, port = args.target.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    for _ in range(count):
        writer.write(request)
        status = await read_response(reader)
        if not 200 <= status < 300:
            failures.append(status)
    writer.close()


async def main(args):
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    head = f"{args.method} {args.path} HTTP/1.1\r\nhost: {args.target}\r\n"
    head += "".join(f"{h}\r\n" for h in args.header)
    head += f"content-length: {len(body)}\r\n\r\n"
    request = head.encode() + body
    per = [args.requests // args.connections] * args.connections
    for i in range(args.requests % args.connections):
        per[i] += 1
    failures = []
    await asyncio.gather(*(worker(args, request, n, failures) for n in per))
    if failures:
        print(f"fixed.py: {len(failures)} non-2xx answers, e.g. {failures[:5]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--path", default="/v0/pipelines/bench-orders/activate?initial=running")
    p.add_argument("--method", default="POST")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--body-file")
    asyncio.run(main(p.parse_args()))
