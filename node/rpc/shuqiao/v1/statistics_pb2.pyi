from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatisticsKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATISTICS_KIND_UNSPECIFIED: _ClassVar[StatisticsKind]
    STATISTICS_KIND_AGGREGATE: _ClassVar[StatisticsKind]
    STATISTICS_KIND_THRESHOLD: _ClassVar[StatisticsKind]

class AggregateOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_OP_UNSPECIFIED: _ClassVar[AggregateOp]
    AGGREGATE_OP_COUNT: _ClassVar[AggregateOp]
    AGGREGATE_OP_SUM: _ClassVar[AggregateOp]
    AGGREGATE_OP_MEAN: _ClassVar[AggregateOp]
STATISTICS_KIND_UNSPECIFIED: StatisticsKind
STATISTICS_KIND_AGGREGATE: StatisticsKind
STATISTICS_KIND_THRESHOLD: StatisticsKind
AGGREGATE_OP_UNSPECIFIED: AggregateOp
AGGREGATE_OP_COUNT: AggregateOp
AGGREGATE_OP_SUM: AggregateOp
AGGREGATE_OP_MEAN: AggregateOp

class StatisticsHeader(_message.Message):
    __slots__ = ("query_id", "dataset", "version", "epoch", "purpose", "total_elements", "kind", "value_column", "ops", "group_by", "key_id", "table_digest")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_COLUMN_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TABLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    dataset: str
    version: int
    epoch: int
    purpose: str
    total_elements: int
    kind: StatisticsKind
    value_column: str
    ops: _containers.RepeatedScalarFieldContainer[AggregateOp]
    group_by: str
    key_id: bytes
    table_digest: bytes
    def __init__(self, query_id: _Optional[str] = ..., dataset: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., purpose: _Optional[str] = ..., total_elements: _Optional[int] = ..., kind: _Optional[_Union[StatisticsKind, str]] = ..., value_column: _Optional[str] = ..., ops: _Optional[_Iterable[_Union[AggregateOp, str]]] = ..., group_by: _Optional[str] = ..., key_id: _Optional[bytes] = ..., table_digest: _Optional[bytes] = ...) -> None: ...

class StatisticsChunk(_message.Message):
    __slots__ = ("data", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class StatisticsAccepted(_message.Message):
    __slots__ = ("query_id", "max_chunk_bytes", "rows", "unusable_rows", "max_batch_elements")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    UNUSABLE_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    max_chunk_bytes: int
    rows: int
    unusable_rows: int
    max_batch_elements: int
    def __init__(self, query_id: _Optional[str] = ..., max_chunk_bytes: _Optional[int] = ..., rows: _Optional[int] = ..., unusable_rows: _Optional[int] = ..., max_batch_elements: _Optional[int] = ...) -> None: ...

class AggregateRequest(_message.Message):
    __slots__ = ("header", "match_request", "masked")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MATCH_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    header: StatisticsHeader
    match_request: StatisticsChunk
    masked: StatisticsChunk
    def __init__(self, header: _Optional[_Union[StatisticsHeader, _Mapping]] = ..., match_request: _Optional[_Union[StatisticsChunk, _Mapping]] = ..., masked: _Optional[_Union[StatisticsChunk, _Mapping]] = ...) -> None: ...

class AggregateSummary(_message.Message):
    __slots__ = ("query_id", "epsilon_micro", "count_noise_bound", "sum_noise_bound", "min_group_size", "value_bound", "receipt", "ledger_public_key")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    EPSILON_MICRO_FIELD_NUMBER: _ClassVar[int]
    COUNT_NOISE_BOUND_FIELD_NUMBER: _ClassVar[int]
    SUM_NOISE_BOUND_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    VALUE_BOUND_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    epsilon_micro: int
    count_noise_bound: int
    sum_noise_bound: int
    min_group_size: int
    value_bound: int
    receipt: bytes
    ledger_public_key: str
    def __init__(self, query_id: _Optional[str] = ..., epsilon_micro: _Optional[int] = ..., count_noise_bound: _Optional[int] = ..., sum_noise_bound: _Optional[int] = ..., min_group_size: _Optional[int] = ..., value_bound: _Optional[int] = ..., receipt: _Optional[bytes] = ..., ledger_public_key: _Optional[str] = ...) -> None: ...

class AggregateResponse(_message.Message):
    __slots__ = ("accepted", "match_response", "columns", "release", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MATCH_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: StatisticsAccepted
    match_response: StatisticsChunk
    columns: StatisticsChunk
    release: StatisticsChunk
    summary: AggregateSummary
    def __init__(self, accepted: _Optional[_Union[StatisticsAccepted, _Mapping]] = ..., match_response: _Optional[_Union[StatisticsChunk, _Mapping]] = ..., columns: _Optional[_Union[StatisticsChunk, _Mapping]] = ..., release: _Optional[_Union[StatisticsChunk, _Mapping]] = ..., summary: _Optional[_Union[AggregateSummary, _Mapping]] = ...) -> None: ...

class ThresholdTableRequest(_message.Message):
    __slots__ = ("dataset", "held_digest")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    HELD_DIGEST_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    held_digest: bytes
    def __init__(self, dataset: _Optional[str] = ..., held_digest: _Optional[bytes] = ...) -> None: ...

class ThresholdTableInfo(_message.Message):
    __slots__ = ("dataset", "version", "epoch", "modulus", "key_id", "rows", "unusable_rows", "digest", "tag_length", "label_length", "delta_from")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MODULUS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    UNUSABLE_ROWS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TAG_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LABEL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DELTA_FROM_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    version: int
    epoch: int
    modulus: bytes
    key_id: bytes
    rows: int
    unusable_rows: int
    digest: bytes
    tag_length: int
    label_length: int
    delta_from: bytes
    def __init__(self, dataset: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., modulus: _Optional[bytes] = ..., key_id: _Optional[bytes] = ..., rows: _Optional[int] = ..., unusable_rows: _Optional[int] = ..., digest: _Optional[bytes] = ..., tag_length: _Optional[int] = ..., label_length: _Optional[int] = ..., delta_from: _Optional[bytes] = ...) -> None: ...

class ThresholdTableRows(_message.Message):
    __slots__ = ("tags", "labels")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    tags: bytes
    labels: bytes
    def __init__(self, tags: _Optional[bytes] = ..., labels: _Optional[bytes] = ...) -> None: ...

class ThresholdTableChunk(_message.Message):
    __slots__ = ("info", "rows", "removed")
    INFO_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    info: ThresholdTableInfo
    rows: ThresholdTableRows
    removed: bytes
    def __init__(self, info: _Optional[_Union[ThresholdTableInfo, _Mapping]] = ..., rows: _Optional[_Union[ThresholdTableRows, _Mapping]] = ..., removed: _Optional[bytes] = ...) -> None: ...

class StatisticsBatch(_message.Message):
    __slots__ = ("seq", "elements")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    elements: bytes
    def __init__(self, seq: _Optional[int] = ..., elements: _Optional[bytes] = ...) -> None: ...

class ThresholdRequest(_message.Message):
    __slots__ = ("header", "batch", "comparison")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    header: StatisticsHeader
    batch: StatisticsBatch
    comparison: StatisticsChunk
    def __init__(self, header: _Optional[_Union[StatisticsHeader, _Mapping]] = ..., batch: _Optional[_Union[StatisticsBatch, _Mapping]] = ..., comparison: _Optional[_Union[StatisticsChunk, _Mapping]] = ...) -> None: ...

class ThresholdEvaluated(_message.Message):
    __slots__ = ("seq", "elements", "proof")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    seq: int
    elements: bytes
    proof: bytes
    def __init__(self, seq: _Optional[int] = ..., elements: _Optional[bytes] = ..., proof: _Optional[bytes] = ...) -> None: ...

class ThresholdSummary(_message.Message):
    __slots__ = ("query_id", "entries", "receipt", "ledger_public_key")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    entries: int
    receipt: bytes
    ledger_public_key: str
    def __init__(self, query_id: _Optional[str] = ..., entries: _Optional[int] = ..., receipt: _Optional[bytes] = ..., ledger_public_key: _Optional[str] = ...) -> None: ...

class ThresholdResponse(_message.Message):
    __slots__ = ("accepted", "evaluated", "signs", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    SIGNS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: StatisticsAccepted
    evaluated: ThresholdEvaluated
    signs: StatisticsChunk
    summary: ThresholdSummary
    def __init__(self, accepted: _Optional[_Union[StatisticsAccepted, _Mapping]] = ..., evaluated: _Optional[_Union[ThresholdEvaluated, _Mapping]] = ..., signs: _Optional[_Union[StatisticsChunk, _Mapping]] = ..., summary: _Optional[_Union[ThresholdSummary, _Mapping]] = ...) -> None: ...
