//! idempotency tests particular to this backend.
