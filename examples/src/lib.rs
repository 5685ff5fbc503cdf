//! Code shared by the examples: an emulated machine (`machine`) for the live-migration
//! and snapshot examples, a minimal KVM virtual machine (`kvm`) whose guest runs its
//! own code on a real vCPU, and what their command lines and benchmarks share (`cli`).

pub mod cli;
pub mod kvm;
pub mod machine;
pub mod preempt;

pub mod codec;
