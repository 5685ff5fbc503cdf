//! Devices shared by the examples.
