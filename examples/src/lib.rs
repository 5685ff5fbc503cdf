//! Code shared by the examples: an emulated machine (`machine`) for the live-migration
//! and snapshot examples.

pub mod machine;

pub mod codec;
