#!/usr/bin/env python3
"""Readiness probe used by tests/harness/kafka.sh.

Sends one Kafka Metadata request (v4, all topics; Kafka 4.x serves v4 to
v13) to HOST:PORT over plain TCP and exits 0 only if the broker answers with
at least one registered broker, i.e. it serves clients. Avoids starting a JVM
just to ask "are you up?". Usage: metadata_probe.py HOST PORT [TIMEOUT_S]
"""
import socket
import struct
import sys


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return buf


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    client_id = b"prescale-kafka-harness"
    correlation_id = 4242
    # Request header v1: api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    # MetadataRequest v4: topics = null (all), allow_auto_topic_creation = false.
    body = struct.pack(">ib", -1, 0)
    msg = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        resp = recv_exact(sock, size)
    # Response header v0: correlation_id; MetadataResponse v4: throttle_time_ms,
    # brokers array.
    corr, _throttle, n_brokers = struct.unpack(">iii", resp[:12])
    if corr != correlation_id:
        print(f"unexpected correlation id {corr}", file=sys.stderr)
        return 1
    if n_brokers < 1:
        print("broker answered but lists no brokers yet", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ConnectionError, struct.error) as exc:
        print(f"metadata probe failed: {exc}", file=sys.stderr)
        sys.exit(1)
