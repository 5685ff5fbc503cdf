//! Test support for the compatibility suites.
