//! The stream engine: QEMU's migration stream format, version 3 (spec sections 1 and 4).
//!
//! A stream is the header, the configuration section, START sections from iterative
//! handlers, PART sections for each round, the SWITCHOVER_START command, END
//! sections, a FULL section per device, EOF and the vmdesc JSON trailer describing
//! every FULL section. [`SaveSession`] writes one phase at a time (a migration driver
//! runs the rounds) and [`save_snapshot`] writes it all at once; [`load_stream`] and
//! [`load_file`] read one back into a [`Registry`](crate::Registry).
//!
//! ```
//! use vmstate::{Registry, Registration, Reader, VmState};
//! use vmstate::stream::{LoadOptions, StreamConfig, load_stream, save_snapshot};
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92")]
//! struct Port92 { outport: u8 }
//!
//! let mut src = Registry::new();
//! src.register_device(Port92 { outport: 2 }, Registration::new()).unwrap();
//! let mut stream = Vec::new();
//! save_snapshot(&mut src, &mut stream, StreamConfig::new("demo-1.0")).unwrap();
//!
//! let mut dst = Registry::new();
//! let h = dst.register_device(Port92::default(), Registration::new()).unwrap();
//! let opts = LoadOptions { machine: Some("demo-1.0".into()), ..Default::default() };
//! load_stream(&mut dst, &mut Reader::from_slice(&stream), &opts).unwrap();
//! assert_eq!(dst.device_mut::<Port92>(h).unwrap().outport, 2);
//! ```

mod config;
pub mod format;
pub mod integrity;
pub(crate) mod load;
pub mod records;
pub(crate) mod save;
pub mod vmdesc;

pub use crate::save_policy::{SavePolicy, StreamSaveCtx};
pub use config::{Capability, ConfigCapabilities, ConfigPageBits, ConfigUuid, Configuration};
pub(crate) use load::load_stream_with;
pub use load::{LoadOptions, LoadReport, LoadedSection, load_file, load_stream};
pub use save::{SaveSession, SaveStats, StreamConfig, save_mapped_ram_snapshot, save_snapshot};
