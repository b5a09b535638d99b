"""The fatbinary reader against NVIDIA's own cuobjdump, on libraries built with NVIDIA's nvcc."""

from __future__ import annotations

import re
import subprocess

import pytest

import builds
from gpuprobe.kernels import fatbin


def _as_cuobjdump(listing: fatbin.Listing) -> dict[str, list[str]]:
    # cuobjdump names PTX "sm_XY" too, and writes family-portable SASS (sm_100f) without the f
    return {kind: [f"sm_{i.arch}{i.variant if i.variant == 'a' else ''}" for i in listing.images if i.kind == kind]
            for kind in ("sass", "ptx")}


@pytest.mark.parametrize("name", [b.name for b in builds.BUILDS])
def test_listing_equals_cuobjdump(kernel_libs, name):
    path = kernel_libs[name]
    ours = fatbin.read(path)
    theirs = builds.cuobjdump_listing(path)
    assert theirs["sass"] or theirs["ptx"], f"cuobjdump lists nothing in {path}"
    assert _as_cuobjdump(ours) == theirs
    assert ours.problems == []


def test_what_each_build_carries(kernel_libs):
    got = {name: (fatbin.read(p).names("sass"), fatbin.read(p).names("ptx")) for name, p in kernel_libs.items()}
    assert got == {
        "sm89": (["sm_89"], []),
        "sm90": (["sm_90"], []),
        "ptx80": ([], ["compute_80"]),
        "sm80_ptx90": (["sm_80"], ["compute_90"]),
        "multi": (["sm_75", "sm_86"], ["compute_86"]),
        "sm90a": (["sm_90a"], []),
        "cudart13": (["sm_80", "sm_89", "sm_90"], []),
    }


def test_ptx_isa_version_and_compression_from_headers(kernel_libs):
    ptx = fatbin.read(kernel_libs["ptx80"]).ptx
    assert ptx and all(i.version == "9.0" for i in ptx)     # nvcc 13.0 writes PTX ISA 9.0
    # cuobjdump decompresses and prints the PTX text: its .version line is what the header said
    dumped = subprocess.run([str(builds.tool("cuobjdump")), "-ptx", str(kernel_libs["ptx80"])],
                            capture_output=True, text=True, check=True).stdout
    assert re.findall(r"^\.version (\d+\.\d+)", dumped, re.M) == [i.version for i in ptx]
    # nvcc 13 compresses PTX by default: listed with both sizes, never decompressed
    for name in ("ptx80", "sm80_ptx90"):
        for i in fatbin.read(kernel_libs[name]).ptx:
            assert i.compressed and i.bytes > i.stored_bytes > 0


def test_several_kernels_per_library_in_several_containers(kernel_libs):
    multi = fatbin.read(kernel_libs["multi"])
    # nvcc's static cudart brings one container of its own, and each .cu file one more
    assert multi.containers == 3
    assert sum(1 for i in multi.images if i.kind == "ptx") == 2


def test_shared_runtime_is_read_from_dt_needed(kernel_libs):
    assert "libcudart.so.13" in fatbin.read(kernel_libs["cudart13"]).needed
    assert not any(n.startswith("libcudart") for n in fatbin.read(kernel_libs["sm89"]).needed)


def test_not_elf_is_refused(tmp_path):
    f = tmp_path / "x.so"
    f.write_bytes(b"#!/bin/sh\n" * 20)
    with pytest.raises(fatbin.NotElf):
        fatbin.read(f)


def test_host_only_library_has_no_images():
    import _ctypes

    assert fatbin.read(_ctypes.__file__).images == []
