from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUERY_KIND_UNSPECIFIED: _ClassVar[QueryKind]
    QUERY_KIND_MEMBERSHIP: _ClassVar[QueryKind]
    QUERY_KIND_LABELED: _ClassVar[QueryKind]
    QUERY_KIND_PREDICATE: _ClassVar[QueryKind]
    QUERY_KIND_CARDINALITY: _ClassVar[QueryKind]
    QUERY_KIND_BULK: _ClassVar[QueryKind]
QUERY_KIND_UNSPECIFIED: QueryKind
QUERY_KIND_MEMBERSHIP: QueryKind
QUERY_KIND_LABELED: QueryKind
QUERY_KIND_PREDICATE: QueryKind
QUERY_KIND_CARDINALITY: QueryKind
QUERY_KIND_BULK: QueryKind

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "version", "epoch", "row_count", "id_type", "purposes", "tag_table_digest", "tag_length", "public_key", "oprf_mode", "label_length", "predicate", "label_attributes", "kinds", "grant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    TAG_TABLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TAG_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    OPRF_MODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    epoch: int
    row_count: int
    id_type: str
    purposes: _containers.RepeatedScalarFieldContainer[str]
    tag_table_digest: bytes
    tag_length: int
    public_key: bytes
    oprf_mode: int
    label_length: int
    predicate: str
    label_attributes: _containers.RepeatedScalarFieldContainer[str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    grant: CallerGrant
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., row_count: _Optional[int] = ..., id_type: _Optional[str] = ..., purposes: _Optional[_Iterable[str]] = ..., tag_table_digest: _Optional[bytes] = ..., tag_length: _Optional[int] = ..., public_key: _Optional[bytes] = ..., oprf_mode: _Optional[int] = ..., label_length: _Optional[int] = ..., predicate: _Optional[str] = ..., label_attributes: _Optional[_Iterable[str]] = ..., kinds: _Optional[_Iterable[str]] = ..., grant: _Optional[_Union[CallerGrant, _Mapping]] = ...) -> None: ...

class CallerGrant(_message.Message):
    __slots__ = ("purposes", "predicate_columns", "label_attributes", "min_elements", "max_elements", "min_counting_elements", "quotas", "privacy", "aggregate_columns", "threshold_column", "min_group_size")
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LABEL_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MIN_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MIN_COUNTING_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_COLUMN_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    purposes: _containers.RepeatedCompositeFieldContainer[GrantedPurpose]
    predicate_columns: _containers.RepeatedScalarFieldContainer[str]
    label_attributes: _containers.RepeatedScalarFieldContainer[str]
    min_elements: int
    max_elements: int
    min_counting_elements: int
    quotas: _containers.RepeatedCompositeFieldContainer[QuotaUse]
    privacy: PrivacyBudget
    aggregate_columns: _containers.RepeatedScalarFieldContainer[str]
    threshold_column: str
    min_group_size: int
    def __init__(self, purposes: _Optional[_Iterable[_Union[GrantedPurpose, _Mapping]]] = ..., predicate_columns: _Optional[_Iterable[str]] = ..., label_attributes: _Optional[_Iterable[str]] = ..., min_elements: _Optional[int] = ..., max_elements: _Optional[int] = ..., min_counting_elements: _Optional[int] = ..., quotas: _Optional[_Iterable[_Union[QuotaUse, _Mapping]]] = ..., privacy: _Optional[_Union[PrivacyBudget, _Mapping]] = ..., aggregate_columns: _Optional[_Iterable[str]] = ..., threshold_column: _Optional[str] = ..., min_group_size: _Optional[int] = ...) -> None: ...

class GrantedPurpose(_message.Message):
    __slots__ = ("code", "legal_basis")
    CODE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    code: str
    legal_basis: str
    def __init__(self, code: _Optional[str] = ..., legal_basis: _Optional[str] = ...) -> None: ...

class QuotaUse(_message.Message):
    __slots__ = ("window", "used", "limit", "left")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    window: str
    used: int
    limit: int
    left: int
    def __init__(self, window: _Optional[str] = ..., used: _Optional[int] = ..., limit: _Optional[int] = ..., left: _Optional[int] = ...) -> None: ...

class PrivacyBudget(_message.Message):
    __slots__ = ("epsilon_per_query", "spent", "budget", "left")
    EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    epsilon_per_query: float
    spent: float
    budget: float
    left: float
    def __init__(self, epsilon_per_query: _Optional[float] = ..., spent: _Optional[float] = ..., budget: _Optional[float] = ..., left: _Optional[float] = ...) -> None: ...

class PrepareTableRequest(_message.Message):
    __slots__ = ("dataset", "predicate")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    predicate: str
    def __init__(self, dataset: _Optional[str] = ..., predicate: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...

class SyncTagTableRequest(_message.Message):
    __slots__ = ("dataset", "version", "epoch", "predicate", "base_version")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    version: int
    epoch: int
    predicate: str
    base_version: int
    def __init__(self, dataset: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., predicate: _Optional[str] = ..., base_version: _Optional[int] = ...) -> None: ...

class TagRows(_message.Message):
    __slots__ = ("tags", "labels")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    tags: bytes
    labels: bytes
    def __init__(self, tags: _Optional[bytes] = ..., labels: _Optional[bytes] = ...) -> None: ...

class TagTableChunk(_message.Message):
    __slots__ = ("header", "rows", "removed_tags", "base_version")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_TAGS_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    header: DatasetInfo
    rows: TagRows
    removed_tags: bytes
    base_version: int
    def __init__(self, header: _Optional[_Union[DatasetInfo, _Mapping]] = ..., rows: _Optional[_Union[TagRows, _Mapping]] = ..., removed_tags: _Optional[bytes] = ..., base_version: _Optional[int] = ...) -> None: ...

class QueryHeader(_message.Message):
    __slots__ = ("query_id", "dataset", "version", "epoch", "purpose", "total_elements", "kind", "predicate", "consent_digest")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    dataset: str
    version: int
    epoch: int
    purpose: str
    total_elements: int
    kind: QueryKind
    predicate: str
    consent_digest: str
    def __init__(self, query_id: _Optional[str] = ..., dataset: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., purpose: _Optional[str] = ..., total_elements: _Optional[int] = ..., kind: _Optional[_Union[QueryKind, str]] = ..., predicate: _Optional[str] = ..., consent_digest: _Optional[str] = ...) -> None: ...

class ElementBatch(_message.Message):
    __slots__ = ("seq", "elements")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    elements: bytes
    def __init__(self, seq: _Optional[int] = ..., elements: _Optional[bytes] = ...) -> None: ...

class Finish(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProofRequest(_message.Message):
    __slots__ = ("seq", "indices")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seq: _Optional[int] = ..., indices: _Optional[_Iterable[int]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("header", "batch", "finish", "proof_request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    PROOF_REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: QueryHeader
    batch: ElementBatch
    finish: Finish
    proof_request: ProofRequest
    def __init__(self, header: _Optional[_Union[QueryHeader, _Mapping]] = ..., batch: _Optional[_Union[ElementBatch, _Mapping]] = ..., finish: _Optional[_Union[Finish, _Mapping]] = ..., proof_request: _Optional[_Union[ProofRequest, _Mapping]] = ...) -> None: ...

class BatchProof(_message.Message):
    __slots__ = ("seq", "proof")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    seq: int
    proof: bytes
    def __init__(self, seq: _Optional[int] = ..., proof: _Optional[bytes] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("query_id", "max_batch_elements")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    max_batch_elements: int
    def __init__(self, query_id: _Optional[str] = ..., max_batch_elements: _Optional[int] = ...) -> None: ...

class QuerySummary(_message.Message):
    __slots__ = ("query_id", "elements_evaluated", "receipt", "ledger_public_key")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    elements_evaluated: int
    receipt: bytes
    ledger_public_key: str
    def __init__(self, query_id: _Optional[str] = ..., elements_evaluated: _Optional[int] = ..., receipt: _Optional[bytes] = ..., ledger_public_key: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("accepted", "batch", "summary", "proof")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    batch: ElementBatch
    summary: QuerySummary
    proof: BatchProof
    def __init__(self, accepted: _Optional[_Union[Accepted, _Mapping]] = ..., batch: _Optional[_Union[ElementBatch, _Mapping]] = ..., summary: _Optional[_Union[QuerySummary, _Mapping]] = ..., proof: _Optional[_Union[BatchProof, _Mapping]] = ...) -> None: ...

class CardinalityOpen(_message.Message):
    __slots__ = ("point", "padding")
    POINT_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    point: bytes
    padding: int
    def __init__(self, point: _Optional[bytes] = ..., padding: _Optional[int] = ...) -> None: ...

class CardinalityRequest(_message.Message):
    __slots__ = ("header", "open", "batch", "finish", "rows")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    header: QueryHeader
    open: CardinalityOpen
    batch: ElementBatch
    finish: Finish
    rows: bytes
    def __init__(self, header: _Optional[_Union[QueryHeader, _Mapping]] = ..., open: _Optional[_Union[CardinalityOpen, _Mapping]] = ..., batch: _Optional[_Union[ElementBatch, _Mapping]] = ..., finish: _Optional[_Union[Finish, _Mapping]] = ..., rows: _Optional[bytes] = ...) -> None: ...

class CardinalityKey(_message.Message):
    __slots__ = ("key", "rows")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    rows: int
    def __init__(self, key: _Optional[bytes] = ..., rows: _Optional[int] = ...) -> None: ...

class CardinalitySummary(_message.Message):
    __slots__ = ("query_id", "count", "noise_bound", "epsilon_micro", "receipt", "ledger_public_key")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NOISE_BOUND_FIELD_NUMBER: _ClassVar[int]
    EPSILON_MICRO_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    count: int
    noise_bound: int
    epsilon_micro: int
    receipt: bytes
    ledger_public_key: str
    def __init__(self, query_id: _Optional[str] = ..., count: _Optional[int] = ..., noise_bound: _Optional[int] = ..., epsilon_micro: _Optional[int] = ..., receipt: _Optional[bytes] = ..., ledger_public_key: _Optional[str] = ...) -> None: ...

class CardinalityResponse(_message.Message):
    __slots__ = ("accepted", "key", "rows", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    key: CardinalityKey
    rows: bytes
    summary: CardinalitySummary
    def __init__(self, accepted: _Optional[_Union[Accepted, _Mapping]] = ..., key: _Optional[_Union[CardinalityKey, _Mapping]] = ..., rows: _Optional[bytes] = ..., summary: _Optional[_Union[CardinalitySummary, _Mapping]] = ...) -> None: ...

class BulkRequest(_message.Message):
    __slots__ = ("header", "message")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    header: QueryHeader
    message: bytes
    def __init__(self, header: _Optional[_Union[QueryHeader, _Mapping]] = ..., message: _Optional[bytes] = ...) -> None: ...

class BulkSummary(_message.Message):
    __slots__ = ("query_id", "oprf_evaluations", "receipt", "ledger_public_key")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    OPRF_EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    oprf_evaluations: int
    receipt: bytes
    ledger_public_key: str
    def __init__(self, query_id: _Optional[str] = ..., oprf_evaluations: _Optional[int] = ..., receipt: _Optional[bytes] = ..., ledger_public_key: _Optional[str] = ...) -> None: ...

class BulkResponse(_message.Message):
    __slots__ = ("accepted", "message", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    message: bytes
    summary: BulkSummary
    def __init__(self, accepted: _Optional[_Union[Accepted, _Mapping]] = ..., message: _Optional[bytes] = ..., summary: _Optional[_Union[BulkSummary, _Mapping]] = ...) -> None: ...
