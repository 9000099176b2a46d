//! A real software TPM per test (swtpm, manufactured by `swtpm_setup` with an EK
//! certificate signed by swtpm's local CA), as rust-keylime's CI runs one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running swtpm on a TCP port pair (commands on `port`, control on `port + 1`).
pub struct Swtpm {
    /// The command port.
    pub port: u16,
    /// Its state directory.
    pub state: PathBuf,
    child: Option<Child>,
}

/// Why no swtpm could be started (the test says so and skips).
pub fn missing() -> Option<String> {
    for tool in ["swtpm", "swtpm_setup"] {
        if Command::new(tool).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Some(format!("{tool} is not installed (apt-get install swtpm swtpm-tools)"));
        }
    }
    None
}

fn free_pair() -> u16 {
    for _ in 0..200 {
        let Ok(a) = TcpListener::bind("127.0.0.1:0") else { continue };
        let Ok(addr) = a.local_addr() else { continue };
        let port = addr.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port pair for swtpm");
}

impl Swtpm {
    /// Manufactures a TPM in `dir` (EK and platform certificates) and starts it.
    pub fn start(dir: &Path) -> Swtpm {
        std::fs::create_dir_all(dir).expect("swtpm state dir");
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--tpmstate"])
            .arg(dir)
            .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
            .output()
            .expect("running swtpm_setup");
        assert!(out.status.success(), "swtpm_setup failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let mut t = Swtpm { port: 0, state: dir.to_path_buf(), child: None };
        t.resume();
        t
    }

    /// The TCTI lucidd is configured with.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Starts (again) on the same state, on a new port pair unless one was chosen.
    pub fn resume(&mut self) {
        if self.port == 0 {
            self.port = free_pair();
        }
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.state.display()))
            .args(["--server", &format!("type=tcp,port={}", self.port)])
            .args(["--ctrl", &format!("type=tcp,port={}", self.port + 1)])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning swtpm");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (a TPM that fails mid-run).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The embedded dev configuration with an `attestation` block.
pub fn config(dir: &Path, tcti: &str, event_log: &Path, tpm: &str) -> PathBuf {
    let yaml = format!(
        "apiVersion: lucid.io/v1alpha1
kind: LucidEnvironment
metadata:
  name: attest-test
spec:
  agents:
    - name: dev-agent
      model:
        id: dev-model
      profile: soc2
  attestation:
    tpm: {tpm}
    tcti: {tcti}
    eventLog: {}
    passportIntervalMinutes: 60
    anchorEveryCheckpoints: 100000
",
        event_log.display()
    );
    let path = dir.join("lucid.yaml");
    std::fs::write(&path, yaml).expect("writing the config");
    path
}

/// `lucidctl passport verify -o json ARGS...` with no daemon (a socket path that does not
/// exist: verification is offline): exit code and the appraisals.
pub fn verify_offline(dir: &Path, args: &[String]) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(crate::bin("lucidctl"))
        .arg("--socket")
        .arg(dir.join("no-daemon.sock"))
        .args(["passport", "verify", "-o", "json"])
        .args(args)
        .output()
        .expect("running lucidctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let appraisals = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), appraisals)
}

/// The worst status of an appraisal's claims named `name` (`absent` if none).
pub fn status(appraisal: &serde_json::Value, name: &str) -> String {
    claims(appraisal, name).map(|c| c["status"].as_str().unwrap_or("?").to_string()).max().unwrap_or_else(|| "absent".into())
}

/// The details of an appraisal's claims named `name`, joined.
pub fn detail(appraisal: &serde_json::Value, name: &str) -> String {
    claims(appraisal, name).map(|c| c["detail"].as_str().unwrap_or("")).collect::<Vec<_>>().join(" | ")
}

fn claims<'a>(appraisal: &'a serde_json::Value, name: &'a str) -> impl Iterator<Item = &'a serde_json::Value> {
    appraisal["claims"].as_array().into_iter().flatten().filter(move |c| c["claim"] == name)
}

/// swtpm's local CA (which signed the EK certificates `swtpm_setup --create-ek-cert`
/// made), copied to a directory of trust anchors.
pub fn swtpm_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("ek-ca");
    std::fs::create_dir_all(&ca).expect("CA directory");
    for f in ["issuercert.pem", "swtpm-localca-rootca-cert.pem"] {
        std::fs::copy(Path::new("/var/lib/swtpm-localca").join(f), ca.join(f)).expect("swtpm's local CA certificates");
    }
    ca
}
