"""The per-store secret key: a 256-bit file with mode 0600 that seals biometrics at rest.

The file holds exactly 32 random bytes. They are never used directly: HKDF-SHA256 derives one
sub-key per use (AES-256-GCM sealing, member pseudonyms), so a value computed for one use can
never be replayed as another.

A sealed value is ``nonce (12 random bytes) || ciphertext || tag (16 bytes)``. Random 96-bit
nonces stay safe for far more seals than a store ever makes (the bound is about 2**32).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from loyalnet.secret_files import SECRET_FILE_MODE, write_secret_file
from store_node.gallery.errors import KeyFileError, TamperedDataError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_FILE_MODE = SECRET_FILE_MODE
_HKDF_PREFIX = b"loyalnet/store-key/v1/"


class StoreKey:
    """A store's secret key, able to seal and open values and to derive purpose-bound sub-keys.

    The raw key stays inside the object: ``repr`` shows nothing of it.
    """

    __slots__ = ("_aead", "_secret")

    def __init__(self, secret: bytes) -> None:
        """Wrap ``secret``, which must be exactly 32 bytes (use :meth:`create` or :meth:`load`)."""
        if len(secret) != KEY_BYTES:
            raise KeyFileError(
                f"a store key is {KEY_BYTES} bytes, not {len(secret)}; "
                "use the key file created with the store."
            )
        self._secret = bytes(secret)
        self._aead = AESGCM(self.derive(b"aes-256-gcm"))

    def __repr__(self) -> str:
        return "StoreKey(<secret>)"

    @classmethod
    def create(cls, path: Path) -> StoreKey:
        """Write a new random key to ``path`` with mode 0600 and return it.

        The file appears complete or not at all (see ``loyalnet.secret_files``).

        Raises:
            KeyFileError: when ``path`` already exists or its folder cannot be written.
        """
        path = Path(path)
        if path.exists():
            raise KeyFileError(
                f"{path} already exists; refusing to overwrite a store key (losing it makes the "
                "gallery unreadable), so choose another path or move the old key away first."
            )
        secret = os.urandom(KEY_BYTES)
        try:
            write_secret_file(path, secret)
        except FileExistsError:
            raise KeyFileError(
                f"{path} appeared while the key was being written; refusing to overwrite "
                "it, so check which program created it and choose another path."
            ) from None
        except OSError as error:
            raise KeyFileError(
                f"cannot write the store key {path} ({error.strerror}); "
                "check that its folder exists and is writable."
            ) from error
        return cls(secret)

    @classmethod
    def load(cls, path: Path) -> StoreKey:
        """Read the key at ``path``.

        Raises:
            KeyFileError: when the file is missing, is readable or writable by group or others
                (a key anyone on the machine can read protects nothing), or is not 32 bytes.
        """
        path = Path(path)
        try:
            status = path.stat()
        except FileNotFoundError:
            raise KeyFileError(
                f"no store key at {path}; restore the key file from your backup "
                "(without it the gallery cannot be read)."
            ) from None
        except OSError as error:
            raise KeyFileError(f"cannot read the store key {path} ({error.strerror}).") from error
        if not stat.S_ISREG(status.st_mode):
            raise KeyFileError(f"{path} is not a regular file; point at the store's key file.")
        if status.st_mode & 0o077:
            raise KeyFileError(
                f"the store key {path} is accessible to other users "
                f"(mode {stat.S_IMODE(status.st_mode):04o}); run `chmod 600 {path}` and retry."
            )
        try:
            secret = path.read_bytes()
        except OSError as error:
            raise KeyFileError(f"cannot read the store key {path} ({error.strerror}).") from error
        if len(secret) != KEY_BYTES:
            raise KeyFileError(
                f"{path} holds {len(secret)} bytes, not the {KEY_BYTES} of a store key; "
                "restore the key file from your backup."
            )
        return cls(secret)

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte sub-key for ``purpose`` (HKDF-SHA256); other purposes give unrelated keys."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_PREFIX + purpose)
        return hkdf.derive(self._secret)

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext``, bound to ``associated_data``.

        Returns ``nonce || ciphertext || tag``: ``len(plaintext) + 28`` bytes.
        """
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        """The plaintext of ``sealed``, if it was sealed by this key with ``associated_data``.

        Raises:
            TamperedDataError: when the value is too short, was altered, or was sealed with
                other associated data or another key.
        """
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise TamperedDataError(
                f"a sealed value is {len(sealed)} bytes, shorter than any sealed value; "
                "the gallery is damaged, so restore it from backup."
            )
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise TamperedDataError(
                "a sealed value failed its integrity check (altered, moved to another record, "
                "or sealed with another key); restore the gallery from backup."
            ) from None
