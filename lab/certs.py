"""A private CA and certificates for tests and the lab, made with the openssl command line.

    ca = CA(tmp_path / "ca")                      # ca.cert, ca.key
    server = ca.issue("remediator", ips=["127.0.0.1"])       # .cert .key (serverAuth)
    client = ca.issue("alertmanager", client=True)           # clientAuth

Nothing here is used by the service: operators bring their own PKI (docs/operations.md).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {proc.stderr}")


class CA:
    def __init__(self, directory: str | Path, name: str = "remediator test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = self.dir / "ca.crt", self.dir / "ca.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, *, ips: tuple[str, ...] | list[str] = ("127.0.0.1",), dns: tuple[str, ...] = ("localhost",),
              client: bool = False) -> Issued:
        """A leaf certificate for `name`, valid for the given addresses (server) or as a client."""
        key, csr, cert = self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.crt"
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                 "-out", str(csr), "-subj", f"/CN={name}")
        ext = self.dir / f"{name}.ext"
        sans = ",".join([f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns])
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\nsubjectAltName={sans}\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial",
                 "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return Issued(cert, key)
