"""The lab: real programs on loopback that reproduce every 502 cause (see remediate.lab.core).

Kept import-free: supervisord runs ``python -m remediate.lab.backend`` for each backend.
"""

__all__: list[str] = []
