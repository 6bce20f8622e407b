//! The loopback floor: what one bare UDP datagram costs the server's core on this machine,
//! measured right before each trial.
//!
//! The machine's speed drifts by a quarter and more between runs minutes apart (both servers'
//! figures move together), so an absolute figure such as "packets per CPU-second" holds in one
//! phase and misses in the next. The floor is measured the same way in every run: a thread
//! pinned to the server's core sends [`DATAGRAM_BYTES`]-byte datagrams with one `sendto` each,
//! round robin to [`RECEIVERS`] sockets that a thread on the load generator's core drains
//! (without GRO), paced at [`RATE`] datagrams a second in bursts of [`BURST`]. Its CPU time is
//! read with `CLOCK_THREAD_CPUTIME_ID` around each burst, so timer sleeps between bursts do not
//! count. On loopback, the kernel delivers a datagram into the receiving socket inside the
//! sending system call, as it does for the server's sends.
//!
//! The floor itself spreads by about a sixth between measurements seconds apart (3.5 to 4.8 us
//! in twelve measurements of 0.5 s in a row; a trial measures 0.3 s), about as much as a trial's packets per
//! CPU-second, so it does not correct a single trial. What it shows is the phase of the
//! machine over a run (the median of a run's floors) and the ceiling the issue names: its
//! inverse is what a server that did nothing but one `sendto` per packet would reach.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;
use serde::Serialize;

/// Bytes per datagram: about a video packet of the benchmark's participants.
pub const DATAGRAM_BYTES: usize = 1000;
/// Receiving sockets, sent to round robin (so no one socket's buffer fills).
pub const RECEIVERS: usize = 10;
/// Datagrams per second: about a meeting of 12's forwarded rate, far below what a core can send.
pub const RATE: u32 = 20_000;
/// Datagrams per burst (one burst per millisecond at [`RATE`]).
pub const BURST: u32 = 20;
/// Bursts sent before the measurement starts (caches, socket buffers).
const WARMUP_BURSTS: u32 = 50;

/// One measurement of the floor.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Floor {
    /// Sender CPU time per datagram, microseconds.
    pub us_per_datagram: f64,
    /// Datagrams sent in the measurement (after the warm-up).
    pub sent: u64,
    /// Datagrams the receivers got, warm-up included (every datagram on loopback).
    pub received: u64,
    /// Datagrams sent, warm-up included.
    pub sent_total: u64,
}

impl Floor {
    /// The ceiling this floor implies: bare datagrams per CPU-second.
    pub fn ceiling_per_cpu_s(&self) -> f64 {
        1e6 / self.us_per_datagram
    }
}

impl std::fmt::Display for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} us per datagram (a ceiling of {:.0} per CPU-s; {} sent, {} received)",
            self.us_per_datagram,
            self.ceiling_per_cpu_s(),
            self.sent_total,
            self.received
        )
    }
}

/// [`measure`] on a blocking thread of the runtime.
pub async fn measure_async(sender_cpu: Option<usize>, duration: Duration) -> anyhow::Result<Floor> {
    tokio::task::spawn_blocking(move || measure(sender_cpu, duration))
        .await
        .context("loopback floor task")?
}

fn thread_cpu() -> anyhow::Result<Duration> {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).context("thread CPU clock")?;
    Ok(Duration::from(t))
}

/// Measures the floor for `duration` with the sending thread pinned to `sender_cpu` (the
/// receivers stay on the calling thread's CPUs). Blocking: call it from a blocking task.
pub fn measure(sender_cpu: Option<usize>, duration: Duration) -> anyhow::Result<Floor> {
    let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let receivers: Vec<UdpSocket> = (0..RECEIVERS)
        .map(|_| {
            let s = UdpSocket::bind(localhost)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()
        .context("floor: receiver sockets")?;
    let targets: Vec<SocketAddr> = receivers
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<_>>()?;
    let sender = UdpSocket::bind(localhost).context("floor: sender socket")?;
    let done = Arc::new(AtomicBool::new(false));
    let receiving = {
        let done = done.clone();
        std::thread::Builder::new()
            .name("floor-receive".into())
            .spawn(move || receive(&receivers, &done))?
    };
    let bursts = (duration.as_secs_f64() * f64::from(RATE / BURST)).ceil() as u32;
    let spawned = std::thread::Builder::new().name("floor-send".into()).spawn(
        move || -> anyhow::Result<(Duration, u64, u64)> {
            if let Some(cpu) = sender_cpu {
                // Not core_affinity: it offers only the CPUs this thread may already use, and
                // the load generator (which started this thread) is pinned to the other one.
                let mut set = CpuSet::new();
                set.set(cpu)
                    .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set))
                    .with_context(|| format!("floor: cannot pin the sender to CPU {cpu}"))?;
            }
            send(&sender, &targets, bursts)
        },
    );
    let sent = match spawned {
        Ok(sending) => sending
            .join()
            .map_err(|_| anyhow::anyhow!("floor: sender panicked")),
        Err(e) => Err(anyhow::Error::from(e).context("floor: cannot start the sender")),
    };
    // The receivers drain what is still queued, then stop.
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, Ordering::Relaxed);
    let received = receiving
        .join()
        .map_err(|_| anyhow::anyhow!("floor: receiver panicked"))??;
    let (cpu, sent, sent_total) = sent??;
    if sent == 0 || cpu.is_zero() {
        bail!("floor: nothing measured ({sent} datagrams, {cpu:?} of CPU)");
    }
    Ok(Floor {
        us_per_datagram: cpu.as_secs_f64() * 1e6 / sent as f64,
        sent,
        received,
        sent_total,
    })
}

/// Sends `bursts` paced bursts after the warm-up: (CPU time inside the measured bursts,
/// datagrams in them, all datagrams sent).
fn send(
    socket: &UdpSocket,
    targets: &[SocketAddr],
    bursts: u32,
) -> anyhow::Result<(Duration, u64, u64)> {
    let payload = [0x5a_u8; DATAGRAM_BYTES];
    let period = Duration::from_secs(1) / (RATE / BURST);
    let mut next = Instant::now();
    let mut cpu = Duration::ZERO;
    let (mut measured, mut total) = (0_u64, 0_u64);
    let mut at = 0;
    for b in 0..WARMUP_BURSTS + bursts {
        let before = thread_cpu()?;
        let mut ok = 0;
        for _ in 0..BURST {
            // A full receive buffer drops on the receiving side; the send itself succeeds.
            if socket.send_to(&payload, targets[at]).is_ok() {
                ok += 1;
            }
            at = (at + 1) % targets.len();
        }
        let after = thread_cpu()?;
        total += ok;
        if b >= WARMUP_BURSTS {
            cpu += after.saturating_sub(before);
            measured += ok;
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Late (a busy core): do not catch up in one long burst.
            next = now;
        }
    }
    Ok((cpu, measured, total))
}

/// Drains the receivers until `done`; returns the datagrams received.
fn receive(sockets: &[UdpSocket], done: &AtomicBool) -> anyhow::Result<u64> {
    let mut buf = [0_u8; 2048];
    let mut received = 0_u64;
    loop {
        let stop = done.load(Ordering::Relaxed);
        let mut fds: Vec<PollFd<'_>> = sockets
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        nix::poll::poll(&mut fds, PollTimeout::from(20_u8)).context("floor: poll")?;
        for s in sockets {
            while s.recv(&mut buf).is_ok() {
                received += 1;
            }
        }
        if stop {
            return Ok(received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_senders_cpu_per_datagram_and_everything_arrives() {
        let f = measure(None, Duration::from_millis(200)).expect("measure");
        // 200 ms at one burst a millisecond: 200 measured bursts, after the warm-up's.
        assert_eq!(f.sent, 200 * u64::from(BURST), "{f:?}");
        assert_eq!(
            f.sent_total,
            u64::from(WARMUP_BURSTS + 200) * u64::from(BURST)
        );
        assert_eq!(f.received, f.sent_total, "loopback loses nothing: {f:?}");
        // A sendto of 1000 bytes costs a core between a tenth of a microsecond and a
        // millisecond on any machine this runs on; a sender whose CPU time was not read (or
        // read from the wrong clock, e.g. the time asleep between bursts) is far outside.
        assert!(
            f.us_per_datagram > 0.1 && f.us_per_datagram < 1000.0,
            "{f:?}"
        );
        assert!((f.ceiling_per_cpu_s() * f.us_per_datagram - 1e6).abs() < 1e-3);
    }
}
