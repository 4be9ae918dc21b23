"""The lab's one guest program that does disk I/O: lab/firmware/io_writer.S, built with binutils.

The lab's guests boot qboot firmware and no OS (docs/lab-facts.md). To make a guest's disk write fail
(paused on an I/O error) something in the guest must write: this multiboot image, loaded by qboot
through fw_cfg (`<kernel>` in the domain XML), writes one sector a second to its IDE disk. Built once
per source change into the lab's data root, where every lab host's QEMU can read it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from lab import state as st

SOURCE = Path(__file__).resolve().parent / "firmware" / "io_writer.S"


def io_writer(roots: st.Roots = st.Roots()) -> str:
    """Path of the built image (an ELF32 multiboot kernel); built when missing."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = roots.data / f"io-writer-{digest}.elf"
    if target.exists():
        return str(target)
    roots.data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=roots.data) as tmp:
        obj, elf = Path(tmp) / "w.o", Path(tmp) / "w.elf"
        for argv in (["as", "--32", "-o", str(obj), str(SOURCE)],
                     ["ld", "-m", "elf_i386", "-Ttext", "0x100000", "-o", str(elf), str(obj)]):
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()} (binutils: make bootstrap)")
        elf.chmod(0o644)
        os.replace(elf, target)  # atomic: a concurrent lab builds the same bytes
    return str(target)
