//! A QEMU process driven over QMP, shared by the tests (and the benchmark scripts'
//! helpers) that need a real QEMU. Failures panic: this is test support.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The QEMU binary the tests run.
pub const QEMU: &str = "qemu-system-x86_64";

/// Arguments every VM gets (the vectors' command line, minus -M/-m and QMP).
pub const BASE: &[&str] = &[
    "-no-user-config",
    "-nodefaults",
    "-display",
    "none",
    "-accel",
    "tcg",
    "-rtc",
    "base=2025-01-01T00:00:00,clock=vm",
    "-seed",
    "1",
    "-S",
];

/// A loopback TCP port free at the time of the call, for a QEMU to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running QEMU with a QMP connection; killed on drop.
pub struct Qemu {
    /// The QEMU process.
    pub child: Child,
    qmp: BufReader<UnixStream>,
    stderr_path: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    /// Starts QEMU with [`BASE`] and `args`, its QMP socket and stderr file in `dir`
    /// (named after `tag`), and negotiates QMP.
    pub fn start(dir: &Path, tag: &str, args: &[&str]) -> Qemu {
        Qemu::start_with(dir, tag, BASE, args)
    }

    /// [`start`](Self::start) with other base arguments than [`BASE`] (for a VM under
    /// KVM, say, which `BASE`'s `-accel tcg` would prevent).
    pub fn start_with(dir: &Path, tag: &str, base: &[&str], args: &[&str]) -> Qemu {
        let sock = dir.join(format!("{tag}.sock"));
        let stderr_path = dir.join(format!("{tag}.stderr"));
        let _ = std::fs::remove_file(&sock);
        let mut cmd = Command::new(QEMU);
        cmd.args(base)
            .args(args)
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut child = cmd.spawn().expect("start qemu-system-x86_64");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                break s;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "QEMU exited ({st}) before its QMP socket was up: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "QEMU's QMP socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut q = Qemu {
            child,
            qmp: BufReader::new(stream),
            stderr_path,
        };
        let greeting = q.read_message();
        assert!(greeting.get("QMP").is_some(), "no QMP greeting: {greeting}");
        q.execute("qmp_capabilities", json!({}));
        q
    }

    /// What QEMU wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The next QMP message (a reply or an event).
    pub fn read_message(&mut self) -> Value {
        let mut line = String::new();
        match self.qmp.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad QMP message {line:?}: {e}")),
            other => panic!(
                "QMP connection lost ({other:?}); QEMU said: {}",
                self.stderr()
            ),
        }
    }

    /// Runs a command; returns its "return" value, or panics with its error.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Value {
        let msg = json!({"execute": cmd, "arguments": args});
        let mut s = self.qmp.get_ref();
        writeln!(s, "{msg}").expect("write to QMP");
        loop {
            let reply = self.read_message();
            if let Some(r) = reply.get("return") {
                return r.clone();
            }
            if let Some(e) = reply.get("error") {
                panic!("QMP {cmd} failed: {e}; QEMU said: {}", self.stderr());
            }
            // An asynchronous event: keep reading.
        }
    }

    /// Polls query-migrate until the migration leaves the active states; panics unless
    /// it completed.
    pub fn wait_migration(&mut self, what: &str) -> String {
        let (status, r) = self.migration_outcome(what);
        if status != "completed" {
            panic!(
                "{what}: migration {status}: {r}; QEMU said: {}",
                self.stderr()
            );
        }
        status
    }

    /// Polls query-migrate until the migration is `completed`, `failed` or `cancelled`;
    /// returns that status and the last reply.
    pub fn migration_outcome(&mut self, what: &str) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("{what}: QEMU exited ({st}): {}", self.stderr());
            }
            let r = self.execute("query-migrate", json!({}));
            let status = r["status"].as_str().unwrap_or("").to_string();
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                return (status, r);
            }
            assert!(
                Instant::now() < deadline,
                "{what}: migration not done after 120 s: {r}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks QEMU to quit and waits for it (killing it after 10 s).
    pub fn quit(mut self) {
        let mut s = self.qmp.get_ref();
        let _ = writeln!(s, "{}", json!({"execute": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
