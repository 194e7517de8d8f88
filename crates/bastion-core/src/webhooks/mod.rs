//! Inbound webhooks (SPEC P2, P6). So far: the signature schemes, verified over the raw body
//! in constant time against every live secret of an endpoint. The endpoints, the sealed
//! secrets, the inbox with replay protection and the processing state machine build on it.

pub mod signature;
