"""Decrypting a Call Disposition body as VCC Live encrypts it.

VCC Live's sample decrypts with PHP: ``openssl_decrypt($body, 'aes-256-ctr',
$secretKey, 0, hex2bin($_GET['iv']))``. The body is base64 of the ciphertext; PHP pads
a key shorter than the cipher's key with zero bytes and cuts a longer one, and does the
same with the IV (none: a zero IV). This does exactly that, with `cryptography`.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16  # AES: every cipher here has a 16-byte IV
KEY_BYTES = {"aes-128": 16, "aes-192": 24, "aes-256": 32}
CIPHERS = tuple(f"{aes}-{mode}" for aes in KEY_BYTES for mode in ("ctr", "cbc"))


class DecryptError(ValueError):
    """The body cannot be decrypted (with this key, IV and cipher)."""


def fit(data: bytes, size: int) -> bytes:
    """Zero-padded or cut to ``size`` bytes, as PHP's openssl_decrypt does."""
    return data[:size].ljust(size, b"\0")


def decrypt(body: bytes, cipher: str, secret_key: str, iv_hex: str | None) -> bytes:
    """The plaintext of a base64 body; `DecryptError` says why not."""
    aes, _, mode = cipher.lower().rpartition("-")
    if aes not in KEY_BYTES or mode not in ("ctr", "cbc"):
        raise DecryptError(f"unsupported cipher {cipher!r}")
    try:
        ciphertext = base64.b64decode(body, validate=True)
        iv = fit(bytes.fromhex(iv_hex) if iv_hex else b"", BLOCK)
    except (binascii.Error, ValueError):
        raise DecryptError("the body is not base64, or the iv not hex") from None
    key = fit(secret_key.encode(), KEY_BYTES[aes])
    engine = Cipher(algorithms.AES(key), modes.CTR(iv) if mode == "ctr" else modes.CBC(iv))
    decryptor = engine.decryptor()
    if mode == "ctr":
        return decryptor.update(ciphertext) + decryptor.finalize()
    if len(ciphertext) % BLOCK:
        raise DecryptError("the ciphertext is not a whole number of blocks")
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError("bad padding: wrong key, IV or cipher") from None
