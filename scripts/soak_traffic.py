#!/usr/bin/env python3
"""Mixed traffic for scripts/soak.sh: good, bad and abusive clients against one gateway.

Judged (every request must get an answer that is 2xx/3xx or a JSON error in Feldera's schema
{"message","error_code","details"}): the `good` and `bad` mixes. Counted only: the `abuse`
mix (idle connections, slowloris heads, clients that read nothing of an endless stream, HTTP/2
rapid reset, connect-and-drop), which the gateway is expected to cut off.

Exit status 1 when any judged request was lost (no answer, connection closed without one) or
untyped; the report (JSON) says which. Standard library only.
"""

import argparse
import json
import random
import socket
import struct
import threading
import time
from collections import Counter

SCHEMA_KEYS = {"message", "error_code", "details"}


def read_response(sock, deadline):
    """Reads one HTTP/1.1 response (Content-Length or chunked); returns (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.1, deadline - time.time()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = rest
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(body) < need:
            sock.settimeout(max(0.1, deadline - time.time()))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            body += chunk
        body = body[:need]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            while b"\r\n" not in body:
                sock.settimeout(max(0.1, deadline - time.time()))
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed inside a chunk")
                body += chunk
            size_line, body = body.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(body) < size + 2:
                sock.settimeout(max(0.1, deadline - time.time()))
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed inside a chunk")
                body += chunk
            out += body[:size]
            body = body[size + 2:]
            if size == 0:
                break
        body = out
    return status, headers, body


def typed(status, headers, body):
    if status < 400:
        return True
    if not headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == SCHEMA_KEYS


GOOD = [
    ("GET", "/v0/pipelines", b""),
    ("GET", "/v0/pipelines/orders", b""),
    ("GET", "/v0/pipelines/billing/stats", b""),
    ("POST", "/v0/pipelines/live/ingress/t?format=json", b'{"insert":{"a":1}}\n' * 20),
    ("GET", "/v0/config", b""),
    ("POST", "/v0/pipelines/orders/activate?initial=paused", b""),
]
BAD = [
    ("GET", "/v0/pipelines/a%2Fb", b"", {}),
    ("GET", "/v0/pipelines/../x", b"", {}),
    ("GET", "/v0/pipelines/-bad-", b"", {}),
    ("GET", "/v0/pipelines/" + "x" * 70, b"", {}),
    ("POST", "/v0/pipelines/orders/activate?initial=sideways", b"", {}),
    ("POST", "/v0/pipelines/orders/activate?api_key=1", b"", {}),
    ("GET", "/v0/nothing/here", b"", {}),
    ("DELETE", "/v0/config", b"", {}),
    ("GET", "/v0/pipelines", b"", {"x-big": "y" * 20000}),
    # Over the body limit by its Content-Length (answered before the body is read; no body
    # is sent, so the close cannot reset an unread one away).
    ("POST", "/v0/pipelines", b"", {"content-length": str(3 * 1024 * 1024)}),
    ("POST", "/v0/pipelines", b"", {"transfer-encoding": "gzip, chunked"}),
    ("GET", "/v0/pipelines", b"", {"authorization": "Bearer a b"}),
]


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()
        self.failures = []

    def add(self, key, failure=None):
        with self.lock:
            self.counts[key] += 1
            if failure and len(self.failures) < 50:
                self.failures.append(failure)


def one_request(addr, method, path, body, extra, tally, mix):
    request = f"{method} {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n"
    for name, value in extra.items():
        request += f"{name}: {value}\r\n"
    if "transfer-encoding" in extra:
        payload = b"0\r\n\r\n"
    elif "content-length" in extra:
        payload = b""
    else:
        request += f"content-length: {len(body)}\r\n"
        payload = body
    deadline = time.time() + 20
    try:
        sock = socket.create_connection(addr, timeout=5)
    except OSError as error:
        tally.add(f"{mix}.connect_failed", f"{method} {path}: connect: {error}")
        return
    try:
        sock.sendall(request.encode() + b"\r\n")
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the gateway may refuse a large body before reading it; the answer counts
        status, headers, answer = read_response(sock, deadline)
        if typed(status, headers, answer):
            tally.add(f"{mix}.{status}")
        else:
            tally.add(f"{mix}.untyped", f"{method} {path}: {status} {headers} {answer[:200]!r}")
    except (OSError, ConnectionError, ValueError) as error:
        tally.add(f"{mix}.lost", f"{method} {path}: {error!r}")
    finally:
        sock.close()


def good_worker(addr, until, tally):
    while time.time() < until:
        method, path, body = random.choice(GOOD)
        one_request(addr, method, path, body, {}, tally, "good")


def bad_worker(addr, until, tally):
    while time.time() < until:
        method, path, body, extra = random.choice(BAD)
        one_request(addr, method, path, body, extra, tally, "bad")


def h2_frame(kind, flags, stream, payload=b""):
    length = len(payload)
    return struct.pack(">BHBBI", length >> 16, length & 0xFFFF, kind, flags, stream) + payload


def abuse_worker(addr, until, tally):
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    block = bytes([0x82, 0x86, 0x84, 0x01, 0x02]) + b"gw"
    while time.time() < until:
        kind = random.choice(["idle", "slowloris", "no_reader", "rapid_reset", "drop", "h2_idle"])
        try:
            sock = socket.create_connection(addr, timeout=5)
        except OSError:
            tally.add(f"abuse.{kind}.connect_failed")
            continue
        try:
            if kind == "idle":
                sock.settimeout(10)
                got = sock.recv(1)
                tally.add(f"abuse.idle.{'closed' if not got else 'answered'}")
            elif kind == "slowloris":
                sock.sendall(b"GET /v0/pipelines HTTP/1.1\r\n")
                for _ in range(8):
                    time.sleep(0.5)
                    sock.sendall(b"x-slow: 1\r\n")
                tally.add("abuse.slowloris.sent")
            elif kind == "no_reader":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(b"POST /v0/pipelines/live/egress/v HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\n\r\n")
                time.sleep(4)
                tally.add("abuse.no_reader.done")
            elif kind == "rapid_reset":
                burst = preface + h2_frame(4, 0, 0)
                for i in range(100):
                    sid = 2 * i + 1
                    burst += h2_frame(1, 5, sid, block) + h2_frame(3, 0, sid, struct.pack(">I", 8))
                sock.sendall(burst)
                sock.settimeout(10)
                while sock.recv(65536):
                    pass
                tally.add("abuse.rapid_reset.closed")
            elif kind == "h2_idle":
                sock.sendall(preface + h2_frame(4, 0, 0))
                sock.settimeout(10)
                while sock.recv(65536):
                    pass
                tally.add("abuse.h2_idle.closed")
            else:
                tally.add("abuse.drop")
        except OSError as error:
            tally.add(f"abuse.{kind}.{type(error).__name__}")
        finally:
            sock.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    host, port = args.gateway.rsplit(":", 1)
    addr = (host, int(port))
    until = time.time() + args.seconds
    tally = Tally()
    threads = [threading.Thread(target=good_worker, args=(addr, until, tally)) for _ in range(4)]
    threads += [threading.Thread(target=bad_worker, args=(addr, until, tally)) for _ in range(2)]
    threads += [threading.Thread(target=abuse_worker, args=(addr, until, tally)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    judged_bad = {k: v for k, v in tally.counts.items()
                  if k.endswith((".lost", ".untyped", ".connect_failed")) and not k.startswith("abuse.")}
    report = {
        "counts": dict(sorted(tally.counts.items())),
        "judged": sum(v for k, v in tally.counts.items() if not k.startswith("abuse.")),
        "lost_or_untyped": judged_bad,
        "failures": tally.failures,
    }
    with open(args.report, "w") as out:
        json.dump(report, out, indent=1)
    raise SystemExit(1 if judged_bad else 0)


if __name__ == "__main__":
    main()
