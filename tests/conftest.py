import os
import sys

# Tests run against the in-place build (make build), not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
