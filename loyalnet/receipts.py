"""Signed receipts: a store's proof that it carried out a command of the chain.

A store answers each control-plane command (an erasure, a model adoption) with a receipt: a
small JSON object signed with the store's node key, ECDSA P-384 with SHA-384, the key the
chain registered when it admitted the store (``loyalnet.chain_tls``). The coordinator keeps
receipts as they came and verifies them with the registered public key, so a receipt proves
what the store said even to someone who distrusts the coordinator's database.

The signature covers :data:`DOMAIN` + the canonical body (sorted keys, no spaces, ASCII), so a
receipt signature can never be replayed as any other signature the node key makes. The body
travels and is stored byte for byte; nobody re-serialises it before verifying.

An erasure receipt says "nothing of this member is held here" and nothing else: no counts, no
hint whether the member was ever enrolled at that store (``ERASURE_STATEMENT``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from loyalnet.errors import LoyalnetError

DOMAIN = b"loyalnet receipt v1\n"
ERASURE_STATEMENT = "nothing of this member is held here"
RECEIPT_VERSION = 1


class ReceiptError(LoyalnetError):
    """A receipt whose body is malformed or whose signature does not verify."""


def receipt_body(fields: Mapping[str, object]) -> bytes:
    """The canonical bytes of a receipt body: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(
        {"receipt_version": RECEIPT_VERSION, **fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode("ascii")


def sign_receipt(
    fields: Mapping[str, object], private_key: ec.EllipticCurvePrivateKey
) -> tuple[bytes, bytes]:
    """``(body, signature)`` of a receipt holding ``fields``, signed with a store's node key."""
    body = receipt_body(fields)
    return body, private_key.sign(DOMAIN + body, ec.ECDSA(hashes.SHA384()))


def verify_receipt(
    body: bytes, signature: bytes, public_key: ec.EllipticCurvePublicKey
) -> dict[str, object]:
    """The fields of a receipt whose signature ``public_key`` verifies.

    Raises:
        ReceiptError: the signature does not verify, or the body is not a receipt.
    """
    try:
        public_key.verify(signature, DOMAIN + body, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as err:
        raise ReceiptError("the receipt's signature does not verify with the store's key.") from err
    try:
        fields = json.loads(body.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ReceiptError(f"the receipt's body is not JSON ({err}).") from err
    if not isinstance(fields, dict) or fields.get("receipt_version") != RECEIPT_VERSION:
        raise ReceiptError(f"the receipt's body is no version-{RECEIPT_VERSION} receipt.")
    return fields
