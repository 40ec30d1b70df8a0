"""Bulk PSI from OT extension (KKRT16) for large balanced jobs: pure, numpy-vectorised.

Modules, bottom up: :mod:`.params` (sizes and security parameters, derived),
:mod:`.blockcipher` (all AES work over numpy buffers), :mod:`.bitmatrix` (bit
transpose), :mod:`.base_ot` (Chou–Orlandi over ristretto255), :mod:`.cuckoo`,
:mod:`.kkrt` (the OT extension and OPRF), :mod:`.matching`, :mod:`.messages`, and
the two parties :class:`BulkReceiver` (fund centre) and :class:`BulkSender`
(agency). :mod:`.session` narrates the rounds and what each side learns.
"""

from .messages import InvalidMessage, ProtocolStateError
from .params import BulkParameters, derive
from .receiver import BulkReceiver
from .sender import BulkSender
from .session import as_elements

__all__ = ["BulkReceiver", "BulkSender", "BulkParameters", "InvalidMessage",
           "ProtocolStateError", "as_elements", "derive"]
