"""``pdetransfer download``: a source file fetched by URL and verified against its SHA-256.

The file is streamed into a temporary file beside the target, hashed on the way, and renamed
into place only when its digest is the published one, so a failed, interrupted or corrupted
download never leaves a file that the import (or Snakemake) would take for the real one.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError

CHUNK = 1 << 20
TIMEOUT_S = 60.0  # per blocking network operation, not for the whole transfer


def download(url: str, sha256: str, out: str | Path) -> Path:
    """Fetch ``url`` to ``out`` if its SHA-256 is ``sha256``; return ``out``."""
    out, want = Path(out), sha256.lower()
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
            atomic_path(out) as tmp,
            tmp.open("wb") as stream,
        ):
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                stream.write(chunk)
            if digest.hexdigest() != want:
                raise UserError(
                    f"{url} has SHA-256 {digest.hexdigest()}, not the published {want}; the "
                    "download is damaged or the file changed: try again, or check the checksum"
                )
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason: object = f"HTTP {err.code} {err.reason}"
        else:
            reason = getattr(err, "reason", None) or err
        raise UserError(
            f"cannot download {url} ({reason}); check the URL and the network, or put the file "
            f"at {out} by hand"
        ) from None
    return out


def download_command(args: argparse.Namespace) -> int:
    """``pdetransfer download``."""
    out = download(args.url, args.sha256, args.out)
    print(f"downloaded {args.url} to {out} (SHA-256 verified)")
    return 0
