"""Node configuration: TOML validated by a strict pydantic schema.

A config is built by `load_config(path)`, never at import time. Relative paths in the
file are resolved against the file's directory, so a config can be moved together with
its node directory. `mode = "production"` refuses the pilot conveniences (plain-text
TLS keys, a KEK in the environment, loopback-only listeners are fine either way).
"""
from __future__ import annotations

import enum
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.core.errors import ConfigError  # re-exported: the config's error, raised here
from node.core.service_config import ServiceSection, TokenEntry
from node.core.source_config import NamedSqlSource, SourcesSection  # noqa: F401  (config schema)

NODE_ID = r"^[a-z][a-z0-9_-]{1,62}$"
DATASET_NAME = r"^[a-z][a-z0-9_]{1,62}$"
PURPOSE = r"^[a-z0-9][a-z0-9._-]{1,62}$"

NodeId = Annotated[str, Field(pattern=NODE_ID)]
DatasetName = Annotated[str, Field(pattern=DATASET_NAME)]
PurposeCode = Annotated[str, Field(pattern=PURPOSE)]


class Mode(str, enum.Enum):
    PILOT = "pilot"
    PRODUCTION = "production"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Strict):
    id: NodeId
    display_name: str = ""
    mode: Mode = Mode.PILOT
    data_dir: Path = Path("var")
    kek_file: Path | None = None  # default: <data_dir>/keys/node.kek


class StorageSection(_Strict):
    # Any SQLAlchemy URL. Default: SQLite (WAL) at <data_dir>/node.db.
    url: str | None = None


class GrpcSection(_Strict):
    listen: str = "127.0.0.1:0"
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    max_batch_elements: int = Field(default=4096, ge=1, le=65536)
    max_query_elements: int = Field(default=1_000_000, ge=1)
    deadline_seconds: float = Field(default=300.0, gt=0, le=3600)
    workers: int = Field(default=0, ge=0, le=256)  # 0: one per core
    # Call limits (node/transport/identity.py): worker threads of the gRPC server, how many of
    # them query work may never take (kept for health, listing, ledger reads, refusals),
    # concurrent query calls per partner, and how long a stream may wait for the
    # caller's next message before it is cancelled.
    server_threads: int = Field(default=32, ge=4, le=1024)
    reserved_threads: int = Field(default=6, ge=2, le=256)
    partner_streams: int = Field(default=8, ge=1, le=1024)
    idle_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Channels to partners ping this often, idle or not; the server permits it (channels.py).
    keepalive_seconds: float = Field(default=60.0, ge=0.1, le=7200)
    # How long opening a channel to a partner waits for the mutual-TLS connection.
    connect_seconds: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _call_limits(self) -> "GrpcSection":
        if self.reserved_threads >= self.server_threads:
            raise ValueError("reserved_threads must be smaller than server_threads")
        if self.partner_streams > self.server_threads - self.reserved_threads:
            raise ValueError("partner_streams must not exceed server_threads - reserved_threads")
        return self

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}", v):
            raise ValueError("listen must be HOST:PORT, e.g. 127.0.0.1:50051")
        return v


class QuerySection(_Strict):
    """How this node asks: VOPRF proof checking."""
    # "sampled": after each batch, a proof over `proof_sample` random elements chosen
    # after the answer arrived (the answerer cannot tell whose element is whose, so it
    # cannot cheat on chosen people); "full": a proof over every element (slower).
    verification: Literal["sampled", "full"] = "sampled"
    proof_sample: int = Field(default=32, ge=1, le=4096)
    # Refuse to ask about anyone without an authorisation reference (consent or
    # application number); its digest is bound into this node's query record.
    require_authorisation: bool = False
    # Cardinality: this node's own noise on the count its partner computes (dummy
    # matches, a discrete Laplace at this epsilon): what the agency learns is c + d'.
    cardinality_epsilon: float = Field(default=1.0, gt=0, le=10)


class MaintenanceSection(_Strict):
    # How often `shuqiao serve` looks for due key rotations (and other periodic work).
    interval_seconds: float = Field(default=3600.0, ge=1.0)
    # How often partners' ledger heads are fetched, checked and cosigned (witnessing).
    witness_seconds: float = Field(default=300.0, ge=1.0)


class HttpSection(_Strict):
    """The auditor and admin HTTP API (HTTPS with the node's certificate by default)."""
    listen: str | None = None  # e.g. "127.0.0.1:8443"; None: no HTTP API
    tls: bool = True
    # Plain HTTP (tls = false) is served on a loopback address only (e.g. behind a local
    # TLS proxy), unless this says the node is a development setup; never in production.
    plain_http_for_development: bool = False
    # Bearer tokens, stored only as "sha256:<hex>" digests (`shuqiao token new` makes one).
    # A metrics token opens /metrics only (a scraper's); auditor tokens open it too.
    auditor_tokens: list[str] = Field(default_factory=list)
    admin_tokens: list[str] = Field(default_factory=list)
    metrics_tokens: list[str] = Field(default_factory=list)
    # Named tokens with a role and scopes (node/core/service_config.py): `[[http.tokens]]`.
    tokens: list[TokenEntry] = Field(default_factory=list)

    @field_validator("auditor_tokens", "admin_tokens", "metrics_tokens")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        if not all(re.fullmatch(r"sha256:[0-9a-f]{64}", t) for t in v):
            raise ValueError("tokens are configured as sha256:<64 hex> digests, never in clear")
        return v


class LoggingSection(_Strict):
    """How `shuqiao serve` writes its log: text lines, or JSON lines (node/core/logs.py)."""
    format: Literal["text", "json"] = "text"


class AuditorSection(_Strict):
    """An auditor's certificate identity, allowed to read (not write) the ledger over gRPC."""
    id: NodeId
    display_name: str = ""


class TlsSection(_Strict):
    ca: Path
    cert: Path
    key: Path
    key_sealed: bool = False  # the key file is encrypted under the node KEK


class PartnerSection(_Strict):
    id: NodeId
    display_name: str = ""
    # Where to reach this partner when we ask it; omit for partners that only ask us.
    address: str | None = None


class QueryKindName(str, enum.Enum):
    MEMBERSHIP = "membership"
    LABELED = "labeled"
    PREDICATE = "predicate"
    CARDINALITY = "cardinality"
    AGGREGATE = "aggregate"
    THRESHOLD = "threshold"
    # Bulk PSI (protocols/bulk, KKRT16): a whole list at once, fast for large lists, but
    # secure only against a fund centre that follows the protocol (SECURITY.md, "bulk").
    BULK = "bulk"


# Kinds whose answer is a count over the asked elements: without DP, one element asked
# is exact membership, so they have a floor of their own (DatasetGrant).
COUNTING_KINDS = frozenset({"cardinality", "aggregate"})


class PurposeGrant(_Strict):
    """A purpose a partner may state, and the legal basis the agency relies on for it."""
    code: PurposeCode
    legal_basis: str = ""


class DatasetGrant(_Strict):
    """What one partner may ask of one dataset (the agency's policy)."""
    partner: NodeId
    purposes: list[PurposeGrant] = Field(min_length=1)
    kinds: list[QueryKindName] = Field(default_factory=lambda: [QueryKindName.MEMBERSHIP], min_length=1)
    predicate_columns: list[str] = Field(default_factory=list)   # columns a predicate may use
    label_attributes: list[str] = Field(default_factory=list)    # attributes a labeled query opens
    label_pad_to: int = Field(default=64, ge=32, le=4096)        # every label padded to this size
    min_elements: int = Field(default=1, ge=1)                   # smaller queries are refused
    # Counting kinds (cardinality, aggregate) ask at least this many distinct elements
    # too; a grant giving exact (non-DP) counts with a floor of 1 must say
    # `exact_small_counts = true`, as it reveals one person's membership exactly.
    min_counting_elements: int = Field(default=10, ge=1)
    exact_small_counts: bool = False
    max_elements: int = Field(default=1_000_000, ge=1)
    daily_elements: int | None = Field(default=None, ge=1)       # per partner, rolling 24 h
    monthly_elements: int | None = Field(default=None, ge=1)     # per partner, rolling 30 days
    epoch_elements: int | None = Field(default=None, ge=1)       # per partner and key epoch
    daily_preparations: int = Field(default=10, ge=0)            # predicate tables built, rolling 24 h
    # Differential privacy for cardinality: epsilon charged per query (None: exact
    # counts), and the budget per partner and key epoch after which queries are refused.
    dp_epsilon: float | None = Field(default=None, gt=0, le=10)
    dp_budget: float | None = Field(default=None, gt=0)
    dp_delta: float = Field(default=1e-9, gt=0, lt=1e-3)
    # Aggregate and threshold kinds: attributes an aggregate may sum or group by, the
    # smallest group released, the largest value one row may add to a sum (the DP
    # sensitivity; required for noised sums, rows above it are left out), and the
    # attribute threshold checks compare against.
    aggregate_columns: list[str] = Field(default_factory=list)
    min_group_size: int = Field(default=10, ge=1)
    aggregate_value_bound: int | None = Field(default=None, ge=1, lt=2**62)
    threshold_column: str | None = None
    # Bulk (KKRT16) is secure only against a partner running honest software: a modified
    # fund-centre node can read the agency's per-query secret off people it knows and then
    # test any identifier offline (SECURITY.md, "bulk"). A grant of bulk says so explicitly.
    bulk_trusts_partner_software: bool = False

    @field_validator("purposes", mode="before")
    @classmethod
    def _plain_codes(cls, v):
        # `purposes = ["code"]` is shorthand for `[{ code = "code" }]`.
        return [{"code": p} if isinstance(p, str) else p for p in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _bounds(self) -> "DatasetGrant":
        if self.min_elements > self.max_elements:
            raise ValueError("min_elements must not exceed max_elements")
        counting = COUNTING_KINDS & {k.value for k in self.kinds}
        if counting:
            floor = max(self.min_elements, self.min_counting_elements)
            if floor > self.max_elements:
                raise ValueError("min_counting_elements must not exceed max_elements "
                                 f"for {', '.join(sorted(counting))}")
            if floor <= 1 and self.dp_epsilon is None and not self.exact_small_counts:
                raise ValueError(
                    f"a grant of {', '.join(sorted(counting))} without dp_epsilon needs a floor above "
                    "one element (min_counting_elements), or exact_small_counts = true to "
                    "release exact counts of single elements deliberately")
        if QueryKindName.BULK in self.kinds and not self.bulk_trusts_partner_software:
            raise ValueError(
                "bulk is secure only while the partner's node software is honest (a modified "
                "one can recover every row of the dataset; SECURITY.md, \"bulk\"): grant it with "
                "bulk_trusts_partner_software = true, or use membership")
        return self

    @field_validator("label_pad_to")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("label_pad_to must be a power of two (32 ... 4096)")
        return v

    @property
    def purpose_codes(self) -> list[str]:
        return [p.code for p in self.purposes]


class DatasetSection(_Strict):
    name: DatasetName
    description: str = ""
    grants: list[DatasetGrant] = Field(default_factory=list)
    tag_length: int = Field(default=16, ge=12, le=32)
    # "voprf" (RFC 9497 mode 0x01): evaluations carry DLEQ proofs against the epoch's
    # published key, so an asker detects a wrong or inconsistent key. "oprf": mode 0x00.
    oprf_mode: Literal["voprf", "oprf"] = "voprf"
    epoch_days: int = Field(default=90, ge=1, le=3650)   # keys rotate after this many days
    grace_days: int = Field(default=7, ge=0, le=365)     # the previous epoch still answers

    @property
    def mode_number(self) -> int:
        """The RFC 9497 mode byte of this dataset's evaluations."""
        return 0x01 if self.oprf_mode == "voprf" else 0x00


class PredicateTablesSection(_Strict):
    """Tables of the rows matching a partner's predicate, kept for its queries. Per
    partner, the least recently used are deleted beyond these bounds (a later query
    with that predicate is refused until it is prepared again)."""
    max_tables: int = Field(default=8, ge=1, le=1024)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)


class NodeConfig(_Strict):
    node: NodeSection
    storage: StorageSection = StorageSection()
    grpc: GrpcSection = GrpcSection()
    maintenance: MaintenanceSection = MaintenanceSection()
    http: HttpSection = HttpSection()
    service: ServiceSection = ServiceSection()
    logging: LoggingSection = LoggingSection()
    sources: SourcesSection = SourcesSection()
    auditors: list[AuditorSection] = Field(default_factory=list)
    query: QuerySection = QuerySection()
    predicate_tables: PredicateTablesSection = PredicateTablesSection()
    tls: TlsSection
    partners: list[PartnerSection] = Field(default_factory=list)
    datasets: list[DatasetSection] = Field(default_factory=list)
    # Directory of the file the config was read from; relative paths resolve here.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "NodeConfig":
        partner_ids = [p.id for p in self.partners]
        if len(set(partner_ids)) != len(partner_ids):
            raise ValueError("partner ids must be unique")
        if self.node.id in partner_ids:
            raise ValueError("a node cannot list itself as a partner")
        tokens = [t.name for t in self.http.tokens]
        if len(set(tokens)) != len(tokens):
            raise ValueError("http.tokens names must be unique")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("dataset names must be unique")
        for d in self.datasets:
            for g in d.grants:
                if g.partner not in partner_ids:
                    raise ValueError(
                        f"dataset {d.name!r} grants partner {g.partner!r}, which is not in [[partners]]")
        if self.http.listen and not self.http.tls and not _loopback(self.http.listen):
            if self.node.mode is Mode.PRODUCTION or not self.http.plain_http_for_development:
                raise ValueError(
                    f"http.listen {self.http.listen!r} would serve tokens and ledger entries over "
                    "plain HTTP on a non-loopback address: set http.tls = true, or listen on "
                    "127.0.0.1 behind a TLS proxy (a pilot mode node may set "
                    "http.plain_http_for_development = true)")
        if self.node.mode is Mode.PRODUCTION:
            if self.http.plain_http_for_development:
                raise ValueError("production mode refuses http.plain_http_for_development")
            if not self.tls.key_sealed:
                raise ValueError("production mode requires tls.key_sealed = true")
            for d in self.datasets:
                for g in d.grants:
                    if any(not p.legal_basis for p in g.purposes):
                        raise ValueError(f"production mode requires a legal_basis for every purpose "
                                         f"(dataset {d.name!r}, partner {g.partner!r})")
        return self

    # -- resolved paths -------------------------------------------------------------
    def path(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def data_dir(self) -> Path:
        return self.path(self.node.data_dir)

    @property
    def kek_path(self) -> Path:
        return self.path(self.node.kek_file) if self.node.kek_file else self.data_dir / "keys" / "node.kek"

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.data_dir / 'node.db'}"

    def partner(self, partner_id: str) -> PartnerSection:
        for p in self.partners:
            if p.id == partner_id:
                return p
        known = ", ".join(p.id for p in self.partners) or "none"
        raise ConfigError(f"partner {partner_id!r} is not configured (configured partners: {known})")

    def dataset(self, name: str) -> DatasetSection | None:
        return next((d for d in self.datasets if d.name == name), None)


def _loopback(listen: str) -> bool:
    import ipaddress
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def read_toml(path: Path, what: str, error: type[Exception]) -> dict:
    """The TOML document at ``path``; a missing or malformed file raises ``error``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a node config.

    Raises:
        ConfigError: with every schema violation listed by its TOML location.
    """
    path = Path(path)
    raw = read_toml(path, "config file", ConfigError)
    if "base_dir" in raw:
        raise ConfigError(f"{path}: 'base_dir' is not a config key")
    try:
        return NodeConfig.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        lines = [f"{path}: invalid config:"]
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
