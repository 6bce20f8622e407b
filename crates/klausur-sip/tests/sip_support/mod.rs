//! Shared helpers of the SIP driver tests: an endpoint on free loopback ports, answering its
//! calls with PCMU, and sipp runs with bounded time, each in its own directory with its logs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use klausur_sip::driver::sip::{
    ActiveCall, IncomingCall, LocalMedia, MediaFormat, SipConfig, SipEndpoint, SipTransport,
};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Generous bound for anything a test waits for (a loaded 2-core machine).
pub const WAIT: Duration = Duration::from_secs(30);

/// A config listening on UDP and TCP on free loopback ports, allowing only 127.0.0.1.
pub fn config() -> SipConfig {
    SipConfig {
        udp: vec!["127.0.0.1:0".parse().expect("addr")],
        tcp: vec!["127.0.0.1:0".parse().expect("addr")],
        allow: vec!["127.0.0.1/32".parse().expect("net")],
        ..SipConfig::default()
    }
}

pub struct Gateway {
    pub endpoint: SipEndpoint,
    pub calls: mpsc::Receiver<IncomingCall>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// An endpoint with [`config`] changed by `adjust`.
pub async fn start_with(adjust: impl FnOnce(&mut SipConfig)) -> Gateway {
    let mut config = config();
    adjust(&mut config);
    start(config).await
}

pub async fn start(config: SipConfig) -> Gateway {
    let (endpoint, calls) = SipEndpoint::start(config).await.expect("endpoint starts");
    let udp = endpoint.local_addr(SipTransport::Udp).expect("udp bound");
    let tcp = endpoint
        .local_addr(SipTransport::Tcp)
        .unwrap_or_else(|| "127.0.0.1:9".parse().expect("addr"));
    Gateway {
        endpoint,
        calls,
        udp,
        tcp,
    }
}

/// The next incoming call, within [`WAIT`].
pub async fn next_call(calls: &mut mpsc::Receiver<IncomingCall>) -> IncomingCall {
    timeout(WAIT, calls.recv())
        .await
        .expect("an incoming call in time")
        .expect("channel open")
}

/// Our answer to sipp's offer: PCMU and telephone-event 101 at a fixed local address.
pub fn pcmu_answer(call: &IncomingCall) -> LocalMedia {
    let offer = call.offer().expect("an offer");
    let codec = offer
        .find(&MediaFormat::pcmu())
        .expect("PCMU offered")
        .clone();
    let te = offer
        .telephone_event(8000)
        .expect("telephone-event offered")
        .clone();
    LocalMedia::new("127.0.0.1:40000".parse().expect("addr"), vec![codec, te])
}

/// Accepts `call` with [`pcmu_answer`]: the call, established within [`WAIT`].
pub async fn accept_pcmu(call: IncomingCall) -> ActiveCall {
    let answer = pcmu_answer(&call);
    timeout(WAIT, call.accept(answer))
        .await
        .expect("accept in time")
        .expect("call established")
}

/// The next incoming call, accepted with [`pcmu_answer`].
pub async fn answer_next(calls: &mut mpsc::Receiver<IncomingCall>) -> ActiveCall {
    accept_pcmu(next_call(calls).await).await
}

/// Waits for the sipp run `sipp` (from [`Sipp::spawn`]) and asserts that its scenario passed.
pub async fn assert_passed(sipp: tokio::task::JoinHandle<i32>, what: &str) {
    assert_eq!(sipp.await.expect("sipp task"), 0, "{what}");
}

static RUN: AtomicU32 = AtomicU32::new(0);

/// A sipp invocation.
pub struct Sipp {
    args: Vec<String>,
    dir: PathBuf,
    name: String,
}

/// A free UDP port (for sipp's media port, so parallel runs do not collide).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Sipp {
    /// `scenario` under tests/sipp, calling `target`, one call, at most `secs` seconds.
    pub fn new(scenario: &str, target: SocketAddr, secs: u64) -> Sipp {
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}-{}-{n}",
            scenario.trim_end_matches(".xml"),
            std::process::id()
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("sipp")
            .join(&name);
        std::fs::create_dir_all(&dir).expect("sipp dir");
        let scenario_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        let args = vec![
            "-sf".into(),
            scenario_path.display().to_string(),
            "-s".into(),
            "100".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-mp".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            format!("{secs}s"),
            "-timeout_error".into(),
            "-nostdin".into(),
            "-trace_err".into(),
            "-trace_msg".into(),
            target.to_string(),
        ];
        Sipp { args, dir, name }
    }

    /// Replaces the value of an option (`-i`, `-m`, ...) or adds it.
    pub fn arg(mut self, option: &str, value: &str) -> Sipp {
        if let Some(i) = self.args.iter().position(|a| a == option) {
            self.args[i + 1] = value.to_string();
        } else {
            let target = self.args.pop().expect("target");
            self.args.push(option.to_string());
            self.args.push(value.to_string());
            self.args.push(target);
        }
        self
    }

    /// With digest credentials (`-au`, `-ap`).
    pub fn auth(self, user: &str, password: &str) -> Sipp {
        self.arg("-au", user).arg("-ap", password)
    }

    /// Over TCP.
    pub fn tcp(self) -> Sipp {
        self.arg("-t", "t1")
    }

    /// Runs sipp to the end (bounded) and returns its exit code; prints its logs on failure.
    pub async fn run(self) -> i32 {
        let secs: u64 = self
            .args
            .iter()
            .position(|a| a == "-timeout")
            .and_then(|i| self.args.get(i + 1))
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap_or(30);
        let child = Command::new("sipp")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp runs (package sip-tester)");
        let output = timeout(Duration::from_secs(secs + 15), child.wait_with_output())
            .await
            .expect("sipp ends by itself")
            .expect("sipp output");
        let code = output.status.code().unwrap_or(-1);
        if code != 0 {
            eprintln!(
                "sipp {} exited {code}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
            self.dump_logs();
        }
        code
    }

    /// Starts sipp in the background.
    pub fn spawn(self) -> tokio::task::JoinHandle<i32> {
        tokio::spawn(self.run())
    }

    fn dump_logs(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(6000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    eprintln!("==== {}\n{tail}", path.display());
                }
            }
        }
    }
}
