"""`python -m upo.cli ...`: the `upo` command, as `accelerate launch -m` and `torchrun -m` start it."""

import sys

from . import main

sys.exit(main())
