//! Throwaway engines for klausur's tests and its benchmark, each started by the calling process
//! on 127.0.0.1 and gone when it ends (a watchdog beside each engine kills it when the process
//! ends in any way, a SIGKILL included):
//!
//! - [`postgres`]: Debian's PostgreSQL as a throwaway cluster, a database per test (and the
//!   SQLite engines the store's tests run beside it);
//! - [`redis`]: Debian's `redis-server` without persistence, one per test, which a test may
//!   stop and start again on the same port;
//! - [`pki`]: a test CA and a server certificate it issued, for engines and services that
//!   speak TLS (both engines above do: PostgreSQL always, Redis when started with
//!   [`redis::Redis::try_start_tls`]).
//!
//! Without the engine installed a caller fails with how to install it (`./scripts/setup.sh
//! --with-browser`); nothing is ever skipped. Not part of any server build.

pub mod pki;
pub mod postgres;
pub mod redis;

mod watchdog {
    //! What both engines share: ending a watchdog, sweeping what killed test processes left
    //! in the temp dir (a watchdog removes its engine's directory; only a process killed before
    //! its watchdog ran, during `initdb` say, leaves one behind, with no server in it), a free
    //! port and random names.

    use std::io::Read;
    use std::path::Path;
    use std::process::Child;
    use std::sync::Mutex;

    /// Closes the watchdog's stdin, which makes it stop its engine and remove its directory,
    /// and waits for it.
    pub(crate) fn end(watchdog: &Mutex<Option<Child>>) {
        let child = watchdog.lock().map(|mut c| c.take());
        if let Ok(Some(mut child)) = child {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Removes the temp dir's directories `<prefix><pid>-...` of test processes that are gone
    /// (killed before their watchdog ran).
    pub(crate) fn sweep_leftovers(prefix: &str) {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// A loopback TCP port free a moment ago.
    pub(crate) fn free_port() -> Result<u16, String> {
        let l =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| format!("free port: {e}"))
    }

    /// `bytes` random bytes in hex.
    pub(crate) fn random_hex(bytes: usize) -> Result<String, String> {
        let mut buf = vec![0u8; bytes];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
    }
}
