"""How photo-sized numpy arrays get their memory.

numpy asks Linux for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every large array.
Where the kernel's THP defrag policy honours that request by compacting memory on the fault (the
``madvise`` policy, common on VMs and Jetson images), the first touch of a new photo-sized array
stalls: on the 2-core CI machine eight new 104 MB arrays took 11.9 s with huge pages and 0.30 s
without, and `run` of a 4000x3000 photo spent 3.7 s outside its model calls with them, 1.5 s
without (docs/benchmarks.md). restorekit's arrays are streamed through once or twice, where huge
pages bring little, so the CLI turns the request off at start-up; ``NUMPY_MADVISE_HUGEPAGE`` or
``RESTOREKIT_HUGEPAGES=1`` in the environment keep numpy's own choice.
"""

from __future__ import annotations

import os


def photo_arrays_on_small_pages() -> bool:
    """Stop numpy asking for huge pages for large arrays (unless the environment chose); whether it was changed."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ or os.environ.get("RESTOREKIT_HUGEPAGES") == "1":
        return False
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy 1.x
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return False
    _set_madvise_hugepage(False)
    return True
