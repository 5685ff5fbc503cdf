//! Deliberately broken releases: a hypothetical 2.1 of the "demo" emulator that makes
//! one incompatible change to 2.0 without a version bump or a subsection. The checker
//! between 2.0's kept schema and 2.1 must report each one (so a test like
//! `consecutive_releases_pass_the_checker` fails the build), and saving for 2.0 from such
//! a 2.1 must be refused rather than write a stream 2.0 would misread.

use compat_tests::evolving::{kept_release, r2_0};
use vmstate::release::{ForRelease, Release, Version};
use vmstate::{VmState, VmStateDescription};
use vmstate_tools::check::{self, CheckOptions};

/// 2.1 = 2.0 with `replace` swapped in for the section of the same name.
fn release_2_1(replace: (&'static str, &'static VmStateDescription)) -> Release {
    let sections = r2_0::sections().map(|s| if s.0 == replace.0 { replace } else { s });
    Release::new(Version::new(2, 1, 0), "demo-2.1", sections)
}

/// The checker's lines for a migration from the kept 2.0 to `to`.
fn check_from_2_0(to: &Release, opts: &CheckOptions) -> Vec<String> {
    let from = kept_release(&r2_0::VERSION);
    check::check(from.schema(), to.schema(), opts)
        .iter()
        .map(|p| p.to_string())
        .collect()
}

/// Why saving `desc` for 2.0 is refused.
fn refusal_for_2_0(desc: &'static VmStateDescription) -> String {
    let target = kept_release(&r2_0::VERSION);
    ForRelease::for_descriptions(&target, [desc])
        .unwrap_err()
        .to_string()
}

mod inserted {
    use super::*;

    /// `mcr` inserted in the middle, without `since` or a version bump.
    #[derive(VmState, Default)]
    #[vmstate(name = "uart", version = 2, min_version = 1)]
    pub struct Uart {
        lcr: u8,
        lsr: u8,
        mcr: u8,
        divisor: u16,
        #[vmstate(unused = 4)]
        _scratch: (),
        #[vmstate(since = 2)]
        fcr: u8,
        #[vmstate(subsection, needed = Self::never)]
        fifo: r2_0::UartFifo,
    }

    impl Uart {
        fn never(&self) -> bool {
            false
        }
    }
}

#[test]
fn a_field_inserted_without_since_is_caught() {
    let broken = release_2_1(("uart", inserted::Uart::DESCRIPTION));
    assert_eq!(
        check_from_2_0(&broken, &CheckOptions::default()),
        [
            r#"Section "uart", Description "uart": expected field "divisor", got "mcr"; skipping rest"#
        ]
    );
    let msg = refusal_for_2_0(inserted::Uart::DESCRIPTION);
    assert!(
        msg.contains(r#"expected field "mcr", got "divisor"; skipping rest"#),
        "{msg}"
    );
}

mod appended {
    use super::*;

    /// `mcr` appended at the end, without `since` or a version bump.
    #[derive(VmState, Default)]
    #[vmstate(name = "uart", version = 2, min_version = 1)]
    pub struct Uart {
        lcr: u8,
        lsr: u8,
        divisor: u16,
        #[vmstate(unused = 4)]
        _scratch: (),
        #[vmstate(since = 2)]
        fcr: u8,
        mcr: u8,
        #[vmstate(subsection, needed = Self::never)]
        fifo: r2_0::UartFifo,
    }

    impl Uart {
        fn never(&self) -> bool {
            false
        }
    }
}

#[test]
fn a_field_appended_without_since_is_caught_where_qemu_s_checker_is_silent() {
    let broken = release_2_1(("uart", appended::Uart::DESCRIPTION));
    assert_eq!(
        check_from_2_0(&broken, &CheckOptions::default()),
        [
            r#"Section "uart", Description "uart": dest has extra field "mcr" (version_id 0) that src does not send"#
        ]
    );
    assert!(check_from_2_0(&broken, &CheckOptions::qemu()).is_empty());
    let msg = refusal_for_2_0(appended::Uart::DESCRIPTION);
    assert!(
        msg.contains(r#"expected field "mcr", while dest has no further fields"#),
        "{msg}"
    );
}

mod widened {
    use super::*;

    /// The counters widened to 32 bits without a version bump.
    #[derive(VmState, Default)]
    #[vmstate(name = "pit", version = 2, min_version = 1)]
    pub struct Pit {
        mode: u8,
        counters: [u32; 2],
        #[vmstate(since = 2)]
        nextra: u8,
        #[vmstate(since = 2, len = nextra)]
        extra: Vec<u16>,
    }
}

#[test]
fn a_field_widened_without_a_version_is_caught() {
    let broken = release_2_1(("pit", widened::Pit::DESCRIPTION));
    assert_eq!(
        check_from_2_0(&broken, &CheckOptions::default()),
        [r#"Section "pit" Description "pit" Field "counters" size mismatch: 2 , 4"#]
    );
    let msg = refusal_for_2_0(widened::Pit::DESCRIPTION);
    assert!(msg.contains("size mismatch: 4 , 2"), "{msg}");
}

mod renamed {
    use super::*;

    /// The interrupt controller renamed on the wire.
    #[derive(VmState, Default)]
    #[vmstate(name = "pic", version = 1)]
    pub struct Pic {
        imr: u8,
        irr: u8,
        isr: u8,
        elcr: u8,
        base: u8,
    }
}

#[test]
fn a_section_renamed_on_the_wire_is_caught() {
    let sections = r2_0::sections().map(|s| {
        if s.0 == "intc" {
            ("pic", renamed::Pic::DESCRIPTION)
        } else {
            s
        }
    });
    let broken = Release::new(Version::new(2, 1, 0), "demo-2.1", sections);
    assert_eq!(
        check_from_2_0(&broken, &CheckOptions::default()),
        [r#"Section "intc" does not exist in dest"#]
    );
    let msg = refusal_for_2_0(renamed::Pic::DESCRIPTION);
    assert!(
        msg.contains("the release does not know the device 'pic'"),
        "{msg}"
    );
}

mod dropped {
    use super::*;

    /// The FIFO subsection dropped: 2.0 streams with FIFO state would not load.
    #[derive(VmState, Default)]
    #[vmstate(name = "uart", version = 2, min_version = 1)]
    pub struct Uart {
        lcr: u8,
        lsr: u8,
        divisor: u16,
        #[vmstate(unused = 4)]
        _scratch: (),
        #[vmstate(since = 2)]
        fcr: u8,
    }
}

#[test]
fn a_subsection_dropped_is_caught() {
    let broken = release_2_1(("uart", dropped::Uart::DESCRIPTION));
    assert_eq!(
        check_from_2_0(&broken, &CheckOptions::default()),
        // 2.1's "uart" has no subsection left, so QEMU's wording is about the key.
        [r#"Section "uart" Description "uart": Entry "Subsections" missing"#]
    );
    // Saving for 2.0 is fine: 2.0 does not need the subsection.
    let target = kept_release(&r2_0::VERSION);
    assert!(ForRelease::for_descriptions(&target, [dropped::Uart::DESCRIPTION]).is_ok());
}

mod bumped {
    use super::*;

    /// A version bump that refuses every older stream (min_version raised to 3).
    #[derive(VmState, Default)]
    #[vmstate(name = "uart", version = 3, min_version = 3)]
    pub struct Uart {
        lcr: u8,
        lsr: u8,
        divisor: u16,
        #[vmstate(unused = 4)]
        _scratch: (),
        #[vmstate(since = 2)]
        fcr: u8,
        #[vmstate(subsection, needed = Self::never)]
        fifo: r2_0::UartFifo,
    }

    impl Uart {
        fn never(&self) -> bool {
            false
        }
    }
}

#[test]
fn a_raised_min_version_is_caught() {
    let broken = release_2_1(("uart", bumped::Uart::DESCRIPTION));
    assert_eq!(
        check_from_2_0(&broken, &CheckOptions::default()),
        [
            r#"Section "uart" minimum version error: 2 < 3"#,
            r#"Section "uart" Description "uart": minimum version error: 2 < 3"#,
        ]
    );
    let msg = refusal_for_2_0(bumped::Uart::DESCRIPTION);
    assert!(
        msg.contains(
            "the release reads 'uart' at version 2, and this build writes versions 3 to 3 only"
        ),
        "{msg}"
    );
}
