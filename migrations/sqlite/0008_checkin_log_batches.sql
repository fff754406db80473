-- PostgreSQL only (its check-in log gets one row per batch; SQLite's log file has had that
-- since migration 0005's files). Kept so both dialects number their migrations alike (a unit
-- test checks).
SELECT 1;
