-- SQLite only (client_checkins stored in key order; see migrations/sqlite/0006). PostgreSQL
-- tables are heaps with separate indexes either way. Kept so both dialects number their
-- migrations alike (a unit test checks).
SELECT 1;
