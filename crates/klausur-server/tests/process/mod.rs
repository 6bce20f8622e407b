//! Child processes of the `klausur` binary for the CLI tests: free ports, a process killed when
//! dropped, and starting a server until it says it listens.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process, killed when dropped (also when a test fails).
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` (its stdout is read here; set stderr beforehand) and waits up to 30 s for a
/// stdout line containing "listening on"; returns the process and its stdout lines so far.
pub fn start_until_listening(mut cmd: Command) -> (Proc, Vec<String>) {
    cmd.stdout(Stdio::piped());
    let mut proc = Proc(cmd.spawn().expect("spawn"));
    let stdout = proc.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let done = line.contains("listening on");
                lines.push(line);
                if done {
                    return (proc, lines);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    drop(proc);
    panic!("did not start: {lines:?}");
}
