-- SQLite only (its check-in log is split over files of their own so applying never blocks
-- appending; see migrations/sqlite/0005). PostgreSQL appends and applies concurrently in one
-- table already. Kept so both dialects number their migrations alike (a unit test checks).
SELECT 1;
