//! Child processes of the `klausur` binary for the CLI tests: the binary with an environment
//! that names no configuration, running it to completion, free ports, a process killed when
//! dropped, starting a server until it says it listens, and the operator's first steps
//! (an account, the identity CA's key and token, a dial-in meeting and an invitation) with their
//! file checks.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `klausur` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_klausur");

/// The password of the accounts the tests add.
pub const PASSWORD: &str = "a-long-password-1";

/// `klausur` with no configuration, database, identity CA or remote CA from the environment,
/// logging at info.
pub fn base_cmd() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("KLAUSUR_CONFIG")
        .env_remove("KLAUSUR_DATABASE")
        .env_remove("KLAUSUR_IDENTITY_CA_KEY_FILE")
        .env_remove("KLAUSUR_IDENTITY_REMOTE_URL")
        .env_remove("KLAUSUR_IDENTITY_REMOTE_TOKEN_FILE")
        .env("KLAUSUR_LOG", "info");
    cmd
}

/// Runs `klausur <args>` (from [`base_cmd`]) to completion with `stdin`, if any:
/// (success, stdout trimmed, stderr).
pub fn run(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = base_cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `klausur --data-dir <data> serve` on `127.0.0.1:<port>`, media on free ports (each worker
/// its own).
pub fn serve_cmd(data: &Path, port: u16) -> Command {
    let mut cmd = base_cmd();
    cmd.arg("--data-dir").arg(data).args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--media-listen",
        "127.0.0.1:0",
    ]);
    cmd
}

/// A loopback port, free for TCP and UDP a moment ago, for a child process (or a program the
/// test configures) to listen on: see [`free_port_block`].
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// The first of `len` consecutive ports on 127.0.0.1 that are free for both UDP and TCP, for a
/// program that listens on them. They lie between the dial-in gateway's default RTP ports
/// (20000-20999) and the kernel's ephemeral range (32768 and up), so no outgoing connection, no
/// `bind(0)` and no gateway's call takes one before the program binds it (a port from `bind(0)`
/// can be taken so: the program then fails with "Address already in use"). The tests of this
/// process take the ports in turn, so no two of them get overlapping blocks; other processes
/// start elsewhere in the range (by their pid).
pub fn free_port_block(len: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 21_000;
    const END: u32 = 32_768;
    const SPAN: u32 = END - FIRST;
    // Counts the ports handed out (and one spare after each block), so blocks never overlap.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    let len = u32::from(len);
    for _ in 0..SPAN {
        let base = FIRST + (start + NEXT.fetch_add(len + 1, Ordering::Relaxed)) % SPAN;
        if base + len > END {
            // The block would run past the end: the next one starts over at the beginning.
            continue;
        }
        let free = (base..base + len).all(|p| {
            let p = p as u16;
            std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            return base as u16;
        }
    }
    panic!("no {len} free consecutive ports between {FIRST} and {END}");
}

/// A child process, killed when dropped (also when a test fails).
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERM to `p` (an orderly stop, as by systemd), without waiting.
pub fn terminate(p: &Proc) {
    let status = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits at most `limit` until `p` has ended by itself: its exit status, `None` if it still
/// runs then.
pub fn wait_exit(p: &mut Proc, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = p.0.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// [`start_until_listening`] with stderr going to the file `log`.
pub fn start(mut cmd: Command, log: &Path) -> (Proc, Vec<String>) {
    let log = std::fs::File::create(log).expect("log file");
    cmd.stderr(Stdio::from(log));
    start_until_listening(cmd)
}

/// `klausur user add ada` (display name "Ada L", [`PASSWORD`]) in the data directory `data`.
pub fn add_ada(data: &Path) {
    add_ada_with(&["--data-dir", data.to_str().expect("path")]);
}

/// `klausur <global> user add ada` (display name "Ada L", [`PASSWORD`]): `global` says where
/// (`--data-dir`, `--database`).
pub fn add_ada_with(global: &[&str]) {
    let user_add = [
        "user",
        "add",
        "ada",
        "--display-name",
        "Ada L",
        "--permanent-password",
    ];
    let (ok, _, err) = run(
        &[global, &user_add].concat(),
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(ok, "{err}");
}

/// `klausur identity-ca init --key-file <key_file>`: (success, stdout: the public key, stderr).
pub fn ca_init(key_file: &Path) -> (bool, String, String) {
    run(
        &[
            "identity-ca",
            "init",
            "--key-file",
            key_file.to_str().expect("path"),
        ],
        None,
    )
}

/// `klausur identity-ca init-token --token-file <token_file>`: (success, stdout, stderr).
pub fn ca_init_token(token_file: &Path) -> (bool, String, String) {
    run(
        &[
            "identity-ca",
            "init-token",
            "--token-file",
            token_file.to_str().expect("path"),
        ],
        None,
    )
}

/// The identity CA's key file and token file, made with `identity-ca init` and `init-token`
/// (both must succeed): the CA's public key (hex).
pub fn init_ca(key_file: &Path, token_file: &Path) -> String {
    let (ok, public_key, err) = ca_init(key_file);
    assert!(ok, "{err}");
    init_token(token_file);
    public_key
}

/// A token file made with `identity-ca init-token`, which must succeed: the token.
pub fn init_token(token_file: &Path) -> String {
    let (ok, _, err) = ca_init_token(token_file);
    assert!(ok, "{err}");
    std::fs::read_to_string(token_file)
        .expect("token")
        .trim()
        .to_string()
}

/// `klausur --data-dir <data> [--config <config>] <args> --json`, which must succeed: its JSON.
pub fn json(data: &Path, config: Option<&Path>, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--data-dir", data.to_str().expect("path")];
    if let Some(c) = config {
        all.extend(["--config", c.to_str().expect("path")]);
    }
    all.extend(args);
    all.push("--json");
    let (ok, out, err) = run(&all, None);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Ada's meeting "Sprechstunde" of the internal profile with dial-in: its JSON.
pub fn dial_in_meeting(data: &Path, config: Option<&Path>) -> serde_json::Value {
    json(
        data,
        config,
        &[
            "meeting",
            "create",
            "Sprechstunde",
            "--organiser",
            "ada",
            "--profile",
            "internal",
            "--dial-in",
        ],
    )
}

/// Invites `name` to the meeting `meeting_id`: the invitation's JSON.
pub fn invite(
    data: &Path,
    config: Option<&Path>,
    meeting_id: &str,
    name: &str,
) -> serde_json::Value {
    json(
        data,
        config,
        &["invite", "create", meeting_id, "--name", name],
    )
}

/// `klausur identity-ca serve` with `key_file` and `token_file` on `127.0.0.1:<port>`.
pub fn ca_cmd(key_file: &Path, port: u16, token_file: &Path) -> Command {
    let mut cmd = base_cmd();
    cmd.args(["identity-ca", "serve", "--key-file"])
        .arg(key_file)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--token-file"])
        .arg(token_file);
    cmd
}

/// Asserts that `path` can be read and written by its owner only (mode 0600; on Unix).
pub fn assert_owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: mode {mode:o}", path.display());
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read_dir")
        .map_while(Result::ok)
    {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
