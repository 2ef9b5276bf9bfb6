"""What the service keeps: db (SQLite or PostgreSQL, one SQL), ledger (jobs), approvals, audit (the
hash chain), policy (who may do what on which hosts for which causes)."""
