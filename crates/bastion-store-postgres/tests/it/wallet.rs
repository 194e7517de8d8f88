//! wallet tests particular to this backend.
