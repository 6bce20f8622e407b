//! A participant cannot write the operator's log full with crafted datagrams. The media
//! libraries write a WARN line for some odd packets before anyone checked who sent them (ICE
//! warns about a STUN request with a MAPPED-ADDRESS attribute); the server's default filter
//! (`DEFAULT_LOG_FILTER`) keeps those out. Negative control: with every WARN let through, the
//! same datagrams do write lines, so the test sees what it claims to keep out.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use str0m::net::{Protocol, Receive};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A STUN binding request with a MAPPED-ADDRESS attribute (which only responses carry).
fn crafted_stun(n: u32) -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0x00, 12, 0x21, 0x12, 0xa4, 0x42];
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&[7; 8]);
    // MAPPED-ADDRESS: type 1, length 8, family IPv4, port, address.
    b.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x13, 0x88, 10, 0, 0, 1]);
    b
}

/// WARN lines written while 1,000 crafted datagrams are read under `filter`.
fn warn_lines(filter: &str) -> usize {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let from: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let to: SocketAddr = "127.0.0.1:3478".parse().expect("addr");
    tracing::subscriber::with_default(subscriber, || {
        for n in 0..1000 {
            let _ = Receive::new(Protocol::Udp, from, to, &crafted_stun(n));
        }
    });
    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    log.lines().filter(|l| l.contains("WARN")).count()
}

#[test]
fn crafted_datagrams_write_no_warn_lines_by_default() {
    assert!(
        warn_lines("warn") >= 1000,
        "the crafted datagrams no longer trigger the libraries' warning"
    );
    assert_eq!(warn_lines(klausur_server::DEFAULT_LOG_FILTER), 0);
}
