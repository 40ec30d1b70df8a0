"""The auditor's HTTP view of a node's ledger (FastAPI), and the matching LogSource client.

Read-only and auditor-scoped: every route needs `Authorization: Bearer <token>`; the node
keeps only SHA-256 digests of the tokens it issued and compares them in constant time.
Routes are thin: they call the Ledger and return pydantic schemas that are separate from
the tables (entries travel as base64 of their canonical bytes, so the auditor hashes
exactly what the node hashed, plus the decoded JSON for reading).

    GET /v1/ledger/key                          the node's ledger public key and its
                                                certification in the federation PKI
    GET /v1/ledger/head                         the latest signed tree head, with the key
                                                that signed it and that key's certification
    GET /v1/ledger/entries?start&end&limit&...  entries, filterable (partner, dataset,
                                                purpose, outcome, type, since, until)
    GET /v1/ledger/proof/inclusion?index&size
    GET /v1/ledger/proof/consistency?first&second
    GET /v1/ledger/export                       JSON-lines export (sources.py), streamed

`create_app` builds an app per call; nothing is built at import time.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from protocols import merkle

from node.ledger.anchor import CertificationError, KeyCertification, current_certification, current_head
from node.ledger.entries import decode
from node.ledger.log import EntryFilter, Ledger, LedgerError
from node.ledger.signing import LedgerPublicKey, SignedTreeHead
from node.ledger.sources import SourceError, export_lines

__all__ = ["create_app", "hash_token", "new_token", "HttpLogSource"]

MAX_PAGE = 5000
INT64_MAX = 2**63 - 1  # ledger indices and sizes are stored as 64-bit integers


def hash_token(token: str) -> str:
    """The digest a node stores for an auditor token: "sha256:<hex>"."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None.

    One rule for every role: a bare token or another scheme is no token at all.
    """
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def token_matches(authorization: str | None, digests: Iterable[bytes]) -> bool:
    """Whether the header's bearer token is one of `digests` (every role checks this way)."""
    token = bearer_token(authorization)
    presented = hash_token(token).encode() if token else b""
    matched = False
    for digest in digests:  # no early exit: constant time per token
        matched |= hmac.compare_digest(presented, digest)
    return token is not None and matched


def new_token() -> tuple[str, str]:
    """A fresh auditor token and its digest; hand out the token, keep only the digest."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


# -- schemas ----------------------------------------------------------------------------

class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyOut(_Out):
    node: str
    public_key: str
    certification: dict[str, Any] | None = None  # anchor.KeyCertification, in the PKI


class HeadOut(_Out):
    v: int
    node: str
    size: int
    root: str
    time: str
    signature: str
    # The signing key and its certification, published with the head (anchor.py).
    public_key: str | None = None
    key_certification: dict[str, Any] | None = None


_HEAD_FIELDS = ("v", "node", "size", "root", "time", "signature")


def _certification(ledger: Ledger) -> dict[str, Any] | None:
    certification = current_certification(ledger.engine, ledger.public_key)
    return certification.to_dict() if certification else None


class EntryOut(_Out):
    index: int
    entry_b64: str
    entry: dict[str, Any]


class EntriesOut(_Out):
    entries: list[EntryOut]
    next: int | None


class ProofOut(_Out):
    first: int
    second: int
    proof: list[str]


# -- dependencies -------------------------------------------------------------------------

def _ledger(request: Request) -> Ledger:
    return request.app.state.ledger


def _auditor(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = bearer_token(authorization)
    if token is None:
        raise HTTPException(401, "an auditor token is required (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not token_matches(authorization, request.app.state.token_digests):
        raise HTTPException(401, "unknown auditor token", headers={"WWW-Authenticate": "Bearer"})


LedgerDep = Annotated[Ledger, Depends(_ledger)]
_Filter = Annotated[str | None, Query(max_length=64)]  # every filtered field is at most 64
Auditor = Depends(_auditor)


def _proof_error(exc: Exception) -> HTTPException:
    return HTTPException(400, str(exc))


def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad parameter and the rule it broke, never echoing the value sent."""
    problems = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
                for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


def guard(app: FastAPI) -> FastAPI:
    """Bounded errors for an app: 422 without echoed input, 500 with an incident id only."""
    from node.core.incidents import IncidentMiddleware
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(IncidentMiddleware)
    return app


def create_app(engine: Any, ledger: Ledger, tokens: Iterable[str]) -> FastAPI:
    """An auditor API over `ledger`. `tokens` are digests from `hash_token`."""
    digests = [t.encode() for t in tokens]
    if not all(t.startswith(b"sha256:") and len(t) == 71 for t in digests):
        raise ValueError("auditor tokens are configured as sha256:<hex> digests, never in clear")
    app = FastAPI(title="Shuqiao ledger (auditor)", dependencies=[Auditor],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ledger, app.state.engine, app.state.token_digests = ledger, engine, digests
    guard(app)
    app.include_router(routes)  # every route behind the app's auditor dependency
    return app


def _proof(make, first: int, second: int) -> ProofOut:
    try:
        proof = make(first, second)
    except (LedgerError, merkle.ProofError) as exc:
        raise _proof_error(exc) from None
    return ProofOut(first=first, second=second, proof=[p.hex() for p in proof])


# The routes: thin, reading the ledger through the app's state (LedgerDep).
routes = APIRouter()


@routes.get("/v1/ledger/key", response_model=KeyOut)
def key(ledger: LedgerDep) -> KeyOut:
    return KeyOut(node=ledger.node_id, public_key=ledger.public_key.text,
                  certification=_certification(ledger))


@routes.get("/v1/ledger/head", response_model=HeadOut)
def head(ledger: LedgerDep) -> HeadOut:
    # Signs a fresh head only if entries were appended since the last one.
    return HeadOut(**current_head(ledger).to_dict(), public_key=ledger.public_key.text,
                   key_certification=_certification(ledger))


@routes.get("/v1/ledger/entries", response_model=EntriesOut)
def entries(ledger: LedgerDep, start: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
            end: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
            limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
            type: _Filter = None, partner: _Filter = None, dataset: _Filter = None,
            purpose: _Filter = None, outcome: _Filter = None,
            since: _Filter = None, until: _Filter = None) -> EntriesOut:
    try:
        where = EntryFilter(type, partner, dataset, purpose, outcome, since, until)
        rows = list(ledger.entries(start, end, where=where, limit=limit + 1))
    except ValueError as exc:
        raise _proof_error(exc) from None
    more = len(rows) > limit
    rows = rows[:limit]
    return EntriesOut(
        entries=[EntryOut(index=i, entry_b64=base64.b64encode(b).decode(),
                          entry=json.loads(b)) for i, b in rows],
        next=rows[-1][0] + 1 if more else None)


@routes.get("/v1/ledger/proof/inclusion", response_model=ProofOut)
def inclusion(ledger: LedgerDep, index: Annotated[int, Query(ge=0, le=INT64_MAX)],
              size: Annotated[int, Query(ge=1, le=INT64_MAX)]) -> ProofOut:
    return _proof(ledger.inclusion_proof, index, size)


@routes.get("/v1/ledger/proof/consistency", response_model=ProofOut)
def consistency(ledger: LedgerDep, first: Annotated[int, Query(ge=1, le=INT64_MAX)],
                second: Annotated[int, Query(ge=1, le=INT64_MAX)]) -> ProofOut:
    return _proof(ledger.consistency_proof, first, second)


@routes.get("/v1/ledger/cosigned-head")
def cosigned_head(ledger: LedgerDep) -> dict:
    """The head with every cosignature gathered for it (C2SP cosigned checkpoint, in JSON)."""
    from node.ledger.witness import Witness
    from node.ledger.witness_pki import certifications_of
    head = ledger.sign_head()
    cosignatures = Witness(ledger).cosignatures_of(head)
    return {"head": head.to_dict(), "cosignatures": [c.to_dict() for c in cosignatures],
            "witness_certifications": certifications_of(ledger.engine, {c.witness for c in cosignatures})}


@routes.get("/v1/ledger/witnessing")
def witnessing(ledger: LedgerDep) -> dict:
    """The node's witness record: cosignatures, pinned keys, conflicts with both heads."""
    from node.ledger.witness import Witness
    from node.ledger.witness_evidence import evidence
    return evidence(Witness(ledger))


@routes.get("/v1/ledger/export")
def export(ledger: LedgerDep) -> StreamingResponse:
    head = current_head(ledger)
    return StreamingResponse(export_lines(ledger, head), media_type="application/x-ndjson",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{head.node}-{head.size}.jsonl"'})


class HttpLogSource:
    """A LogSource over the auditor HTTP API (httpx)."""

    def __init__(self, base_url: str, token: str, *, client: httpx.Client | None = None,
                 timeout: float = 30.0) -> None:
        self.name = base_url
        self._client = client or httpx.Client(base_url=base_url, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"}

    def _get(self, path: str, **params: Any) -> Any:
        try:
            response = self._client.get(path, params=params, headers=self._headers)
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.name}: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise SourceError(f"{self.name}: the auditor token was refused "
                              f"({response.status_code})")
        if response.status_code != 200:
            raise SourceError(f"{self.name}{path}: HTTP {response.status_code}")
        return response.json()

    def public_key(self) -> LedgerPublicKey:
        return LedgerPublicKey.from_text(self._get("/v1/ledger/key")["public_key"])

    def tree_head(self) -> SignedTreeHead:
        body = self._get("/v1/ledger/head")
        try:
            certification = body.get("key_certification")
            self._certification = None if certification is None else \
                KeyCertification.from_dict(certification)
            return SignedTreeHead.from_dict({k: body.get(k) for k in _HEAD_FIELDS})
        except (AttributeError, CertificationError) as exc:
            raise SourceError(f"{self.name}/v1/ledger/head: malformed ({exc})") from None

    def key_certification(self) -> KeyCertification | None:
        """The certification published with the last head fetched."""
        if not hasattr(self, "_certification"):
            self.tree_head()
        return self._certification

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        while start < end:
            page = self._get("/v1/ledger/entries", start=start, end=end, limit=MAX_PAGE)
            for item in page["entries"]:
                yield item["index"], base64.b64decode(item["entry_b64"], validate=True)
            if page["next"] is None:
                return
            start = page["next"]

    def _proof(self, path: str, **params: int) -> list[bytes]:
        try:
            return [bytes.fromhex(p) for p in self._get(path, **params)["proof"]]
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"{self.name}{path}: malformed proof") from None

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._proof("/v1/ledger/proof/inclusion", index=index, size=size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return self._proof("/v1/ledger/proof/consistency", first=first, second=second)

    def witnessing(self) -> dict:
        """The node's witness record (witness_evidence.py)."""
        return self._get("/v1/ledger/witnessing")

    def decoded(self, **filters: Any) -> list[tuple[int, Any]]:
        """Entries matching auditor filters, decoded (for browsing, not for verifying)."""
        page = self._get("/v1/ledger/entries", **{"limit": MAX_PAGE, **filters})
        return [(i["index"], decode(base64.b64decode(i["entry_b64"]))) for i in page["entries"]]
