//! Helpers for the cross-crate integration tests: start the real `lucidd` binary on a
//! temp state directory, run the real `lucidctl`, and speak raw HTTP to the control
//! socket where a test needs malformed requests or many concurrent appends.
//!
//! The binaries come from the same target directory as the test executable; run
//! `cargo build --bins` first (the test script does).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub mod cuda_host;
pub mod tpm;
pub mod vm;

/// Path of a workspace binary next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` before the tests", path.display());
    path
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A path inside the site-packages of the repository's `.venv` (where scripts/test.sh
/// installs the PyPI packages the tests read: the MiniLM model, NVIDIA's compilers), if
/// it exists.
pub fn venv_file(rel: &str) -> Option<PathBuf> {
    std::fs::read_dir(repo_root().join(".venv/lib")).ok()?.flatten().map(|e| e.path().join("site-packages").join(rel)).find(|p| p.exists())
}

/// Whether the tests run as root (needed for tmpfs, setpriv, journald).
pub fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// Says a test is skipped and why: printed, logged for the run's summary, and a failure
/// under `LUCID_STRICT_SKIPS=1` unless for want of a GPU or AMX (see
/// `lucidd::test_support`).
pub fn skip(test: &str, why: &str) {
    lucidd::test_support::skip(test, why);
}

/// A running `lucidd --dev` on a state directory.
pub struct Daemon {
    /// The state directory.
    pub dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `lucidd --dev --state-dir DIR` with extra arguments and waits until its
    /// socket answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Self::start_env(dir, extra, &[])
    }

    /// Like [`Daemon::start`] with extra environment variables.
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut args = vec!["--dev".as_ref(), "--state-dir".as_ref(), dir.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        Self::launch(dir, &args, env)
    }

    /// Starts a production-mode `lucidd --config FILE`, with its state and control
    /// socket in `dir`.
    pub fn start_production(dir: &Path, config: &Path) -> Daemon {
        let socket = dir.join("lucidd.sock");
        let args = ["--config".as_ref(), config.as_os_str(), "--state-dir".as_ref(), dir.as_os_str(), "--socket".as_ref(), socket.as_os_str()];
        Self::launch(dir, &args, &[])
    }

    fn launch(dir: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(dir).unwrap_or_default();
        let log = dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("daemon log file");
        let mut cmd = Command::new(bin("lucidd"));
        cmd.args(args);
        if !args.iter().any(|a| *a == "--listen") {
            // Tests run side by side: each gateway takes a free port.
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        // The default classifier pack only where a test asks for it: the other tests
        // judge rule auditors and the ledger, and stay fast and deterministic.
        cmd.env("LUCID_MODEL_PACK", "none");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .env("LUCID_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawning lucidd");
        let socket = dir.join("lucidd.sock");
        let mut d = Daemon { dir: dir.to_path_buf(), socket, child: Some(child), log };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("lucidd exited early with {status}; log:\n{}", self.log_text());
                }
            }
            if self.socket.exists() && UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("lucidd did not open {} in time; log:\n{}", self.socket.display(), self.log_text());
    }

    /// The daemon's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut child = self.child.take().expect("daemon already stopped");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("lucidd did not stop on SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `lucidctl --dev-state DIR ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        lucidctl(&self.dir, args)
    }

    /// Runs lucidctl and returns stdout, asserting success.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "lucidctl {args:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// lucidctl's JSON output.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ctl_ok(&all)).expect("lucidctl -o json printed JSON")
    }

    /// A raw HTTP exchange on the control socket.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(&self.socket, method, path, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `lucidctl --dev-state DIR ARGS`.
pub fn lucidctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("lucidctl")).arg("--dev-state").arg(dir).args(args).output().expect("running lucidctl")
}

/// Sends raw bytes on the socket and returns what came back (until close).
pub fn raw(socket: &Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// An HTTP/1.0 request (the server closes after the response); returns status and body.
pub fn http(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: lucidd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match raw(socket, request.as_bytes()) {
        Ok(bytes) => parse_response(&bytes),
        Err(_) => (0, String::new()),
    }
}

/// An HTTP/1.0 request to a TCP address (the gateway), with extra header lines;
/// returns status and body.
/// An upstream model server for benchmarks: answers every chat completion request with
/// `content`, over HTTP/1.1 with `Connection: close`, on a loopback port it returns.
pub fn stub_upstream(content: &'static str) -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))).unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                }
                let answer = serde_json::json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "bench-model", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}).to_string();
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len());
            });
        }
    });
    Ok(addr)
}

/// The CPU's model name, for benchmark figures (machines differ).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string())).unwrap_or_default()
}

pub fn tcp_http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: lucidd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let exchange = || -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(head.as_bytes())?;
        // The server may answer (413) before reading the whole body.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    };
    match exchange() {
        Ok(bytes) => parse_response(&bytes),
        Err(_) => (0, String::new()),
    }
}

fn parse_response(bytes: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(bytes);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A small deterministic PRNG for test timing (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock; the seed is printed so a failure can be replayed.
    pub fn from_clock(test: &str) -> Rng {
        let seed = std::env::var("LUCID_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
        eprintln!("{test}: LUCID_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    /// Next value in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (hi - lo).max(1)
    }
}
