//! A real Redis for the tests: Debian's `redis-server`, started by the test itself on
//! 127.0.0.1, on a free port, with no persistence (`--save "" --appendonly no`), its working
//! directory a fresh one in the temp dir. Without `redis-server` the tests fail and say how to
//! install it; they never skip.
//!
//! Every test starts a server of its own (it takes a few milliseconds), so that one test can
//! stop it and start it again ([`Redis::stop`], [`Redis::start_again`]: same port, and
//! nothing kept, as a Redis without persistence restarted by an operator) without disturbing
//! the others.
//!
//! The server is daemonized with a pid file in its directory. Beside it runs a watchdog
//! shell, as for PostgreSQL ([`crate::postgres`]), that
//! reads a pipe from this process: when the pipe closes (the [`Redis`] is dropped, or the test
//! process ends in any way, a SIGKILL included), it kills the server named in the pid file and
//! deletes the directory. (Redis removes its pid file when it shuts down, so a stopped server's
//! old pid is never killed.) A test process killed before its watchdog ran leaves only a
//! directory, which the next run removes.
//!
//! [`Redis::try_start_tls`] also serves TLS on a second port, with a certificate from a test CA
//! of its own ([`crate::pki`]); the plain port stays for the test's own checks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A running throwaway Redis.
pub struct Redis {
    port: u16,
    /// The TLS port and the certificates it serves, if started with TLS.
    tls: Option<(u16, crate::pki::Pki)>,
    dir: PathBuf,
    bin: PathBuf,
    watchdog: Mutex<Option<Child>>,
}

/// A Redis of the calling test alone, started now and answering. Panics (fails the test) if
/// `redis-server` is not installed or does not start.
pub fn start() -> Redis {
    Redis::try_start().unwrap_or_else(|e| panic!("{e}"))
}

impl Redis {
    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://localhost:<TLS port>/`, if started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://localhost:{port}/"))
    }

    /// The CA certificate (PEM file) that issued the TLS port's certificate, if started with
    /// TLS.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, pki)| pki.ca.as_path())
    }

    /// A Redis of the caller alone, or why it cannot start (not installed, no free port).
    pub fn try_start() -> Result<Redis, String> {
        Self::start_with(false)
    }

    /// [`Redis::try_start`], also serving TLS (clients are not asked for certificates).
    pub fn try_start_tls() -> Result<Redis, String> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Redis, String> {
        let bin = which("redis-server").ok_or_else(|| {
            "redis-server is not installed; the cluster's tests run against a real Redis: \
             run ./scripts/setup.sh --with-browser (or apt-get install redis-server)"
                .to_owned()
        })?;
        crate::watchdog::sweep_leftovers(DIR_PREFIX);
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            crate::watchdog::random_hex(4)?
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let script = r#"
            cat >/dev/null
            if [ -f "$1/redis.pid" ]; then kill -9 "$(cat "$1/redis.pid")" 2>/dev/null; fi
            rm -rf "$1"
        "#;
        let watchdog = Command::new("/bin/sh")
            .args(["-c", script, "watchdog"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start the watchdog: {e}"))?;
        let tls = match tls {
            true => Some((
                crate::watchdog::free_port()?,
                crate::pki::issue(&dir, "redis")?,
            )),
            false => None,
        };
        let redis = Redis {
            port: crate::watchdog::free_port()?,
            tls,
            dir,
            bin,
            watchdog: Mutex::new(Some(watchdog)),
        };
        redis.launch()?;
        Ok(redis)
    }

    /// Starts the server (daemonized) and waits until it answers PING.
    fn launch(&self) -> Result<(), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string());
        if let Some((port, pki)) = &self.tls {
            cmd.arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(&pki.cert)
                .arg("--tls-key-file")
                .arg(&pki.key)
                .args(["--tls-auth-clients", "no"]);
        }
        let out = cmd
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(self.dir.join("log"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run redis-server: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-server failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.pings() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "the test Redis does not answer on port {}:\n{}",
            self.port,
            self.log()
        ))
    }

    /// Whether the server answers PING now.
    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("redis.pid"))
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
    }

    /// Stops the server as an operator would (SIGTERM; with no persistence it keeps
    /// nothing); returns once it is gone and its port refuses connections.
    pub fn stop(&self) {
        let pid = self.pid().expect("the test Redis runs (it has a pid file)");
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() || self.pings() {
            assert!(
                Instant::now() < deadline,
                "the test Redis did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the stopped server again on the same port, empty; returns once it answers.
    pub fn start_again(&self) {
        self.launch().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Redis {
    /// Closing the watchdog's stdin makes it kill the server and remove the directory.
    fn drop(&mut self) {
        crate::watchdog::end(&self.watchdog);
    }
}

/// The temp dir's servers are named `<DIR_PREFIX><pid of the test process>-<random>`.
const DIR_PREFIX: &str = "klausur-redis-";

/// `name` on the PATH (or in /usr/bin, /usr/sbin), if it is there.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
