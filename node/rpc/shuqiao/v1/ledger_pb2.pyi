from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WitnessDocument(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    def __init__(self, document: _Optional[bytes] = ...) -> None: ...

class GetWitnessingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTreeHeadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignedTreeHead(_message.Message):
    __slots__ = ("node", "size", "root", "time", "signature", "cosignatures")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    COSIGNATURES_FIELD_NUMBER: _ClassVar[int]
    node: str
    size: int
    root: bytes
    time: str
    signature: bytes
    cosignatures: _containers.RepeatedCompositeFieldContainer[Cosignature]
    def __init__(self, node: _Optional[str] = ..., size: _Optional[int] = ..., root: _Optional[bytes] = ..., time: _Optional[str] = ..., signature: _Optional[bytes] = ..., cosignatures: _Optional[_Iterable[_Union[Cosignature, _Mapping]]] = ...) -> None: ...

class GetEntriesRequest(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("index", "entry")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    index: int
    entry: bytes
    def __init__(self, index: _Optional[int] = ..., entry: _Optional[bytes] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("index", "size")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    index: int
    size: int
    def __init__(self, index: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("first", "second")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    first: int
    second: int
    def __init__(self, first: _Optional[int] = ..., second: _Optional[int] = ...) -> None: ...

class Proof(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetPublicKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("node", "public_key", "certification")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATION_FIELD_NUMBER: _ClassVar[int]
    node: str
    public_key: str
    certification: str
    def __init__(self, node: _Optional[str] = ..., public_key: _Optional[str] = ..., certification: _Optional[str] = ...) -> None: ...

class CosignRequest(_message.Message):
    __slots__ = ("head", "public_key", "proof_from", "consistency_proof")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PROOF_FROM_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_PROOF_FIELD_NUMBER: _ClassVar[int]
    head: SignedTreeHead
    public_key: str
    proof_from: int
    consistency_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, head: _Optional[_Union[SignedTreeHead, _Mapping]] = ..., public_key: _Optional[str] = ..., proof_from: _Optional[int] = ..., consistency_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Cosignature(_message.Message):
    __slots__ = ("witness", "time", "signature", "certification")
    WITNESS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATION_FIELD_NUMBER: _ClassVar[int]
    witness: str
    time: str
    signature: bytes
    certification: str
    def __init__(self, witness: _Optional[str] = ..., time: _Optional[str] = ..., signature: _Optional[bytes] = ..., certification: _Optional[str] = ...) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("kind", "earlier_head")
    KIND_FIELD_NUMBER: _ClassVar[int]
    EARLIER_HEAD_FIELD_NUMBER: _ClassVar[int]
    kind: str
    earlier_head: SignedTreeHead
    def __init__(self, kind: _Optional[str] = ..., earlier_head: _Optional[_Union[SignedTreeHead, _Mapping]] = ...) -> None: ...

class CosignResponse(_message.Message):
    __slots__ = ("cosignature", "need_proof_from", "conflict")
    COSIGNATURE_FIELD_NUMBER: _ClassVar[int]
    NEED_PROOF_FROM_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    cosignature: Cosignature
    need_proof_from: int
    conflict: Conflict
    def __init__(self, cosignature: _Optional[_Union[Cosignature, _Mapping]] = ..., need_proof_from: _Optional[int] = ..., conflict: _Optional[_Union[Conflict, _Mapping]] = ...) -> None: ...
