"""Evidence collectors of the later causes, one module per cause; remediate.evidence registers them.

Importing remediate.evidence here first means ``import remediate.collect.workers`` works on its
own: evidence loads, registers every cause module, and this import then finds them loaded.
"""

import remediate.evidence  # noqa: F401
