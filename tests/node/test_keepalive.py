"""Keepalive: the server permits the pings of an idle partner channel, so no GOAWAY "too_many_pings".

gRPC logs that GOAWAY from its C core on the client's stderr, so each side runs in a
child process whose stderr the test reads. The control (a server with gRPC's default
ping policy) shows the check would catch the noise.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from node.transport.channels import grpc_options
interval = 0.3
server_options = grpc_options(1 << 20, interval, server=True)
if sys.argv[1] == "default-server":  # the server's own ping policy, not ours
    server_options = [o for o in server_options if o[0] != "grpc.http2.min_ping_interval_without_data_ms"]
server = grpc.server(futures.ThreadPoolExecutor(2), options=server_options)
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=grpc_options(1 << 20, interval))
stub = health_pb2_grpc.HealthStub(channel)
stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
time.sleep(12 * interval)  # idle: only pings on the connection
stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
print("done")
"""


def run(server: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, server], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("server,noise", [("node-server", False), ("default-server", True)])
def test_an_idle_channel_pings_without_a_goaway(server, noise):
    r = run(server)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert ("too_many_pings" in r.stderr) is noise, r.stderr
