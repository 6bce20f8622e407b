//! Starting `klausur serve` with a fresh data directory on loopback ports, and preparing a
//! meeting with one personal invitation per simulated participant through the admin CLI.
//!
//! The helpers below it ([`admin`], [`spawn_pinned`], [`wait_for_log`]) are shared with the
//! dial-in scenario, which starts a server and a `klausur sip-gateway` of its own.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
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
    /// The meeting each token invites to (`meeting_id` unless [`KlausurServer::start`] made
    /// several meetings).
    pub token_meetings: Vec<String>,
    _dir: tempfile::TempDir,
}

pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs one admin subcommand with `--json` output (with `--config config` when given);
/// returns the parsed JSON.
pub fn admin_with(
    bin: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<serde_json::Value> {
    admin_env(bin, data_dir, config, &[], args, stdin)
}

/// [`admin_with`] with `env` added to the command's environment (`KLAUSUR_DATABASE`).
fn admin_env(
    bin: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut cmd = Command::new(bin);
    cmd.envs(env.iter().copied());
    cmd.arg("--data-dir").arg(data_dir);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
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

/// [`admin_with`] without a configuration file.
pub fn admin(
    bin: &Path,
    data_dir: &Path,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<serde_json::Value> {
    admin_with(bin, data_dir, None, args, stdin)
}

/// Adds the organiser account the benchmark's meetings belong to.
pub fn add_organiser(bin: &Path, data_dir: &Path) -> anyhow::Result<()> {
    add_organiser_env(bin, data_dir, &[])
}

fn add_organiser_env(bin: &Path, data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<()> {
    admin_env(
        bin,
        data_dir,
        None,
        env,
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
    Ok(())
}

/// The organiser's user name (for `meeting create --organiser`).
pub const fn organiser() -> &'static str {
    ORGANISER
}

/// A command for `bin`, run under `taskset -c cpu` when a CPU is given (the child's PID is the
/// binary's: taskset execs it).
pub fn pinned_command(bin: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// [`pinned_command`], and with `realtime` under `chrt -r <priority>` (round-robin real-time
/// scheduling, so other processes on a shared machine do not preempt it; the child's PID is
/// still the binary's: chrt execs it too).
pub fn pinned_rt_command(bin: &Path, cpu: Option<usize>, realtime: Option<u8>) -> Command {
    let Some(priority) = realtime else {
        return pinned_command(bin, cpu);
    };
    let mut c = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg("chrt");
            c
        }
        None => Command::new("chrt"),
    };
    c.arg("-r").arg(priority.to_string()).arg(bin);
    c
}

/// Puts every thread of this process under round-robin real-time scheduling at `priority`
/// (threads started later inherit it).
pub fn set_own_realtime(priority: u8) -> anyhow::Result<()> {
    let out = Command::new("chrt")
        .args([
            "-r",
            "-a",
            "-p",
            &priority.to_string(),
            &std::process::id().to_string(),
        ])
        .output()
        .context("cannot run chrt")?;
    if !out.status.success() {
        bail!(
            "chrt failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))
}

/// Waits until `log` contains `needle` (the process is ready), failing when the process exits
/// first or `timeout` passes.
pub fn wait_for_log(
    child: &mut Child,
    log: &Path,
    needle: &str,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start within {} s", timeout.as_secs())
}

/// The meetings and invitations [`prepare`] made.
pub struct Prepared {
    pub ids: Vec<String>,
    pub tokens: Vec<String>,
    /// The meeting each token invites to.
    pub token_meetings: Vec<String>,
}

/// Prepares a store through the admin CLI on `data` (with `env`: `KLAUSUR_DATABASE` for
/// PostgreSQL): the organiser, `meetings` meetings, one invitation per entry of `meeting_of`,
/// to the meeting of that index.
pub fn prepare(
    bin: &Path,
    data: &Path,
    env: &[(&str, &str)],
    meeting_of: &[usize],
    meetings: usize,
) -> anyhow::Result<Prepared> {
    add_organiser_env(bin, data, env)?;
    let mut ids = Vec::with_capacity(meetings);
    for m in 0..meetings.max(1) {
        let title = if meetings > 1 {
            format!("Benchmark {m}")
        } else {
            "Benchmark".to_string()
        };
        let args = [
            "meeting",
            "create",
            &title,
            "--organiser",
            ORGANISER,
            "--profile",
            "strict",
        ];
        let meeting = admin_env(bin, data, None, env, &args, "")?;
        ids.push(meeting["id"].as_str().context("meeting id")?.to_string());
    }
    let mut tokens = Vec::with_capacity(meeting_of.len());
    let mut token_meetings = Vec::with_capacity(meeting_of.len());
    for (i, &m) in meeting_of.iter().enumerate() {
        let id = ids.get(m).context("a participant's meeting")?;
        let name = format!("Bench {i}");
        let args = ["invite", "create", id, "--name", &name];
        let inv = admin_env(bin, data, None, env, &args, "")?;
        tokens.push(
            inv["token"]
                .as_str()
                .context("invitation token")?
                .to_string(),
        );
        token_meetings.push(id.clone());
    }
    Ok(Prepared {
        ids,
        tokens,
        token_meetings,
    })
}

impl KlausurServer {
    /// Prepares the data directory (organiser, `meetings` meetings, one invitation per entry of
    /// `meeting_of`, to the meeting of that index), then starts the server with
    /// `media_workers` media workers, pinned to `cpu` with taskset when given.
    pub fn start(
        bin: &Path,
        meeting_of: &[usize],
        meetings: usize,
        media_workers: usize,
        cpu: Option<usize>,
    ) -> anyhow::Result<KlausurServer> {
        check_bin(bin)?;
        let dir = new_dir()?;
        let prepared = prepare(bin, &data_dir(&dir), &[], meeting_of, meetings)?;
        let workers = media_workers.to_string();
        let mut server = Self::launch(
            bin,
            dir,
            cpu,
            prepared.ids[0].clone(),
            prepared.tokens,
            &[("KLAUSUR_MEDIA_WORKERS", &workers)],
        )?;
        server.token_meetings = prepared.token_meetings;
        Ok(server)
    }

    /// Starts the server on the data directory prepared in `dir` (see [`new_dir`],
    /// [`data_dir`]), pinned to `cpu` with taskset when given, with `env` added to its
    /// environment; `meeting_id` and `tokens` are kept for the caller.
    pub fn launch(
        bin: &Path,
        dir: tempfile::TempDir,
        cpu: Option<usize>,
        meeting_id: String,
        tokens: Vec<String>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<KlausurServer> {
        Self::launch_as(bin, dir, cpu, meeting_id, tokens, env, None)
    }

    /// [`KlausurServer::launch`] as node `node` of a cluster (`env` names its Redis and
    /// database): its node URL is its own address.
    pub fn launch_as(
        bin: &Path,
        dir: tempfile::TempDir,
        cpu: Option<usize>,
        meeting_id: String,
        tokens: Vec<String>,
        env: &[(&str, &str)],
        node: Option<&str>,
    ) -> anyhow::Result<KlausurServer> {
        let data = data_dir(&dir);
        let http: SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
        // Port 0: each media worker on a free port of its own.
        let media: SocketAddr = ([127, 0, 0, 1], 0).into();
        let log = dir.path().join("server.log");
        let mut cmd = pinned_command(bin, cpu);
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("serve")
            .arg("--listen")
            .arg(http.to_string())
            .arg("--media-listen")
            .arg(media.to_string())
            .env_remove("KLAUSUR_WEB_ROOT")
            .env_remove("KLAUSUR_CONFIG")
            // Every load-generator client (and the dial-in gateway's calls) comes from
            // 127.0.0.1: the per-address WebSocket limit would refuse all but the first 20.
            .env("KLAUSUR_MAX_WEBSOCKETS_PER_ADDRESS", "100000")
            .env("KLAUSUR_LOG", server_log_filter())
            .envs(env.iter().copied());
        if let Some(id) = node {
            cmd.env("KLAUSUR_NODE_ID", id)
                .env("KLAUSUR_NODE_URL", format!("http://{http}"));
        }
        let child = spawn_logged(&mut cmd, &log)?;
        let pid = child.id();
        let mut server = KlausurServer {
            child,
            pid,
            http,
            token_meetings: vec![meeting_id.clone(); tokens.len()],
            meeting_id,
            tokens,
            _dir: dir,
        };
        wait_for_log(
            &mut server.child,
            &log,
            "listening on",
            "klausur serve",
            Duration::from_secs(15),
        )?;
        Ok(server)
    }

    /// The server's log so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/ws", self.http)
    }

    /// `http://host:port` of the server.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// How the server process ended, if it has (`None`: still running).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot tell: {e}")),
        }
    }
}

/// Fails with a hint when the server binary is missing.
pub fn check_bin(bin: &Path) -> anyhow::Result<()> {
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p klausur-server` or pass --server-bin",
            bin.display()
        );
    }
    Ok(())
}

/// A fresh temporary directory for a server's data directory ([`data_dir`]) and log; removed
/// when dropped.
pub fn new_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("klausur-bench-")
        .tempdir()?)
}

/// The data directory inside a directory from [`new_dir`].
pub fn data_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data")
}

/// The server's log filter: warnings and errors (their lines count as problems);
/// KLAUSUR_BENCH_SERVER_LOG overrides it for diagnosis.
pub fn server_log_filter() -> String {
    std::env::var("KLAUSUR_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn,str0m=error".into())
}

impl Drop for KlausurServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn pinned_and_real_time_commands_exec_the_binary() {
        let bin = Path::new("/bin/klausur");
        assert_eq!(line(&pinned_command(bin, None)), ["/bin/klausur"]);
        assert_eq!(
            line(&pinned_command(bin, Some(1))),
            ["taskset", "-c", "1", "/bin/klausur"]
        );
        assert_eq!(
            line(&pinned_rt_command(bin, Some(0), Some(10))),
            ["taskset", "-c", "0", "chrt", "-r", "10", "/bin/klausur"]
        );
        assert_eq!(
            line(&pinned_rt_command(bin, None, Some(10))),
            ["chrt", "-r", "10", "/bin/klausur"]
        );
        assert_eq!(line(&pinned_rt_command(bin, None, None)), ["/bin/klausur"]);
    }
}
