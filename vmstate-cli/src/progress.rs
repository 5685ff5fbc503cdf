//! A progress bar on standard error, only when it is a terminal and the file is large.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files smaller than this get no progress bar.
const MIN_SIZE: u64 = 64 << 20;

/// A bar over `total` bytes, or a hidden one (quiet, not a terminal, small file).
pub fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || total < MIN_SIZE || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg:>9} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// A writer that advances a progress bar by the bytes written through it.
pub struct ProgressWriter<W> {
    pub inner: W,
    pub bar: ProgressBar,
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
