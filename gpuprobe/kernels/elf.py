"""Just enough of ELF to find a shared library's sections and its DT_NEEDED / DT_SONAME.

Only 64-bit little-endian files (x86_64, aarch64: what CUDA wheels ship). Everything is read
through a memory map, so a 500 MB ``libtorch_cuda.so`` costs the pages of its headers, not
its size.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
SHT_DYNAMIC = 6
SHT_NOBITS = 8
DT_NEEDED, DT_SONAME = 1, 14


class NotElf(ValueError):
    """The file is not a 64-bit little-endian ELF file (or is truncated)."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


class ElfFile:
    """An open ELF file: ``sections`` by name, ``needed``/``soname`` from the dynamic section."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 64:
                raise NotElf(f"{self.path}: not an ELF file (too small)")
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        try:
            self._sections = self._read_sections()
        except (struct.error, IndexError, ValueError) as exc:
            self.close()
            raise NotElf(f"{self.path}: {exc}") from None

    def close(self) -> None:
        self.map.close()

    def __enter__(self) -> "ElfFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_sections(self) -> list[Section]:
        m = self.map
        if m[:4] != ELF_MAGIC:
            raise NotElf(f"{self.path}: not an ELF file")
        if m[4] != 2 or m[5] != 1:
            raise NotElf(f"{self.path}: not a 64-bit little-endian ELF file")
        shoff = struct.unpack_from("<Q", m, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", m, 0x3A)
        if shoff == 0 or shnum == 0 or shoff + shnum * shentsize > self.size:
            return []   # stripped of section headers: nothing we can read
        raw = [struct.unpack_from("<IIQQQQIIQQ", m, shoff + i * shentsize) for i in range(shnum)]
        names_at = raw[shstrndx][4] if shstrndx < shnum else 0
        out = []
        for name_off, kind, _flags, _addr, offset, size, link, _info, _align, _entsize in raw:
            start = names_at + name_off
            end = m.find(b"\0", start, min(start + 256, self.size))
            name = m[start:end].decode("ascii", "replace") if end > start else ""
            out.append(Section(name, kind, offset, size, link))
        return out

    @property
    def sections(self) -> list[Section]:
        return self._sections

    def section(self, name: str) -> Section | None:
        for s in self._sections:
            if s.name == name and s.type != SHT_NOBITS and s.offset + s.size <= self.size:
                return s
        return None

    def _dynamic(self) -> list[tuple[int, str]]:
        dyn = next((s for s in self._sections if s.type == SHT_DYNAMIC), None)
        if dyn is None or dyn.link >= len(self._sections):
            return []
        strtab = self._sections[dyn.link]
        out = []
        for pos in range(dyn.offset, dyn.offset + dyn.size - 15, 16):
            tag, val = struct.unpack_from("<qQ", self.map, pos)
            if tag == 0:
                break
            if tag in (DT_NEEDED, DT_SONAME):
                start = strtab.offset + val
                end = self.map.find(b"\0", start, strtab.offset + strtab.size)
                out.append((tag, self.map[start:end].decode("ascii", "replace")))
        return out

    def needed(self) -> list[str]:
        return [v for t, v in self._dynamic() if t == DT_NEEDED]

    def soname(self) -> str | None:
        return next((v for t, v in self._dynamic() if t == DT_SONAME), None)
