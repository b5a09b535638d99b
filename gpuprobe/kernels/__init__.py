"""Will this stack's CUDA binaries run on a GPU? Read from the binaries, without running them.

``discover`` finds the stack's libraries, ``fatbin`` reads the device code in each (ELF
``.nv_fatbin`` headers only), ``scan`` caches what was read, ``verdict`` judges it for a GPU and
driver (``gpus`` and ``cudaversions`` are the tables), ``jitcache`` describes the driver's JIT
cache, and ``check`` puts them together. None of it imports torch or needs CUDA.
"""
