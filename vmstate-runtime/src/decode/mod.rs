//! The description-driven decoder: any stream with a vmdesc trailer into a value tree.
