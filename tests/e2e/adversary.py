"""An overreaching fund centre: raw wire clients that send what an honest node never would.

Everything here speaks the generated gRPC stubs directly, with a legitimate partner
certificate; the protocol arithmetic comes from protocols/ (hashing and blinding), never
from the node's own asking client. One agency ("hrss") grants one dataset to several
partners, one partner per attack, so the attacks' quotas do not mix.
"""
from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import sqlalchemy as sa

from adapters import encode
from node.devtools.localnet import Federation
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.rpc.shuqiao.v1 import statistics_pb2_grpc as spb_grpc
from node.devtools.synthetic import write_csv
from protocols import cardinality as card
from protocols import group, oprf
from protocols import psi_shuffle as ps

from . import fixtures as fx

DATASET = "flexible_workers"
INVALID_ELEMENT = b"\xff" * 32  # not a canonical ristretto255 encoding


def federation(root: Path, grants: dict[str, dict], *, registry_size: int = 150,
               storage_url: str | None = None) -> fx.Scenario:
    """A started agency with `registry_size` registered people, granting each partner
    its own policy on the dataset (purpose fx.PURPOSE)."""
    rng = random.Random(11)
    registry = fx.people(rng, registry_size)
    data = root / "data"
    data.mkdir(parents=True)
    write_csv(data / "registry.csv", ["公民身份号码", "缴费月数", "所属区"],
              ((p, rng.randint(1, 60), "天宁区") for p in registry), encoding="gb18030")
    write_csv(data / "applicants.csv", ["申请编号", "身份证号"], [("A0", registry[0])])
    fed = Federation(root / "fed")
    fed.add_node("hrss", partners=[{"id": p} for p in dict.fromkeys(["fund", *grants])],
                 datasets=[{"name": DATASET, "grants": [
                     {"partner": p, "purposes": [fx.PURPOSE], **g} for p, g in grants.items()]}],
                 storage_url=storage_url)
    fed.add_node("fund", partners=[{"id": "hrss"}])
    s = fx.Scenario(fed, registry, [], data / "registry.csv", data / "applicants.csv")
    try:
        fx.start(s)
        r = fx.register(s, "--attribute", "所属区")
        assert r.returncode == 0, r.stderr
    except BaseException:
        fed.close()
        raise
    return s


def dataset_info(s, partner: str) -> pb.DatasetInfo:
    with fx.channel_as(s, partner) as ch:
        listing = pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=10)
    (d,) = [d for d in listing.datasets if d.name == DATASET]
    return d


def element(s, person: str) -> bytes:
    """The encoded identifier of a registered person, as the fund centre would hash it."""
    return encode("cn_resident_id", person)


# -- membership (OPRF) -----------------------------------------------------------------

def membership_header(d: pb.DatasetInfo, total: int, query_id: str | None = None) -> pb.EvaluateRequest:
    return pb.EvaluateRequest(header=pb.QueryHeader(
        query_id=query_id or str(uuid.uuid4()), dataset=DATASET, version=d.version, epoch=d.epoch,
        purpose=fx.PURPOSE, total_elements=total, kind=pb.QUERY_KIND_MEMBERSHIP))


def batch(seq: int, elements: bytes) -> pb.EvaluateRequest:
    return pb.EvaluateRequest(batch=pb.ElementBatch(seq=seq, elements=elements))


def finish() -> pb.EvaluateRequest:
    return pb.EvaluateRequest(finish=pb.Finish())


def blinded(n: int, tag: bytes = b"") -> bytes:
    """n freshly blinded, distinct OPRF inputs."""
    return oprf.blind([b"%s/%d/%s" % (tag, i, uuid.uuid4().bytes) for i in range(n)])[1]


def evaluate(s, partner: str, messages: Iterable, *, cancel_after: int | None = None,
             on_first=None):
    """(responses received, RpcError or None); with `cancel_after`, the client drops the
    stream after that many responses; `on_first()` runs when the first response (or the
    refusal) arrives."""
    got: list = []
    with fx.channel_as(s, partner) as ch:
        call = pb_grpc.MembershipStub(ch).Evaluate(iter(messages), timeout=60)
        try:
            for r in call:
                if not got and on_first:
                    on_first()
                got.append(r)
                if cancel_after is not None and len(got) >= cancel_after:
                    call.cancel()
                    return got, None
        except grpc.RpcError as exc:
            if not got and on_first:
                on_first()
            return got, exc
    return got, None


def held_membership(d: pb.DatasetInfo, total: int, hold, *, query_id: str | None = None):
    """An honest membership query that waits after its header until `hold` is set."""
    yield membership_header(d, total, query_id)
    hold.wait(30)
    yield batch(0, blinded(total))
    yield finish()


def evaluations_received(responses) -> int:
    return sum(len(r.batch.elements) // 32 for r in responses if r.WhichOneof("body") == "batch")


# -- cardinality -------------------------------------------------------------------------

class CountRequest:
    """A = a*H(x_i) for chosen identifiers (repeats allowed), then `extra` raw elements and
    `padding` - len(extra) random pads; P = a*G. By default Y'' = shuffle(a*Y' + pads)."""

    def __init__(self, identifiers: list[bytes], *, padding: int = 0, extra: bytes = b"") -> None:
        self.a = group.random_scalar()
        self.point, self.padding, self.size = group.base_mul(self.a), padding, len(identifiers)
        self.elements = (card.multiply_batch(self.a, card.hash_batch(identifiers)) + extra
                         + card._pads(padding - len(extra) // 32))

    def reply(self, q: bytes, y: bytes) -> bytes:
        return card.shuffle(card.multiply_batch(self.a, y) + card._pads(self.padding))


class CountStream:
    """A cardinality stream: header, open, A, finish; then, once Y' has arrived (fed by
    `cardinality` below), `reply(q, Y')` as Y'' and finish. With `hold`, the stream
    waits after its header until set."""

    def __init__(self, d: pb.DatasetInfo, req: CountRequest, *, query_id: str | None = None,
                 hold: threading.Event | None = None, reply=None, size: int | None = None) -> None:
        self.d, self.req, self.hold = d, req, hold
        self.query_id = query_id or str(uuid.uuid4())
        self.size = req.size if size is None else size
        self.reply = reply or req.reply
        self.key, self.rows, self.ready = None, [], threading.Event()

    def feed(self, resp) -> None:
        body = resp.WhichOneof("body")
        if body == "key":
            self.key = resp.key
        elif body == "rows":
            self.rows.append(resp.rows)
            if self.key and sum(map(len, self.rows)) == 32 * self.key.rows:
                self.ready.set()

    def __iter__(self) -> Iterator[pb.CardinalityRequest]:
        yield pb.CardinalityRequest(header=pb.QueryHeader(
            query_id=self.query_id, dataset=DATASET, version=self.d.version, epoch=self.d.epoch,
            purpose=fx.PURPOSE, total_elements=self.size + self.req.padding,
            kind=pb.QUERY_KIND_CARDINALITY))
        if self.hold is not None:
            self.hold.wait(30)
        yield pb.CardinalityRequest(open=pb.CardinalityOpen(point=self.req.point, padding=self.req.padding))
        yield pb.CardinalityRequest(batch=pb.ElementBatch(seq=0, elements=self.req.elements))
        yield pb.CardinalityRequest(finish=pb.Finish())
        self.ready.wait(60)
        if self.key is None:
            return   # refused or ended: nothing to reply to
        yield pb.CardinalityRequest(rows=self.reply(self.key.key, b"".join(self.rows)))
        yield pb.CardinalityRequest(finish=pb.Finish())


def cardinality_messages(d: pb.DatasetInfo, req: CountRequest, **kw) -> CountStream:
    return CountStream(d, req, **kw)


def cardinality(s, partner: str, messages: Iterable, *, on_first=None):
    """(responses, RpcError or None); `on_first()` runs when the first response (or the
    refusal) arrives. A CountStream is fed every response, and released when the call ends."""
    got: list = []
    first = True
    feed = getattr(messages, "feed", lambda r: None)
    with fx.channel_as(s, partner) as ch:
        try:
            for r in pb_grpc.MembershipStub(ch).Cardinality(iter(messages), timeout=60):
                if first and on_first:
                    on_first()
                first = False
                feed(r)
                got.append(r)
        except grpc.RpcError as exc:
            if first and on_first:
                on_first()
            return got, exc
        finally:
            if isinstance(messages, CountStream):
                messages.ready.set()
    return got, None


# -- aggregate -----------------------------------------------------------------------------

def aggregate(s, partner: str, identifiers: list[bytes], *, then: Iterable = (),
              hold: threading.Event | None = None, on_first=None, cancel_at_first: bool = False):
    """Send an aggregate (count) query whose match request blinds `identifiers` under one
    key, repeats included, then the messages `then`; (responses, RpcError or None).

    With `hold`, the stream waits after its header until set; `on_first()` runs when the
    first response (or the refusal) arrives; `cancel_at_first` drops the stream then.
    Without `then`, the client stops reading once the match response is complete.
    """
    d = dataset_info(s, partner)
    key = group.random_scalar()
    blinded_ids = ps.multiply_batch(key, ps.hash_batch(identifiers), False)
    request = ps.ShuffleRequest(blinded_ids).to_bytes()
    then = list(then)

    def messages():
        yield spb.AggregateRequest(header=spb.StatisticsHeader(
            query_id=str(uuid.uuid4()), dataset=DATASET, version=d.version, epoch=d.epoch,
            purpose=fx.PURPOSE, total_elements=len(identifiers),
            kind=spb.STATISTICS_KIND_AGGREGATE, ops=[spb.AGGREGATE_OP_COUNT]))
        if hold is not None:
            hold.wait(30)
        yield spb.AggregateRequest(match_request=spb.StatisticsChunk(data=request, last=True))
        yield from then

    got: list = []
    with fx.channel_as(s, partner) as ch:
        call = spb_grpc.StatisticsStub(ch).Aggregate(messages(), timeout=60)
        try:
            for r in call:
                if not got and on_first:
                    on_first()
                got.append(r)
                if cancel_at_first:
                    call.cancel()
                    return got, None
                if not then and r.WhichOneof("body") == "match_response" and r.match_response.last:
                    return got, None  # what the attack wanted; the rest does not matter
        except grpc.RpcError as exc:
            if not got and on_first:
                on_first()
            return got, exc
    return got, None


def matched_rows_seen(responses) -> bool:
    """Whether a complete match response (the exact intersection, to node software) arrived."""
    return any(r.WhichOneof("body") == "match_response" and r.match_response.last for r in responses)


# -- concurrency -------------------------------------------------------------------------

class Gate:
    """Streams that wait, once admitted, until every racer has its admission answer
    (or `patience` seconds passed: the node may serve fewer streams at once)."""

    def __init__(self, racers: int, patience: float = 5.0) -> None:
        self.go = threading.Event()
        self._left = racers
        self._lock = threading.Lock()
        self._timer = threading.Timer(patience, self.go.set)

    def __enter__(self) -> Gate:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.go.set()

    def arrived(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self.go.set()


def race(n: int, work) -> list:
    """Run work(i) on n threads at once; their results in order."""
    results: list = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


# -- the agency's own records --------------------------------------------------------------

def answerer_log(s, partner: str | None = None) -> list[dict]:
    """The agency's query-log rows (as answerer), read from its database."""
    node = s.fed.nodes["hrss"]
    import tomllib
    url = tomllib.loads(node.config_path.read_text()).get("storage", {}).get("url")
    engine = sa.create_engine(url or f"sqlite:///{node.directory / 'node.db'}")
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT * FROM query_log WHERE role = 'answerer' ORDER BY seq"))]
    finally:
        engine.dispose()
    return [r for r in rows if partner is None or r["asker"] == partner]
