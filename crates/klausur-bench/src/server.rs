//! Starting `klausur serve` with a fresh data directory on loopback ports, and preparing a
//! meeting with one personal invitation per simulated participant through the admin CLI.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const ORGANISER: &str = "bench-organiser";
const PASSWORD: &str = "bench-password-not-secret";

/// A running `klausur serve`; killed and its data directory removed on drop.
pub struct KlausurServer {
    child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    pub meeting_id: String,
    pub tokens: Vec<String>,
    _dir: tempfile::TempDir,
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs one admin subcommand with `--json` output; returns the parsed JSON.
fn admin(
    bin: &Path,
    data_dir: &Path,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .arg("--json")
        .env("KLAUSUR_LOG", "warn")
        .env_remove("KLAUSUR_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "klausur {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout)?;
    serde_json::from_str(text.trim())
        .with_context(|| format!("klausur {}: not JSON: {text}", args.join(" ")))
}

impl KlausurServer {
    /// Prepares the data directory (organiser, meeting, `participants` invitations), then starts
    /// the server, pinned to `cpu` with taskset when given.
    pub fn start(
        bin: &Path,
        participants: usize,
        cpu: Option<usize>,
    ) -> anyhow::Result<KlausurServer> {
        if !bin.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p klausur-server` or pass --server-bin",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("klausur-bench-")
            .tempdir()?;
        let data = dir.path().join("data");
        admin(
            bin,
            &data,
            &[
                "user",
                "add",
                ORGANISER,
                "--display-name",
                "Bench Organiser",
                "--permanent-password",
            ],
            &format!("{PASSWORD}\n"),
        )?;
        let meeting = admin(
            bin,
            &data,
            &[
                "meeting",
                "create",
                "Benchmark",
                "--organiser",
                ORGANISER,
                "--profile",
                "strict",
            ],
            "",
        )?;
        let meeting_id = meeting["id"].as_str().context("meeting id")?.to_string();
        let mut tokens = Vec::with_capacity(participants);
        for i in 0..participants {
            let name = format!("Bench {i}");
            let inv = admin(
                bin,
                &data,
                &["invite", "create", &meeting_id, "--name", &name],
                "",
            )?;
            tokens.push(
                inv["token"]
                    .as_str()
                    .context("invitation token")?
                    .to_string(),
            );
        }

        let http: SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
        let media: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("serve")
            .arg("--listen")
            .arg(http.to_string())
            .arg("--media-listen")
            .arg(media.to_string())
            .env_remove("KLAUSUR_WEB_ROOT")
            .env_remove("KLAUSUR_CONFIG")
            // KLAUSUR_BENCH_SERVER_LOG overrides the server's log filter for diagnosis (its
            // lines then count as problems).
            .env(
                "KLAUSUR_LOG",
                std::env::var("KLAUSUR_BENCH_SERVER_LOG")
                    .unwrap_or_else(|_| "warn,str0m=error".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd.spawn().context("cannot start klausur serve")?;
        let pid = child.id();
        let mut server = KlausurServer {
            child,
            pid,
            http,
            meeting_id,
            tokens,
            _dir: dir,
        };
        server.wait_ready(&log)?;
        Ok(server)
    }

    fn wait_ready(&mut self, log: &PathBuf) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "klausur serve exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("klausur serve did not start within 15 s")
    }

    /// The server's log so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/ws", self.http)
    }
}

impl Drop for KlausurServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
