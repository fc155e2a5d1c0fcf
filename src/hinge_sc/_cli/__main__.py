"""``python -m hinge_sc._cli``: the ``hinge-sc`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
