//! Code shared by the examples: an emulated machine (`machine`) for the live-migration
//! and snapshot examples, and a minimal KVM virtual machine (`kvm`) whose guest runs
//! its own code on a real vCPU.

pub mod kvm;
pub mod machine;

pub mod codec;
