//! Mutual TLS for the TCP transport (placeholder: being written).
