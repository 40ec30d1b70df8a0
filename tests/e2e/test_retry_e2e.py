"""A partner that is down, then up again: listings and witnessing rounds retry; nothing else does.

hrss is a real `shuqiao serve`; the fund centre reaches it through a TCP relay the test
can take down (every connection cut, new ones closed at once) and bring back, as a
partner restarting or a dropped link would look from the fund centre.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from node.asker.streams import dataset_info
from node.core.config import load_config
from node.core.errors import PartnerError
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.context import NodeContext
from node.server.witnessing import witness_partners
from node.transport.channels import partner_channel
from node.transport.channels import Backoff

from . import fixtures as fx

pytestmark = pytest.mark.e2e


class Relay:
    """Forwards TCP connections to `target` while up; while down, cuts and refuses them."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self, for_seconds: float | None = None) -> None:
        self.up = False
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open.clear()
        if for_seconds is not None:
            threading.Timer(for_seconds, self.back).start()

    def back(self) -> None:
        self.up = True

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def fund(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("retry"), registry_size=200, applicants=20)
    with s.fed:
        fx.start(s)
        fx.register(s)
        relay = Relay(s.fed.nodes["hrss"].address)
        s.fed.set_partner_address("fund", "hrss", relay.address)
        ctx = NodeContext(load_config(s.cfg("fund")))
        ctx.relay = relay
        yield ctx
        ctx.close()
        relay.close()


def test_a_listing_is_asked_again_while_the_partner_comes_back(fund):
    stub = pb_grpc.MembershipStub(partner_channel(fund, "hrss"))
    assert dataset_info(stub, "hrss", "flexible_workers", 10).name == "flexible_workers"
    fund.relay.down(for_seconds=1.0)
    started = time.monotonic()
    info = dataset_info(stub, "hrss", "flexible_workers", 10)
    assert info.name == "flexible_workers" and info.row_count == 200
    assert time.monotonic() - started >= 0.5  # it did fail first, and waited


def test_a_witnessing_round_outlasts_a_restart_and_only_with_its_retries(fund):
    assert witness_partners(fund) == {"hrss": "cosigned/cosigned"}
    fund.relay.down()  # for good: one attempt, then the error, without waiting
    started = time.monotonic()
    once = witness_partners(fund, backoff=Backoff(attempts=1))
    assert once["hrss"] != "cosigned/cosigned" and time.monotonic() - started < 5
    fund.relay.back()
    fund.relay.down(for_seconds=1.0)
    assert witness_partners(fund) == {"hrss": "cosigned/cosigned"}


def test_a_partner_down_for_good_ends_the_round_in_bounded_time(fund):
    fund.relay.down()
    started = time.monotonic()
    with pytest.raises(PartnerError) as failed:
        stub = pb_grpc.MembershipStub(partner_channel(fund, "hrss"))
        dataset_info(stub, "hrss", "flexible_workers", 2)
    assert failed.value.code is not None and failed.value.code.name == "UNAVAILABLE"
    assert time.monotonic() - started < 30
    fund.relay.back()
