//! webhooks tests particular to this backend.
