//! Snapshots of the example machine in QEMU's stream format.
//!
//! ```text
//! cargo run --example snapshot -- save snap.mig    # run the guest a while, save it
//! cargo run --example snapshot -- load snap.mig    # load into a fresh machine, compare
//! cargo run --example snapshot -- save --mapped-ram snap.mig   # QEMU's mapped-ram layout
//! cargo run --example snapshot -- load --mapped-ram snap.mig
//! cargo run --example snapshot -- load --lazy snap.mig         # pages fetched on first touch
//! ```
//!
//! `save` runs a deterministic guest workload, then writes the snapshot atomically (a
//! temporary file, fsync, rename). `load` loads it into a fresh machine and compares
//! the result with the same workload run again from scratch: every RAM page and every
//! device must match. The file is a QEMU migration stream with a vmdesc trailer, so
//! QEMU's `scripts/analyze-migration.py -f snap.mig` decodes it too. With
//! `--mapped-ram` it is in QEMU's mapped-ram layout: each page at a fixed offset, zero
//! pages as holes (QEMU loads it with the `mapped-ram` capability and
//! `migrate-incoming file:snap.mig`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmstate::stream::{
    LoadOptions, StreamConfig, load_file, save_mapped_ram_snapshot, save_snapshot,
};
use vmstate::transport::{AtomicFile, BackgroundWriter};
use vmstate_examples::machine::{MACHINE_TYPE, Machine, RamSetup};

/// Save and load snapshots of the example machine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
    /// Guest RAM in MiB (must be the same for save and load).
    #[arg(long, default_value_t = 64, global = true)]
    ram_mib: u64,
    /// Guest page writes before saving (must be the same for save and load).
    #[arg(long, default_value_t = 200_000, global = true)]
    steps: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the guest workload and save a snapshot to FILE.
    Save {
        /// Where to write the snapshot.
        file: PathBuf,
        /// In QEMU's mapped-ram layout (pages at fixed offsets, zero pages as holes).
        #[arg(long)]
        mapped_ram: bool,
    },
    /// Load FILE into a fresh machine and check that the state matches.
    Load {
        /// The snapshot to load.
        file: PathBuf,
        /// The file is in QEMU's mapped-ram layout.
        #[arg(long)]
        mapped_ram: bool,
        /// Restore lazily (a mapped-ram file): the devices and the RAM layout at once,
        /// each page from the file on first touch.
        #[arg(long)]
        lazy: bool,
    },
}

/// The guest's working set: the first quarter of RAM.
fn working_set(args: &Args) -> u64 {
    (args.ram_mib << 20) / 4
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("snapshot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match &args.command {
        Cmd::Save { file, mapped_ram } => {
            let machine = Machine::new(args.ram_mib << 20)?;
            machine.run_deterministic(args.steps, working_set(args));
            let (mut reg, ram) = machine.registry_with(RamSetup {
                mapped_ram: *mapped_ram,
                ..Default::default()
            })?;
            let config = StreamConfig::new(MACHINE_TYPE);
            let stats = if *mapped_ram {
                save_mapped_ram_snapshot(&mut reg, file, config)?
            } else {
                // Written in a second thread while the engine produces the next MiB.
                let mut out = BackgroundWriter::new(AtomicFile::create(file)?);
                let stats = save_snapshot(&mut reg, &mut out, config)?;
                out.into_inner()?.commit()?;
                stats
            };
            let pages = ram.get();
            println!(
                "saved {} bytes to {}: {} device sections, {} full pages, {} zero pages",
                stats.bytes,
                file.display(),
                stats.device_sections,
                pages.normal_pages,
                pages.zero_pages
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Load {
            file,
            mapped_ram,
            lazy,
        } => {
            let machine = Machine::new(args.ram_mib << 20)?;
            let (mut reg, _) = machine.registry_with(RamSetup {
                mapped_ram: *mapped_ram || *lazy,
                lazy: *lazy,
                ..Default::default()
            })?;
            let opts = LoadOptions {
                machine: Some(MACHINE_TYPE.into()),
                capabilities: match *mapped_ram || *lazy {
                    true => vec!["mapped-ram".into()],
                    false => vec![],
                },
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let report = load_file(&mut reg, file, opts, false)?;
            if *lazy {
                println!(
                    "ready to run after {:.2} ms with {} pages still in the file",
                    started.elapsed().as_secs_f64() * 1e3,
                    machine.state.ram.missing_pages()
                );
            }
            let expected = Machine::new(args.ram_mib << 20)?;
            expected.run_deterministic(args.steps, working_set(args));
            let (got, want) = (machine.digest()?, expected.digest()?);
            let bad_pages = got.differing_pages(&want);
            let bad_devices = got.differing_devices(&want);
            println!(
                "loaded {} bytes ({} sections) from {}",
                report.bytes,
                report.sections.len(),
                file.display()
            );
            if bad_pages == 0 && bad_devices.is_empty() {
                println!("state matches: {} pages and 3 devices", got.pages.len());
                Ok(ExitCode::SUCCESS)
            } else {
                println!("state differs: {bad_pages} pages, devices {bad_devices:?}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
