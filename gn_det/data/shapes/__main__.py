"""`python -m gn_det.data.shapes --out DIR ...`: generate the synthetic shapes dataset."""
import sys

from . import main

sys.exit(main())
