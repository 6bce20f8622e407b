//! Command-line interface: `serve`, `check-config`, the administration subcommands and the
//! identity CA (`identity-ca`, which needs only its key file, not the database).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use klausur_e2ee::ParticipantKind;
use klausur_proto::SecurityProfile;
use klausur_store::{InvitationKind, NewInvitation, Role};
use serde_json::json;

use crate::auth;
use crate::config::{Config, Overrides};
use crate::dialin::{DialInView, PinKey};
use crate::identity;
use crate::names::{validate_display_name, validate_title, validate_username};

#[derive(Parser, Debug)]
#[command(
    name = "klausur",
    version,
    about = "Self-hosted video and telephone conferencing"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "KLAUSUR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (keys and, with SQLite, the database); default ./klausur-data.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE) to keep the state in,
    /// instead of SQLite in the data directory (`[storage] database`, `KLAUSUR_DATABASE`).
    /// A password here is visible in the process list: prefer the config file, the
    /// environment or ~/.pgpass.
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Validate a configuration file without starting.
    CheckConfig { file: PathBuf },
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage meetings.
    #[command(subcommand)]
    Meeting(MeetingCmd),
    /// Manage personal invitations.
    #[command(subcommand)]
    Invite(InviteCmd),
    /// The identity CA that issues end-to-end encryption credentials. Needs only its key file,
    /// so it can run on another host than the server.
    #[command(subcommand)]
    IdentityCa(IdentityCaCmd),
    /// Run the telephone dial-in gateway on its own, for the server at --server (the `[dialin]`
    /// section of --config says where it listens for SIP).
    SipGateway(SipGatewayArgs),
    /// The audit trail: verify its hash chain, export it.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Write a consistent copy of the SQLite database (accounts, meetings, invitations, audit
    /// trail) to a new file, also while the server runs. Restore: copy it back as
    /// klausur.sqlite3 into the data directory with the server stopped. The keys in the data
    /// directory are backed up as files. On PostgreSQL use pg_dump (docs/operations.md).
    Backup {
        /// The file to write; must not exist.
        to: PathBuf,
    },
    /// Bring the database's schema to this release (`serve` does the same at its start) and
    /// list its migrations: for an upgrade, before the new release's servers start.
    Migrate,
    /// Copy everything from the SQLite database in the data directory into the configured
    /// PostgreSQL database (--database, KLAUSUR_DATABASE or [storage] database), which must be
    /// new and empty. Stop the server first; start it on PostgreSQL afterwards.
    CopyToPostgres,
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check every record's hash and link; name each record that was changed, removed or
    /// reordered. Exits with status 1 if any was. Prints the head (SEQ:HASH) to note.
    Verify {
        /// A head noted earlier (SEQ:HASH, as this command or the export printed it): the trail
        /// must still hold that record with that hash (nothing cut off, nothing rewritten).
        #[arg(long)]
        head: Option<klausur_store::audit::Head>,
        #[arg(long)]
        json: bool,
    },
    /// Write the records as JSON Lines (oldest first), one object per record with its hashes.
    Export {
        /// Only records numbered above this (what a log shipper exported already).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Default)]
pub struct SipGatewayArgs {
    /// Base URL of the klausur server, e.g. https://konferenz.example.
    #[arg(long)]
    server: String,
    /// The file with the gateway token (the server's `[dialin] gateway_token_file` holds the
    /// same); default: `[dialin] gateway_token_file` of --config.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// SIP listen address over UDP (repeatable); replaces `[dialin] udp`.
    #[arg(long, value_name = "ADDR")]
    sip_listen: Vec<String>,
    /// Allow --server to be plain http:// on a non-loopback host (only over a protected link).
    #[arg(long)]
    danger_plain_http: bool,
    /// A PEM file of CA certificates to trust for an https:// --server besides the web roots
    /// (a certificate from an organisation's own CA); replaces `[dialin] server_ca_file`.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Serve `GET /metrics` (the gateway's calls, Prometheus text format) on this address, to
    /// a scraper with the `[metrics] token_file` token; HTTPS with `[server] tls_cert`/`tls_key`
    /// of --config, else plain HTTP.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// HTTP(S) address, default 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// UDP address for media, default <listen ip>:10000 (worker i listens on its port + i).
    #[arg(long)]
    media_listen: Option<String>,
    /// Media workers, each a thread with its own UDP port; default one per core (also
    /// `KLAUSUR_MEDIA_WORKERS`, `[media] workers`).
    #[arg(long, value_name = "N")]
    media_workers: Option<usize>,
    /// Directory of the built web client (default: web/dist).
    #[arg(long)]
    web_root: Option<PathBuf>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Public base URL for invitation links, e.g. https://konferenz.example.de.
    #[arg(long)]
    public_url: Option<String>,
    /// Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
    #[arg(long)]
    danger_plain_http: bool,
    /// Join a cluster of nodes through this Redis (`[cluster] redis_url`, `KLAUSUR_REDIS_URL`);
    /// needs PostgreSQL (`--database`) and `--node-url`.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// This node's id in the cluster (`[cluster] node_id`); default the host name.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// The URL under which browsers reach this node itself (`[cluster] node_url`).
    #[arg(long, value_name = "URL")]
    node_url: Option<String>,
    /// Use the identity CA service at this URL instead of a local CA key
    /// (`[identity] remote_url`).
    #[arg(long)]
    identity_remote_url: Option<String>,
    /// The file with the CA service's token (`[identity] remote_token_file`).
    #[arg(long)]
    identity_remote_token_file: Option<PathBuf>,
    /// Run the telephone dial-in gateway in this process, listening for SIP over UDP here
    /// (repeatable; the same as `[dialin] udp = ["ADDR"]`).
    #[arg(long, value_name = "ADDR")]
    sip_listen: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Admin,
    Staff,
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add an account. The password is read from standard input (first line).
    Add {
        username: String,
        #[arg(long)]
        display_name: String,
        #[arg(long, value_enum, default_value = "staff")]
        role: RoleArg,
        /// The user keeps this password (otherwise they must change it at first login).
        #[arg(long)]
        permanent_password: bool,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Disable {
        username: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ProfileArg {
    Strict,
    Internal,
}

#[derive(Subcommand, Debug)]
pub enum MeetingCmd {
    Create {
        title: String,
        /// User name of the organiser.
        #[arg(long)]
        organiser: String,
        #[arg(long, value_enum, default_value = "strict")]
        profile: ProfileArg,
        /// Start time, RFC 3339.
        #[arg(long)]
        starts_at: Option<DateTime<Utc>>,
        /// Give the meeting a dial-in number for telephone callers (who are accepted where the
        /// profile allows it: `internal`).
        #[arg(long)]
        dial_in: bool,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    Guest,
    Colleague,
}

#[derive(Subcommand, Debug)]
pub enum InviteCmd {
    /// Create a personal invitation and print its link (shown once), and for a meeting with a
    /// dial-in number the invitee's phone PIN (shown once).
    Create {
        meeting_id: String,
        /// Guest's name, or the colleague's user name with --kind colleague.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "guest")]
        kind: KindArg,
        /// User name of the creator (organiser or moderator); default: the organiser.
        #[arg(long)]
        by: Option<String>,
        #[arg(long, default_value_t = 24 * 14)]
        expires_in_hours: i64,
        /// Base URL for the link (default: server.public_url or http://<listen>).
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ParticipantKindArg {
    Staff,
    #[value(name = "invited_guest", alias = "invited-guest")]
    InvitedGuest,
    Guest,
    #[value(name = "phone_gateway", alias = "phone-gateway")]
    PhoneGateway,
}

impl From<ParticipantKindArg> for ParticipantKind {
    fn from(k: ParticipantKindArg) -> Self {
        match k {
            ParticipantKindArg::Staff => ParticipantKind::Staff,
            ParticipantKindArg::InvitedGuest => ParticipantKind::InvitedGuest,
            ParticipantKindArg::Guest => ParticipantKind::Guest,
            ParticipantKindArg::PhoneGateway => ParticipantKind::PhoneGateway,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum IdentityCaCmd {
    /// Create a new CA signing key (mode 0600) and print its public key.
    Init {
        #[arg(long)]
        key_file: PathBuf,
        /// Replace an existing key (every credential it issued stops being trusted).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print the CA public key (hex) that clients verify credentials against.
    PublicKey {
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Issue a signed credential for a device key and print it (base64).
    Issue {
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        user_id: String,
        #[arg(long)]
        display_name: String,
        #[arg(long, value_enum)]
        kind: ParticipantKindArg,
        /// The device's Ed25519 public key, 64 hex digits.
        #[arg(long)]
        device_key: String,
        /// Validity in minutes (1 to 1440).
        #[arg(long, default_value_t = identity::CREDENTIAL_MINUTES)]
        valid_minutes: u64,
        #[arg(long)]
        json: bool,
    },
    /// Create a random token (mode 0600) that servers present to `identity-ca serve`.
    InitToken {
        #[arg(long)]
        token_file: PathBuf,
        /// Replace an existing token (servers using the old one are refused).
        #[arg(long)]
        force: bool,
    },
    /// Run the CA as an HTTP service (`POST /issue`, `GET /public-key`) for servers configured
    /// with `[identity] remote_url`. Every issuance is logged.
    Serve {
        #[arg(long)]
        key_file: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8443.
        #[arg(long)]
        listen: String,
        /// The token servers must present (`Authorization: Bearer`); see `init-token`.
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        #[arg(long)]
        tls_key: Option<PathBuf>,
        /// Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
        #[arg(long)]
        danger_plain_http: bool,
        /// Credentials issued per minute, for all callers together; more are refused (429).
        #[arg(long, default_value_t = crate::ca_service::DEFAULT_ISSUES_PER_MINUTE)]
        max_issues_per_minute: u32,
    },
}

/// The configuration of an administration command: the config file, `--data-dir` and
/// `--database`.
fn admin_config(
    file: Option<&Path>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
) -> Result<Config, crate::config::ConfigError> {
    Config::load(file, &overrides(data_dir, database, None))
}

fn overrides(
    data_dir: Option<PathBuf>,
    database: Option<String>,
    s: Option<&ServeArgs>,
) -> Overrides {
    let mut o = Overrides {
        data_dir,
        database,
        ..Overrides::default()
    };
    if let Some(s) = s {
        o.listen = s.listen.clone();
        o.media_listen = s.media_listen.clone();
        o.media_workers = s.media_workers;
        o.web_root = s.web_root.clone();
        o.tls_cert = s.tls_cert.clone();
        o.tls_key = s.tls_key.clone();
        o.public_url = s.public_url.clone();
        o.danger_plain_http = s.danger_plain_http;
        o.identity_remote_url = s.identity_remote_url.clone();
        o.identity_remote_token_file = s.identity_remote_token_file.clone();
        o.sip_listen = s.sip_listen.clone();
        o.redis_url = s.redis_url.clone();
        o.node_id = s.node_id.clone();
        o.node_url = s.node_url.clone();
    }
    o
}

fn print(json_out: bool, value: serde_json::Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(
                cli.config.as_deref(),
                &overrides(cli.data_dir, cli.database, Some(&args)),
            )
            .context("invalid configuration")?;
            crate::server::serve(config).await
        }
        Command::CheckConfig { file } => {
            Config::check_file(&file).with_context(|| format!("{} is invalid", file.display()))?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::User(cmd) => {
            let config = admin_config(cli.config.as_deref(), cli.data_dir, cli.database)?;
            let store = crate::server::open_store(&config).await?;
            user_cmd(&store, cmd).await
        }
        Command::Meeting(cmd) => {
            let config = admin_config(cli.config.as_deref(), cli.data_dir, cli.database)?;
            let store = crate::server::open_store(&config).await?;
            meeting_cmd(&store, &config, cmd).await
        }
        Command::Invite(cmd) => {
            let config = admin_config(cli.config.as_deref(), cli.data_dir, cli.database)?;
            let store = crate::server::open_store(&config).await?;
            invite_cmd(&store, &config, cmd).await
        }
        Command::IdentityCa(cmd) => identity_ca_cmd(cmd).await,
        Command::Audit(cmd) => {
            let config = admin_config(cli.config.as_deref(), cli.data_dir, cli.database)?;
            let store = crate::server::open_store(&config).await?;
            audit_cmd(&store, cmd).await
        }
        Command::CopyToPostgres => {
            let config = admin_config(cli.config.as_deref(), cli.data_dir, cli.database)?;
            let crate::config::Database::Postgres { summary, .. } = &config.database else {
                anyhow::bail!(
                    "no PostgreSQL database to copy into: give it with --database, \
                     KLAUSUR_DATABASE or [storage] database"
                );
            };
            let path = config.data_dir.join(crate::server::SQLITE_FILE);
            if !path.is_file() {
                anyhow::bail!(
                    "no SQLite database to copy from: {} does not exist",
                    path.display()
                );
            }
            let source = klausur_store::Store::open_sqlite(&path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let target = crate::server::open_store(&config).await?;
            let copied = source
                .copy_to_postgres(&target)
                .await
                .with_context(|| format!("nothing copied into the PostgreSQL {summary}"))?;
            for (table, rows) in &copied {
                println!("{table}: {rows} rows");
            }
            println!("copied {} into the PostgreSQL {summary}", path.display());
            Ok(())
        }
        Command::Migrate => {
            let config = admin_config(cli.config.as_deref(), cli.data_dir, cli.database)?;
            let store = crate::server::open_store(&config).await?;
            let applied = store.applied_migrations().await?;
            for (version, description) in &applied {
                println!("{version} {description}");
            }
            println!(
                "the database's schema is current: {} migrations applied",
                applied.len()
            );
            Ok(())
        }
        Command::Backup { to } => {
            let config = admin_config(cli.config.as_deref(), cli.data_dir, cli.database)?;
            if to.exists() {
                anyhow::bail!(
                    "{} exists already: a backup never overwrites a file",
                    to.display()
                );
            }
            let store = crate::server::open_store(&config).await?;
            store
                .backup_sqlite(&to)
                .await
                .with_context(|| format!("cannot write the backup {}", to.display()))?;
            println!("backup written to {}", to.display());
            Ok(())
        }
        Command::SipGateway(args) => {
            let o = Overrides {
                data_dir: cli.data_dir,
                sip_listen: args.sip_listen,
                danger_plain_http: args.danger_plain_http,
                ..Overrides::default()
            };
            let config =
                Config::load(cli.config.as_deref(), &o).context("invalid configuration")?;
            let setup = crate::dialin::sip_gateway::remote_setup(
                &config,
                &args.server,
                args.token_file,
                args.ca_file,
            )?;
            let metrics = match args.metrics_listen {
                Some(addr) => Some(crate::server::serve_gateway_metrics(&config, addr)?),
                None => None,
            };
            crate::dialin::sip_gateway::run_remote(setup, crate::server::wait_for_signal(), metrics)
                .await
        }
    }
}

async fn identity_ca_cmd(cmd: IdentityCaCmd) -> anyhow::Result<()> {
    match cmd {
        IdentityCaCmd::Init {
            key_file,
            force,
            json,
        } => {
            let ca = identity::create_key_file(&key_file, force)?;
            let pk = identity::public_key_hex(&ca);
            print(
                json,
                json!({"public_key": pk, "key_file": key_file.display().to_string()}),
                pk.clone(),
            );
        }
        IdentityCaCmd::PublicKey { key_file, json } => {
            let pk = identity::public_key_hex(&identity::load_key_file(&key_file)?);
            print(json, json!({"public_key": pk}), pk.clone());
        }
        IdentityCaCmd::Issue {
            key_file,
            user_id,
            display_name,
            kind,
            device_key,
            valid_minutes,
            json,
        } => {
            identity::validate_user_id(&user_id).map_err(anyhow::Error::msg)?;
            let display_name = validate_display_name(&display_name).map_err(anyhow::Error::msg)?;
            let device_key = identity::parse_device_key(&device_key).map_err(anyhow::Error::msg)?;
            if !(1..=identity::MAX_CREDENTIAL_MINUTES).contains(&valid_minutes) {
                bail!(
                    "--valid-minutes must be between 1 and {}",
                    identity::MAX_CREDENTIAL_MINUTES
                );
            }
            let ca = identity::load_key_file(&key_file)?;
            let kind = ParticipantKind::from(kind);
            let issued = identity::issue(
                &ca,
                &user_id,
                &display_name,
                kind,
                &device_key,
                valid_minutes,
            )?;
            print(
                json,
                json!({
                    "credential": issued.base64,
                    "ca_public_key": identity::public_key_hex(&ca),
                    "user_id": user_id,
                    "display_name": display_name,
                    "kind": kind,
                    "not_before_ms": issued.credential.credential.not_before * 1000,
                    "not_after_ms": issued.not_after_ms,
                }),
                issued.base64.clone(),
            );
        }
        IdentityCaCmd::InitToken { token_file, force } => {
            crate::identity::ca_protocol::create_token_file(&token_file, force)?;
            println!("wrote a new token to {}", token_file.display());
        }
        IdentityCaCmd::Serve {
            key_file,
            listen,
            token_file,
            tls_cert,
            tls_key,
            danger_plain_http,
            max_issues_per_minute,
        } => {
            let config = crate::ca_service::ServiceConfig::new(
                key_file,
                &listen,
                token_file,
                tls_cert,
                tls_key,
                danger_plain_http,
                max_issues_per_minute,
            )?;
            crate::ca_service::serve(config).await?;
        }
    }
    Ok(())
}

async fn audit_cmd(store: &klausur_store::Store, cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify { head, json } => {
            let verdict = store.verify_audit(head).await?;
            let head = verdict
                .head
                .as_ref()
                .map(|h| format!("{}:{}", h.seq, h.hash));
            let problems: Vec<String> = verdict.problems.iter().map(ToString::to_string).collect();
            if json {
                println!(
                    "{}",
                    json!({"intact": verdict.is_intact(), "records": verdict.records,
                           "head": head, "problems": problems})
                );
            } else {
                for p in &problems {
                    println!("{p}");
                }
                println!(
                    "{}: {} records checked; head {}",
                    if verdict.is_intact() {
                        "audit trail intact"
                    } else {
                        "audit trail NOT intact"
                    },
                    verdict.records,
                    head.as_deref().unwrap_or("(empty)")
                );
            }
            if !verdict.is_intact() {
                std::process::exit(1);
            }
        }
        AuditCmd::Export { after, output } => {
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut after = after;
            let mut written = 0u64;
            loop {
                let page = store
                    .audit_after(after, klausur_store::AUDIT_PAGE_MAX)
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for r in &page {
                    serde_json::to_writer(&mut out, r)?;
                    out.write_all(b"\n")?;
                    written += 1;
                }
            }
            out.flush()?;
            if let Some(path) = output {
                eprintln!("exported {written} audit records to {}", path.display());
            }
        }
    }
    Ok(())
}

/// The operator at the command line, as an audit actor.
fn operator() -> klausur_store::AuditActor {
    klausur_store::AuditActor::new("operator", None, Some("command line".into()))
}

async fn user_cmd(store: &klausur_store::Store, cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add {
            username,
            display_name,
            role,
            permanent_password,
            json,
        } => {
            let username = validate_username(&username).map_err(anyhow::Error::msg)?;
            let display_name = validate_display_name(&display_name).map_err(anyhow::Error::msg)?;
            let mut password = String::new();
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            let password =
                zeroize::Zeroizing::new(password.lines().next().unwrap_or("").to_string());
            if password.chars().count() < auth::MIN_PASSWORD_CHARS {
                bail!(
                    "the password (read from standard input) must have at least {} characters",
                    auth::MIN_PASSWORD_CHARS
                );
            }
            let hash = auth::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Staff => Role::Staff,
            };
            let u = store
                .create_user(&username, &display_name, &hash, role, !permanent_password)
                .await?;
            let audit = crate::audit::Audit::new(store.clone());
            audit
                .record(
                    crate::audit::Entry::new(crate::audit::kind::USER_CREATED, operator())
                        .details(json!({"target": crate::audit::user_target(&u), "role": u.role})),
                )
                .await;
            print(
                json,
                json!({"id": u.id, "username": u.username, "display_name": u.display_name, "role": u.role}),
                format!("added user {} (id {})", u.username, u.id),
            );
        }
        UserCmd::List { json } => {
            let users = store.list_users().await?;
            let v: Vec<_> = users
                .iter()
                .map(|u| json!({"id": u.id, "username": u.username, "display_name": u.display_name, "role": u.role, "disabled": u.disabled}))
                .collect();
            let text = users
                .iter()
                .map(|u| {
                    format!(
                        "{:>4}  {:<20} {:<6} {}{}",
                        u.id,
                        u.username,
                        format!("{:?}", u.role).to_lowercase(),
                        u.display_name,
                        if u.disabled { "  (disabled)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(json, json!(v), text);
        }
        UserCmd::Disable { username, json } => {
            let u = store
                .user_by_username(&username.to_lowercase())
                .await?
                .with_context(|| format!("no user {username:?}"))?;
            store.set_user_disabled(u.id, true).await?;
            store.delete_sessions_of_user(u.id).await?;
            crate::audit::Audit::new(store.clone())
                .record(
                    crate::audit::Entry::new(crate::audit::kind::USER_DISABLED, operator())
                        .details(json!({"target": crate::audit::user_target(&u)})),
                )
                .await;
            print(
                json,
                json!({"id": u.id, "username": u.username, "disabled": true}),
                format!("disabled user {}", u.username),
            );
        }
    }
    Ok(())
}

async fn meeting_cmd(
    store: &klausur_store::Store,
    config: &Config,
    cmd: MeetingCmd,
) -> anyhow::Result<()> {
    let dial_in = |m: &klausur_store::Meeting| DialInView::of(m, &config.dialin);
    match cmd {
        MeetingCmd::Create {
            title,
            organiser,
            profile,
            starts_at,
            dial_in: with_dial_in,
            json,
        } => {
            let org = store
                .user_by_username(&organiser.to_lowercase())
                .await?
                .with_context(|| format!("no user {organiser:?}"))?;
            let title = validate_title(&title).map_err(anyhow::Error::msg)?;
            let title = title.as_str();
            let profile = match profile {
                ProfileArg::Strict => SecurityProfile::Strict,
                ProfileArg::Internal => SecurityProfile::Internal,
            };
            let id = auth::new_meeting_id();
            let m = if with_dial_in {
                crate::dialin::create_meeting_with_dial_in(
                    store, &id, title, starts_at, org.id, profile,
                )
                .await?
            } else {
                store
                    .create_meeting(&id, title, starts_at, org.id, profile)
                    .await?
            };
            crate::audit::Audit::new(store.clone())
                .record(
                    crate::audit::Entry::new(crate::audit::kind::MEETING_CREATED, operator())
                        .meeting(&m.id)
                        .details(json!({
                            "title": m.title,
                            "profile": m.profile,
                            "dial_in": m.dial_in_number.is_some(),
                            "organiser": crate::audit::user_target(&org),
                        })),
                )
                .await;
            let view = dial_in(&m);
            let text = match &view {
                Some(d) => format!(
                    "created meeting {} ({}), dial-in number {}{}",
                    m.id,
                    m.title,
                    d.meeting_number,
                    if d.allowed {
                        ""
                    } else {
                        " (the strict profile accepts no calls)"
                    }
                ),
                None => format!("created meeting {} ({})", m.id, m.title),
            };
            print(
                json,
                json!({"id": m.id, "title": m.title, "organiser": org.username, "profile": m.profile, "starts_at": m.starts_at, "dial_in": view}),
                text,
            );
        }
        MeetingCmd::List { json } => {
            let ms = store.list_all_meetings().await?;
            let v: Vec<_> = ms
                .iter()
                .map(|m| json!({"id": m.id, "title": m.title, "organiser_id": m.organiser_id, "profile": m.profile, "starts_at": m.starts_at, "ended": m.ended_at.is_some(), "dial_in": dial_in(m)}))
                .collect();
            let text = ms
                .iter()
                .map(|m| {
                    format!(
                        "{}  {}{}",
                        m.id,
                        m.title,
                        if m.ended_at.is_some() {
                            "  (ended)"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(json, json!(v), text);
        }
    }
    Ok(())
}

async fn invite_cmd(
    store: &klausur_store::Store,
    config: &Config,
    cmd: InviteCmd,
) -> anyhow::Result<()> {
    let InviteCmd::Create {
        meeting_id,
        name,
        kind,
        by,
        expires_in_hours,
        base_url,
        json,
    } = cmd;
    let m = store
        .meeting(&meeting_id)
        .await?
        .with_context(|| format!("no meeting {meeting_id:?}"))?;
    let creator = match by {
        Some(u) => {
            let user = store
                .user_by_username(&u.to_lowercase())
                .await?
                .with_context(|| format!("no user {u:?}"))?;
            if !store.is_moderator(&m.id, user.id).await? && user.role != Role::Admin {
                bail!("{u} is neither organiser nor moderator of this meeting");
            }
            user.id
        }
        None => m.organiser_id,
    };
    if !(1..=24 * 365).contains(&expires_in_hours) {
        bail!("--expires-in-hours must be between 1 and 8760");
    }
    let (kind, name, user_id) = match kind {
        KindArg::Guest => (
            InvitationKind::Guest,
            validate_display_name(&name).map_err(anyhow::Error::msg)?,
            None,
        ),
        KindArg::Colleague => {
            let u = store
                .user_by_username(&name.to_lowercase())
                .await?
                .with_context(|| format!("no user {name:?}"))?;
            (InvitationKind::Colleague, u.display_name, Some(u.id))
        }
    };
    let token = auth::new_token();
    let new = NewInvitation {
        meeting_id: m.id.clone(),
        token_hash: auth::token_hash(&token),
        name,
        kind,
        user_id,
        created_by: creator,
        expires_at: Utc::now() + Duration::hours(expires_in_hours),
        phone_pin_hash: None,
    };
    let (inv, phone_pin) = if m.dial_in_number.is_some() {
        // The same key file the server uses (created here if the server never ran).
        let (key, _) = PinKey::load_or_create(&PinKey::path_in(&config.data_dir))?;
        crate::dialin::create_invitation(store, &key, &m, new).await?
    } else {
        (store.create_invitation(new).await?, None)
    };
    crate::audit::Audit::new(store.clone())
        .record(crate::audit::invitation_created(
            operator(),
            &inv,
            phone_pin.is_some(),
        ))
        .await;
    let base = base_url
        .or_else(|| config.public_url.clone())
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let link = format!("{base}/j/{}", token.as_str());
    let text = match (&phone_pin, &m.dial_in_number) {
        (Some(pin), Some(number)) => format!(
            "invitation for {}: {link}\nphone: meeting number {number}, PIN {}",
            inv.name,
            pin.as_str()
        ),
        _ => format!("invitation for {}: {link}", inv.name),
    };
    print(
        json,
        json!({"id": inv.id, "meeting_id": m.id, "name": inv.name, "kind": inv.kind, "expires_at": inv.expires_at, "token": token.as_str(), "link": link, "phone_pin": phone_pin.as_deref().map(String::as_str)}),
        text,
    );
    Ok(())
}
