"""Writes a Fortran-ordered int32 [2, 3] array holding 0..5 in C order (for the .npy reader test)."""
import sys

import numpy as np

np.save(sys.argv[1], np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)))
print("written")
