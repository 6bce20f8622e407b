//! The engines the store's tests run against: SQLite (in memory and in a file) and a real
//! PostgreSQL.
//!
//! PostgreSQL is Debian's `postgresql` package (its binaries from `pg_config --bindir` or
//! `/usr/lib/postgresql/*/bin`), started by the test process itself as a throwaway cluster on
//! first use: `initdb` into a fresh directory in the temp dir, the server listening on
//! 127.0.0.1 only, on a free port, with its unix socket in that directory. As root (here and in
//! CI) both run as `nobody`, since PostgreSQL refuses to run as root. Every test gets a
//! database of its own (`CREATE DATABASE` on the cluster's admin connection), so tests run side
//! by side. Without PostgreSQL the tests fail and say how to install it; they never skip.
//!
//! The server also speaks TLS, with a certificate for `localhost` and 127.0.0.1 from a test CA
//! of its own ([`Cluster::tls_ca`]): a client's default `sslmode=prefer` uses it, and a test
//! may demand it and check the certificate (`sslmode=verify-full&sslrootcert=...`).
//!
//! The server is stopped by a watchdog shell that runs beside it and reads a pipe from this
//! process: when the pipe closes (the [`Cluster`] is dropped, or the test process ends in any
//! way, a SIGKILL included), the watchdog stops the server at once and deletes the directory.
//! (A test process killed during `initdb`, before the watchdog runs, leaves a directory without
//! a server; the next run removes it.)
//! The cluster lives in a `static`, which Rust never drops: the pipe closing at process exit is
//! what ends it.
//!
//! A test that stops and starts PostgreSQL (to see what happens while it is down) cannot use
//! that cluster, which the other tests of the process use at the same time: it takes a
//! [`private_cluster`] of its own, made the same way but run by `pg_ctl`, so that
//! [`Cluster::stop`] and [`Cluster::start_again`] stop it (`pg_ctl stop -m fast`, as an
//! operator restarting it would) and start it on the same port and data. Its watchdog only
//! waits for the pipe to close, then stops the server (if running) and deletes the directory;
//! a private cluster also ends when it is dropped, at the end of its test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use klausur_store::Store;
use sqlx::{ConnectOptions, Connection};

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Engine {
    SqliteMemory,
    SqliteFile,
    Postgres,
}

/// A fresh, empty database of one engine, for one test.
pub enum TestDb {
    SqliteMemory,
    SqliteFile {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
    },
}

impl Engine {
    /// A fresh database with the store's schema, and a store on it.
    pub async fn fresh(self) -> (Store, TestDb) {
        let db = match self {
            Engine::SqliteMemory => TestDb::SqliteMemory,
            Engine::SqliteFile => {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("klausur.db");
                TestDb::SqliteFile { _dir: dir, path }
            }
            Engine::Postgres => TestDb::Postgres {
                url: cluster().create_database().await,
            },
        };
        let store = db.open().await;
        (store, db)
    }
}

impl TestDb {
    /// A (further) store on this database: a second process, or the server started again.
    /// An in-memory SQLite database is private to its one store and cannot be opened again.
    pub async fn open(&self) -> Store {
        match self {
            TestDb::SqliteMemory => Store::open_sqlite_memory().await.expect("open"),
            TestDb::SqliteFile { path, .. } => Store::open_sqlite(path).await.expect("open"),
            TestDb::Postgres { url } => Store::open_postgres(url).await.expect("open"),
        }
    }

    /// Runs raw SQL (one or more statements) on the database, past the store: what someone
    /// with access to the database could do.
    pub async fn raw_sql(&self, sql: &str) {
        match self {
            TestDb::SqliteMemory => panic!("an in-memory database has no second way in"),
            TestDb::SqliteFile { path, .. } => {
                let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .connect()
                    .await
                    .expect("open the database file");
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .expect("raw SQL");
                conn.close().await.expect("close");
            }
            TestDb::Postgres { url } => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .expect("raw SQL");
                conn.close().await.expect("close");
            }
        }
    }

    /// The PostgreSQL URL of this database, if it is one.
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            TestDb::Postgres { url } => Some(url),
            _ => None,
        }
    }
}

/// The superuser `initdb` creates in the test cluster.
const ADMIN: &str = "klausur_test";

/// A running throwaway PostgreSQL cluster.
pub struct Cluster {
    port: u16,
    password: String,
    dir: PathBuf,
    /// PostgreSQL's binaries.
    bin: PathBuf,
    /// Whom the server runs as (`nobody` if the tests run as root).
    run_as: Option<&'static str>,
    /// Whether `pg_ctl` runs the server (a [`private_cluster`]), so it can be stopped and
    /// started again; otherwise the watchdog is the server.
    private: bool,
    /// The watchdog; its stdin is the pipe whose closing stops the server.
    watchdog: Mutex<Option<Child>>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The test process's cluster, started on first use. Panics (fails the test) if PostgreSQL is
/// not installed or does not start.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// A cluster of the calling test alone, started now, which the test may stop and start again.
/// Stopped and deleted when dropped (or when the test process ends). Panics (fails the test) if
/// PostgreSQL is not installed or does not start.
pub fn private_cluster() -> Cluster {
    Cluster::start_private().unwrap_or_else(|e| panic!("{e}"))
}

impl Cluster {
    /// The URL of database `name` on the cluster over TCP, as the admin with its password.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{ADMIN}:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// The directory of the cluster's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM file) that issued the server's TLS certificate.
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.join(format!("{PKI_NAME}-root.pem"))
    }

    /// The port the cluster listens on (its socket file is named after it too).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin user's name.
    pub fn admin(&self) -> &'static str {
        ADMIN
    }

    /// Creates an empty database with a name of its own and returns its URL.
    pub async fn create_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = self.admin_connection().await;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.expect("close");
        self.url(&name)
    }

    /// A connection to the `postgres` database, retried while the server is still starting
    /// up.
    async fn admin_connection(&self) -> sqlx::PgConnection {
        let url = self.url("postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::PgConnection::connect(&url).await {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "the test PostgreSQL does not answer on port {}: {e}\n{}",
                    self.port,
                    self.log()
                ),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Stops the server of a [`private_cluster`] as an operator would (`pg_ctl stop -m fast`:
    /// open transactions are rolled back, connections closed); returns once it is down.
    pub fn stop(&self) {
        assert!(
            self.private,
            "only a private cluster is stopped by its test"
        );
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    /// Starts the stopped server of a [`private_cluster`] again, on the same port and data;
    /// returns once it accepts connections.
    pub fn start_again(&self) {
        assert!(
            self.private,
            "only a private cluster is started again by its test"
        );
        self.pg_ctl(&["start", "-l"]);
    }

    /// Runs `pg_ctl <args> -D <data> -w` (for `start`, `args` ends in `-l`: the log file and the
    /// server's options follow); panics with its output and the server's log if it fails.
    fn pg_ctl(&self, args: &[&str]) {
        let mut cmd = command(self.run_as, &self.bin.join("pg_ctl"), &self.dir);
        cmd.args(args);
        if args.first() == Some(&"start") {
            cmd.arg(self.dir.join("log"))
                .arg("-o")
                .arg(server_options(&self.dir, self.port));
        }
        let out = cmd
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// A private cluster: the shared one's directory and `initdb`, the server started by
    /// `pg_ctl`, and a watchdog that stops it and removes the directory once the pipe closes.
    fn start_private() -> Result<Cluster, String> {
        let Initialised {
            bin,
            dir,
            password,
            run_as,
        } = initialise()?;
        let port = crate::watchdog::free_port()?;
        let script = r#"
            cat >/dev/null
            "$1/pg_ctl" stop -D "$2/data" -m immediate -s >/dev/null 2>&1
            rm -rf "$2"
        "#;
        let watchdog = command(run_as, Path::new("/bin/sh"), &dir)
            .args(["-c", script, "watchdog"])
            .arg(&bin)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start the watchdog: {e}"))?;
        let cluster = Cluster {
            port,
            password,
            dir,
            bin,
            run_as,
            private: true,
            watchdog: Mutex::new(Some(watchdog)),
        };
        cluster.pg_ctl(&["start", "-l"]);
        Ok(cluster)
    }

    fn start() -> Result<Cluster, String> {
        let Initialised {
            bin,
            dir,
            password,
            run_as,
        } = initialise()?;
        let port = crate::watchdog::free_port()?;
        // The watchdog: a shell that moves its stdin (a pipe from this process) to fd 3,
        // leaves in the background a subshell that waits for that pipe to close and then stops
        // the server at once (SIGQUIT, again until it is gone) and removes the directory, and
        // becomes the server itself (exec, so its pid is `$$`; a server started in the
        // background would ignore SIGQUIT until it set up its handlers, and miss an early stop).
        let script = r#"
            exec 3<&0 </dev/null
            (
                cat >/dev/null
                while kill -QUIT "$$" 2>/dev/null; do sleep 0.1; done
                rm -rf "$2"
            ) <&3 >/dev/null 2>&1 &
            exec 3<&- "$1/postgres" -D "$2/data" $3 >"$2/log" 2>&1
        "#;
        let watchdog = command(run_as, Path::new("/bin/sh"), &dir)
            .args(["-c", script, "watchdog"])
            .arg(&bin)
            .arg(&dir)
            .arg(server_options(&dir, port))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        Ok(Cluster {
            port,
            password,
            dir,
            bin,
            run_as,
            private: false,
            watchdog: Mutex::new(Some(watchdog)),
        })
    }
}

/// The options the test clusters' servers run with: the unix socket in the cluster's
/// directory, TCP on 127.0.0.1 only at `port`, no waiting for the disk, room for many tests'
/// connections, TLS with the certificate [`initialise`] wrote. (The directory is in the temp
/// dir, whose path has no spaces.)
fn server_options(dir: &Path, port: u16) -> String {
    format!(
        "-k {dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=300 -c ssl=on \
         -c ssl_cert_file={dir}/{PKI_NAME}-cert.pem -c ssl_key_file={dir}/{PKI_NAME}-key.pem",
        dir = dir.display()
    )
}

/// The name of the test cluster's certificates in its directory ([`crate::pki::issue`]).
const PKI_NAME: &str = "postgres";

/// A cluster's directory with its data directory made by `initdb`, the admin's password in
/// `pw`, both owned by the user the server runs as.
struct Initialised {
    bin: PathBuf,
    dir: PathBuf,
    password: String,
    run_as: Option<&'static str>,
}

fn initialise() -> Result<Initialised, String> {
    let bin = bindir().ok_or_else(|| {
        "PostgreSQL is not installed (no initdb and postgres from `pg_config --bindir` or \
         in /usr/lib/postgresql/*/bin); the store's tests run against a real PostgreSQL: \
         run ./scripts/setup.sh --with-browser"
            .to_owned()
    })?;
    crate::watchdog::sweep_leftovers(DIR_PREFIX);
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        crate::watchdog::random_hex(4)?
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let password = crate::watchdog::random_hex(16)?;
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, format!("{password}\n")).map_err(|e| format!("pwfile: {e}"))?;
    let pki = crate::pki::issue(&dir, PKI_NAME)?;
    // PostgreSQL reads a key file only if no one else may.
    std::fs::set_permissions(
        &pki.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|e| format!("chmod {}: {e}", pki.key.display()))?;
    // PostgreSQL refuses to run as root: as root, the cluster belongs to `nobody`.
    let run_as = is_root().then_some("nobody");
    if let Some(user) = run_as {
        let (uid, gid) = ids_of(user)?;
        for p in [&dir, &pwfile, &pki.ca, &pki.cert, &pki.key] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to {user}: {e}", p.display()))?;
        }
    }
    let data = dir.join("data");
    let out = command(run_as, &bin.join("initdb"), &dir)
        .arg("-D")
        .arg(&data)
        .args(["-U", ADMIN, "-E", "UTF8", "--no-sync", "--no-instructions"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Initialised {
        bin,
        dir,
        password,
        run_as,
    })
}

impl Drop for Cluster {
    /// Stops the server: closing the watchdog's stdin makes it kill the server and clean up.
    fn drop(&mut self) {
        crate::watchdog::end(&self.watchdog);
    }
}

/// The temp dir's clusters are named `<DIR_PREFIX><pid of the test process>-<random>`.
const DIR_PREFIX: &str = "klausur-pg-";

/// `program`, run as `user` if given (through `runuser`), in `dir`.
fn command(user: Option<&str>, program: &Path, dir: &Path) -> Command {
    let mut c = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    c.current_dir(dir);
    c
}

/// The directory with PostgreSQL's server binaries, if installed.
/// A client program of the installed PostgreSQL (`pg_dump`, `pg_restore`), from the same
/// directory as the server the tests start. Panics (fails the test) without PostgreSQL.
pub fn client_tool(name: &str) -> PathBuf {
    let dir = bindir().expect("PostgreSQL is not installed: run ./scripts/setup.sh --with-browser");
    dir.join(name)
}

fn bindir() -> Option<PathBuf> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(d) = from_pg_config.filter(|d| has_server(d)) {
        return Some(d);
    }
    // Debian: /usr/lib/postgresql/<major>/bin, the newest first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, d)| has_server(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ids_of(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let o = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| format!("id {flag} {user}: {e}"))?;
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("no user {user} to run PostgreSQL as"))
    };
    Ok((id("-u")?, id("-g")?))
}
