"""The engine: what a run does, above the evidence and below every trigger.

diagnose (window → labels → the cause) → playbook (YAML → decisions → steps) → modules (steps →
a Plan) → plan (changes as values, diffs) → run (evidence → decision → plan → guarded apply;
rollback) → replay (what is asked again after a fix); fleet (rollouts over many hosts); harden
(the rules over live hosts).
"""
