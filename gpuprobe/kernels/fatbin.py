"""The device code a CUDA binary carries, read from the fatbinary headers in its ELF file.

nvcc puts each translation unit's device code in a *fatbinary container* in the ELF section
``.nv_fatbin``; the containers sit one after another (with zero padding between some). A
container is a 16-byte header (magic ``0xBA55ED50``, version, header size, size of what
follows) and then entries, each an entry header and its payload:

    offset  size  field (entry header, little-endian)
    0       2     kind: 1 PTX, 2 ELF (SASS, a cubin)
    4       4     header size (64, or more on newer toolkits)
    8       8     payload size as stored (padded)
    16      4     compressed size (0: stored uncompressed)
    24      2     minor } code version: the PTX ISA version of a PTX entry,
    26      2     major } the cubin format version of an ELF entry
    28      4     architecture, e.g. 89 for sm_89 / compute_89
    40      8     flags: 0x8000 or 0x2000 compressed, 0x100000 arch-specific ("a"),
                  0x200000 family ("f")
    56      8     uncompressed size (compressed entries)

Only headers are read: payloads are skipped, compressed ones are listed and never
decompressed, so a scan needs no CUDA and touches a few pages of each file. The layout was
worked out from NVIDIA's fatbinary_section.h, the CUDA Binary Utilities guide and nvcc's
own output, and is checked against ``cuobjdump --list-elf --list-ptx`` in the tests.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field

from gpuprobe.kernels.elf import ElfFile, NotElf

FATBIN_SECTION = ".nv_fatbin"
CONTAINER_MAGIC = struct.pack("<I", 0xBA55ED50)
KIND_PTX, KIND_ELF = 1, 2
FLAG_COMPRESSED = 0x8000 | 0x2000     # zstd (CUDA 13) | LZ4 (CUDA 11-12)
FLAG_ARCH_SPECIFIC = 0x100000         # sm_90a: this exact architecture only
FLAG_FAMILY = 0x200000                # sm_100f: this family (same major), minor >= its own
ENTRY_MIN_HEADER = 64
# the 64 bytes every entry header starts with, in one unpack (a big library has thousands of entries)
_ENTRY = struct.Struct("<HxxIQIxxxxHHI8xQ8xQ")
_CONTAINER = struct.Struct("<4sHHQ")

__all__ = ["Image", "Listing", "read", "NotElf"]


@dataclass(frozen=True)
class Image:
    """One entry: SASS for an sm_XY, or PTX for a compute_XY."""

    kind: str                    # "sass" | "ptx"
    arch: int                    # 89 for sm_89 / compute_89
    variant: str = ""            # "" | "a" (arch-specific) | "f" (family)
    version: str = ""            # "X.Y": PTX ISA version (ptx), cubin format version (sass)
    stored_bytes: int = 0        # payload as stored in the file
    bytes: int = 0               # payload uncompressed (the stored size when not compressed)
    compressed: bool = False

    @property
    def name(self) -> str:
        return f"{'sm' if self.kind == 'sass' else 'compute'}_{self.arch}{self.variant}"

    @property
    def cc(self) -> tuple[int, int]:
        return divmod(self.arch, 10)


@dataclass
class Listing:
    """All device code in one file (empty ``images``: no device code)."""

    path: str
    images: list[Image] = field(default_factory=list)
    containers: int = 0
    needed: list[str] = field(default_factory=list)   # DT_NEEDED: which CUDA runtime it links
    soname: str | None = None
    problems: list[str] = field(default_factory=list)  # malformed containers, skipped

    @property
    def sass(self) -> list[Image]:
        return [i for i in self.images if i.kind == "sass"]

    @property
    def ptx(self) -> list[Image]:
        return [i for i in self.images if i.kind == "ptx"]

    def names(self, kind: str) -> list[str]:
        """Distinct architectures of one kind, in architecture order: ["sm_80", "sm_90"]."""
        seen = {(i.arch, i.variant): i.name for i in self.images if i.kind == kind}
        return [seen[k] for k in sorted(seen)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Listing":
        return cls(path=d["path"], images=[Image(**i) for i in d.get("images") or []],
                   containers=d.get("containers", 0), needed=list(d.get("needed") or []),
                   soname=d.get("soname"), problems=list(d.get("problems") or []))


def read(path: str | os.PathLike) -> Listing:
    """The device code in ``path`` (an ELF shared library, executable or object file).

    Raises :class:`NotElf` for anything that is not a 64-bit little-endian ELF file.
    """
    listing = Listing(path=os.fspath(path))
    for kind, arch, variant, version, stored, size, compressed in walk(path, listing):
        listing.images.append(Image(kind, arch, variant, version, stored, size, compressed))
    return listing


def walk(path: str | os.PathLike, out: Listing):
    """Each entry as a tuple (kind, arch, variant, version, stored bytes, bytes, compressed), in file order.

    Fills ``out``'s containers, needed, soname and problems on the way.
    """
    with ElfFile(path) as elf:
        out.needed, out.soname = elf.needed(), elf.soname()
        section = elf.section(FATBIN_SECTION)
        if section is not None:
            yield from _walk_section(elf.map, section.offset, section.offset + section.size, out)


def _walk_section(m, start: int, end: int, out: Listing):
    pos = start
    while pos + 16 <= end:
        magic, _version, header_size, body = _CONTAINER.unpack_from(m, pos)
        if magic != CONTAINER_MAGIC:
            pos = m.find(CONTAINER_MAGIC, pos, end)   # padding between containers
            if pos < 0:
                return
            continue
        first, stop = pos + header_size, pos + header_size + body
        if header_size < 16 or stop > end:
            out.problems.append(f"container at +{pos - start:#x} runs past the section; rest skipped")
            return
        out.containers += 1
        yield from _walk_container(m, first, stop, pos - start, out)
        pos = stop


def _walk_container(m, pos: int, stop: int, where: int, out: Listing):
    unpack = _ENTRY.unpack_from
    while pos + ENTRY_MIN_HEADER <= stop:
        kind, header_size, stored, compressed_size, minor, major, arch, flags, uncompressed = unpack(m, pos)
        if header_size < ENTRY_MIN_HEADER or pos + header_size + stored > stop:
            out.problems.append(f"entry at container +{where:#x} is malformed; rest of the container skipped")
            return
        if kind == KIND_PTX or kind == KIND_ELF:
            compressed = bool(flags & FLAG_COMPRESSED) or compressed_size > 0
            variant = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY else ""
            yield ("ptx" if kind == KIND_PTX else "sass", arch, variant, f"{major}.{minor}", stored,
                   (uncompressed or stored) if compressed else stored, compressed)
        pos += header_size + stored
