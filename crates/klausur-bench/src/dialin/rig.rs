//! The processes of the dial-in scenario: a `klausur serve` without a gateway of its own and a
//! `klausur sip-gateway` process beside it (so the gateway's CPU time is read from /proc alone),
//! both on loopback with a gateway token file, each pinned with taskset; and the meetings with
//! dial-in numbers, the members' invitations and the callers' PINs, made with the admin CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::server::{
    add_organiser, admin_with, free_tcp_port, free_udp_port, organiser, pinned_rt_command,
    server_log_filter, spawn_logged, wait_for_log,
};

/// What users dial (the meetings need a number to show; nobody dials it here).
const PHONE_NUMBER: &str = "+49 30 9999 0000";

/// One meeting with dial-in, as the CLI made it.
#[derive(Debug, Clone)]
pub struct MeetingSetup {
    pub id: String,
    /// The dial-in number (8 digits).
    pub number: String,
    /// The members' invitation tokens.
    pub member_tokens: Vec<String>,
    /// The callers' phone PINs.
    pub caller_pins: Vec<String>,
}

/// The running server and gateway; both are killed and their directory removed on drop.
pub struct Rig {
    server: Child,
    pub server_pid: u32,
    gateway: Child,
    pub gateway_pid: u32,
    /// The server's base URL.
    pub base_url: String,
    /// The gateway's SIP address.
    pub sip: SocketAddr,
    pub meetings: Vec<MeetingSetup>,
    dir: tempfile::TempDir,
}

/// A free block of `n` ports from an even free port (the gateway takes even RTP ports).
fn rtp_range(n: usize) -> anyhow::Result<(u16, u16)> {
    for _ in 0..100 {
        let base = free_udp_port()? & !1;
        if (20_000..50_000).contains(&base) {
            return Ok((base, base.saturating_add(n as u16)));
        }
    }
    bail!("no free RTP port range found")
}

fn member_name(meeting: usize, member: usize) -> String {
    format!("Mitglied {meeting}.{member}")
}

/// The display name of caller `caller` of meeting `meeting` (its invitation's name).
pub fn caller_name(meeting: usize, caller: usize) -> String {
    format!("Anrufer {meeting}.{caller}")
}

impl Rig {
    /// Prepares the data directory and meetings (`plan[m]` callers in meeting m, `members`
    /// members each), then starts the server on `server_cpu` and the gateway on `gateway_cpu`,
    /// both under real-time scheduling at `realtime` when given.
    pub fn start(
        bin: &Path,
        plan: &[usize],
        members: usize,
        server_cpu: Option<usize>,
        gateway_cpu: Option<usize>,
        realtime: Option<u8>,
    ) -> anyhow::Result<Rig> {
        if !bin.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p klausur-server` or pass --server-bin",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("klausur-bench-dialin-")
            .tempdir()?;
        let data = dir.path().join("data");
        let token = dir.path().join("gateway.token");
        let out = Command::new(bin)
            .args(["identity-ca", "init-token", "--token-file"])
            .arg(&token)
            .env_remove("KLAUSUR_CONFIG")
            .env("KLAUSUR_LOG", "warn")
            .output()
            .context("klausur identity-ca init-token")?;
        if !out.status.success() {
            bail!(
                "klausur identity-ca init-token failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let server_config = dir.path().join("server.toml");
        std::fs::write(
            &server_config,
            format!(
                "[dialin]\nphone_number = {PHONE_NUMBER:?}\ngateway_token_file = {:?}\n",
                path_str(&token)?
            ),
        )?;
        add_organiser(bin, &data)?;
        let calls: usize = plan.iter().sum();
        let mut meetings = Vec::with_capacity(plan.len());
        for (m, &callers) in plan.iter().enumerate() {
            meetings.push(create_meeting(
                bin,
                &data,
                &server_config,
                m,
                members,
                callers,
            )?);
        }

        let http: SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
        let media: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let server_log = dir.path().join("server.log");
        let mut cmd = pinned_rt_command(bin, server_cpu, realtime);
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&server_config)
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
            .env("KLAUSUR_LOG", server_log_filter());
        let mut server = spawn_logged(&mut cmd, &server_log)?;
        let server_pid = server.id();
        if let Err(e) = wait_for_log(
            &mut server,
            &server_log,
            "listening on",
            "klausur serve",
            Duration::from_secs(15),
        ) {
            let _ = server.kill();
            let _ = server.wait();
            return Err(e);
        }

        // The gateway: its own configuration (limits sized for the run), the same token.
        let (lo, hi) = rtp_range(2 * calls + 64)?;
        let gateway_config = dir.path().join("gateway.toml");
        std::fs::write(
            &gateway_config,
            format!(
                "[dialin]\nrtp_address = \"127.0.0.1\"\nrtp_ports = \"{lo}-{hi}\"\n\
                 max_calls = {}\ninvites_per_source_per_minute = 10000\nlanguage = \"de\"\n\
                 gateway_token_file = {:?}\n",
                calls + 16,
                path_str(&token)?
            ),
        )?;
        let sip: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let base_url = format!("http://{http}");
        let gateway_log = dir.path().join("gateway.log");
        let mut cmd = pinned_rt_command(bin, gateway_cpu, realtime);
        cmd.arg("--data-dir")
            .arg(dir.path().join("gateway-data"))
            .arg("--config")
            .arg(&gateway_config)
            .arg("sip-gateway")
            .arg("--server")
            .arg(&base_url)
            .arg("--token-file")
            .arg(&token)
            .arg("--sip-listen")
            .arg(sip.to_string())
            .env_remove("KLAUSUR_CONFIG")
            .env("KLAUSUR_LOG", gateway_log_filter());
        let gateway = match spawn_logged(&mut cmd, &gateway_log) {
            Ok(g) => g,
            Err(e) => {
                let _ = server.kill();
                let _ = server.wait();
                return Err(e);
            }
        };
        let gateway_pid = gateway.id();
        let rig = Rig {
            server,
            server_pid,
            gateway,
            gateway_pid,
            base_url,
            sip,
            meetings,
            dir,
        };
        // On failure the rig's drop stops both.
        let mut rig = rig;
        wait_for_log(
            &mut rig.gateway,
            &gateway_log,
            "SIP gateway for",
            "klausur sip-gateway",
            Duration::from_secs(15),
        )?;
        Ok(rig)
    }

    fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Warnings and errors the server and the gateway logged (their start lines, which begin
    /// with `klausur: `, are not problems).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (who, file) in [("server", "server.log"), ("gateway", "gateway.log")] {
            for l in self.log_of(file).lines() {
                if !l.starts_with("klausur: ") && !l.trim().is_empty() {
                    out.push(format!("{who}: {l}"));
                }
            }
        }
        out
    }

    /// Where the run's files are (logs), for `perf` and diagnosis.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// The gateway's log filter: warnings and errors; KLAUSUR_BENCH_GATEWAY_LOG overrides it for
/// diagnosis (its lines then count as problems).
fn gateway_log_filter() -> String {
    std::env::var("KLAUSUR_BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn,str0m=error".into())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn create_meeting(
    bin: &Path,
    data: &Path,
    config: &Path,
    m: usize,
    members: usize,
    callers: usize,
) -> anyhow::Result<MeetingSetup> {
    let title = format!("Dial-in {m}");
    let meeting = admin_with(
        bin,
        data,
        Some(config),
        &[
            "meeting",
            "create",
            &title,
            "--organiser",
            organiser(),
            "--profile",
            "internal",
            "--dial-in",
        ],
        "",
    )?;
    let id = meeting["id"].as_str().context("meeting id")?.to_string();
    let number = meeting["dial_in"]["meeting_number"]
        .as_str()
        .context("the meeting has no dial-in number")?
        .to_string();
    let invite = |name: String| {
        admin_with(
            bin,
            data,
            Some(config),
            &["invite", "create", &id, "--name", &name],
            "",
        )
    };
    let mut member_tokens = Vec::with_capacity(members);
    for j in 0..members {
        let inv = invite(member_name(m, j))?;
        member_tokens.push(
            inv["token"]
                .as_str()
                .context("invitation token")?
                .to_string(),
        );
    }
    let mut caller_pins = Vec::with_capacity(callers);
    for c in 0..callers {
        let inv = invite(caller_name(m, c))?;
        caller_pins.push(
            inv["phone_pin"]
                .as_str()
                .context("the invitation has no phone PIN")?
                .to_string(),
        );
    }
    Ok(MeetingSetup {
        id,
        number,
        member_tokens,
        caller_pins,
    })
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The gateway first: its calls end while the server is still there.
        for child in [&mut self.gateway, &mut self.server] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
