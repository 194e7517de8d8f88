-- Failure limits hold in-flight reservations (SPEC A8): places taken by evaluations still running,
-- so parallel guesses never get more verified than the limit; they lapse together at
-- in_flight_until_ms if their holder never settles them.
ALTER TABLE attempt_counters ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempt_counters ADD COLUMN in_flight_until_ms INTEGER NOT NULL DEFAULT 0;
