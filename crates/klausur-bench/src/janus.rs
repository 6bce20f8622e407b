//! Janus 1.1.2 (Debian's `janus`, VideoRoom plugin) beside klausur, with the same clients.
//!
//! Janus skips loopback interfaces (shared/recipes/janus.md), so each trial creates two network
//! namespaces joined by one veth pair with addresses of their own (10.213.0.1/30 for Janus,
//! 10.213.0.2/30 for the clients; no route anywhere else). Janus runs in the first, pinned like
//! klausur; the load generator stays in its own process and creates its sockets (UDP for media,
//! TCP for the HTTP transport) from a thread that entered the second namespace, so the simulated
//! participants, the timing and the accounting are the very ones of the klausur side.
//! [`JanusServer`] kills Janus and deletes both namespaces when dropped (also on failure and,
//! through `main`'s signal handling, on Ctrl-C).
//!
//! Each participant uses one Janus session with two handles: a publisher (`join` +
//! `configure` with a sendonly offer of what it publishes from its sending str0m peer) and one
//! multistream subscriber (`join` with `streams` of every other feed, `subscribe` for feeds
//! that publish later) whose offers Janus makes and a second, receive-only str0m peer answers
//! (str0m always bundles: max-bundle as the recipe asks). A participant that publishes nothing
//! (a webinar viewer, a town hall listener) joins as a publisher without ever configuring: it
//! has no publisher PeerConnection and no feed, but gets the room's events about publishers,
//! which is how VideoRoom clients learn whom to subscribe to. A participant that leaves early
//! (churn) stops both peers (their sockets close) and destroys its session, which makes Janus
//! leave the room, hang up both PeerConnections and tell the others.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::client::{Peer, PeerOptions, PeerReport, Role, Timing};
use crate::stats::Presence;

/// Janus's address (its namespace only).
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// The load generator's address (its namespace only).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const HTTP_PORT: u16 = 8088;
const ROOM: u64 = 4242;
const PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/janus/plugins/libjanus_videoroom.so";
const TRANSPORTS: &str = "/usr/lib/x86_64-linux-gnu/janus/transports/libjanus_http.so";
const NS_PREFIX: &str = "kbench-";

static TRIAL: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes namespaces of earlier runs of this tool whose process is gone (killed with SIGKILL).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

// ---- sockets inside the client namespace ------------------------------------------------------

enum SocketRequest {
    Udp(
        SocketAddr,
        oneshot::Sender<std::io::Result<std::net::UdpSocket>>,
    ),
    Tcp(
        SocketAddr,
        oneshot::Sender<std::io::Result<std::net::TcpStream>>,
    ),
}

/// Creates sockets inside a network namespace: a thread that entered it (setns affects only
/// the calling thread) opens them; a socket stays in the namespace it was created in.
#[derive(Clone)]
pub struct NetnsSockets {
    tx: std::sync::mpsc::Sender<SocketRequest>,
}

impl NetnsSockets {
    fn spawn(ns: &str) -> anyhow::Result<NetnsSockets> {
        let file = File::open(format!("/run/netns/{ns}"))
            .with_context(|| format!("cannot open namespace {ns}"))?;
        let (tx, rx) = std::sync::mpsc::channel::<SocketRequest>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn(move || {
                let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                drop(file);
                if !ok {
                    return;
                }
                for req in rx {
                    match req {
                        SocketRequest::Udp(addr, reply) => {
                            let _ = reply.send(std::net::UdpSocket::bind(addr));
                        }
                        SocketRequest::Tcp(addr, reply) => {
                            let _ = reply.send(std::net::TcpStream::connect_timeout(
                                &addr,
                                Duration::from_secs(5),
                            ));
                        }
                    }
                }
            })?;
        ready_rx
            .recv()
            .context("namespace thread ended")?
            .with_context(|| format!("cannot enter namespace {ns}"))?;
        Ok(NetnsSockets { tx })
    }

    /// A UDP socket bound to `addr` inside the namespace.
    pub async fn udp(&self, addr: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(SocketRequest::Udp(addr, tx))
            .ok()
            .context("namespace thread gone")?;
        let s = rx.await.context("namespace thread gone")??;
        s.set_nonblocking(true)?;
        Ok(tokio::net::UdpSocket::from_std(s)?)
    }

    /// A TCP connection to `addr` made inside the namespace.
    pub async fn tcp(&self, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(SocketRequest::Tcp(addr, tx))
            .ok()
            .context("namespace thread gone")?;
        let s = rx
            .await
            .context("namespace thread gone")?
            .with_context(|| format!("cannot connect {addr}"))?;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        Ok(tokio::net::TcpStream::from_std(s)?)
    }
}

// ---- the server ---------------------------------------------------------------------------------

/// A running Janus in its own namespace; killed and the namespaces deleted on drop.
pub struct JanusServer {
    sockets: Option<NetnsSockets>,
    child: Option<Child>,
    pub pid: u32,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

fn config_files(dir: &Path, veth: &str) -> anyhow::Result<()> {
    let d = dir.display();
    for sub in ["plugins", "transports", "none"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::os::unix::fs::symlink(PLUGINS, dir.join("plugins/libjanus_videoroom.so"))?;
    std::os::unix::fs::symlink(TRANSPORTS, dir.join("transports/libjanus_http.so"))?;
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            r#"general: {{
	configs_folder = "{d}"
	plugins_folder = "{d}/plugins"
	transports_folder = "{d}/transports"
	events_folder = "{d}/none"
	loggers_folder = "{d}/none"
	debug_level = 4
	interface = "{SERVER_ADDR}"
	session_timeout = 120
	server_name = "klausur-bench"
}}
certificates: {{
}}
media: {{
	rtp_port_range = "20000-40000"
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "{veth}"
	ignore_mdns = true
	full_trickle = false
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
"#
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            r#"general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	port = {HTTP_PORT}
	ip = "{SERVER_ADDR}"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
cors: {{
}}
"#
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    Ok(())
}

impl JanusServer {
    /// Creates the namespaces and the veth pair, writes the configuration and starts Janus in
    /// its namespace, pinned to `cpu` when given. Blocks until the HTTP transport is up.
    pub fn start(cpu: Option<usize>) -> anyhow::Result<JanusServer> {
        let version = Command::new("janus")
            .arg("--version")
            .output()
            .context("`janus` not found: apt-get install -y janus (Debian's janus 1.1.2)")?;
        // `janus --version` exits with 1 after printing the version.
        if !String::from_utf8_lossy(&version.stdout).contains("Janus version") {
            bail!("`janus --version` printed no version");
        }
        remove_stale_namespaces();
        let pid = std::process::id();
        let trial = TRIAL.fetch_add(1, Ordering::Relaxed);
        let ns_server = format!("{NS_PREFIX}{pid}-{trial}-s");
        let ns_client = format!("{NS_PREFIX}{pid}-{trial}-c");
        // Interface names: at most 15 characters.
        let veth_server = format!("kb{pid}s{}", trial % 100);
        let veth_client = format!("kb{pid}c{}", trial % 100);
        let dir = tempfile::Builder::new()
            .prefix("klausur-bench-janus-")
            .tempdir()?;
        let mut server = JanusServer {
            sockets: None,
            child: None,
            pid: 0,
            namespaces: Vec::new(),
            dir,
        };
        for ns in [&ns_server, &ns_client] {
            ip(&["netns", "add", ns])?;
            server.namespaces.push(ns.clone());
        }
        ip(&[
            "link",
            "add",
            &veth_server,
            "type",
            "veth",
            "peer",
            "name",
            &veth_client,
        ])?;
        let moved = ip(&["link", "set", &veth_server, "netns", &ns_server])
            .and_then(|()| ip(&["link", "set", &veth_client, "netns", &ns_client]));
        if let Err(e) = moved {
            let _ = ip(&["link", "del", &veth_server]);
            return Err(e);
        }
        for (ns, dev, addr) in [
            (&ns_server, &veth_server, SERVER_ADDR),
            (&ns_client, &veth_client, CLIENT_ADDR),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        config_files(server.dir.path(), &veth_server)?;
        let log_path = server.dir.path().join("janus.log");
        let log = File::create(&log_path)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns_server]);
        if let Some(cpu) = cpu {
            cmd.arg("taskset").arg("-c").arg(cpu.to_string());
        }
        // `ip netns exec` and `taskset` exec (no fork): the child's PID is Janus's.
        cmd.arg("janus")
            .arg("-F")
            .arg(server.dir.path())
            .arg("--disable-colors")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("cannot start janus")?;
        server.pid = child.id();
        server.child = Some(child);
        server.sockets = Some(NetnsSockets::spawn(&ns_client)?);
        server.wait_ready(&log_path)?;
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", server.pid)).unwrap_or_default();
        if comm.trim() != "janus" {
            bail!("process {} is {:?}, not janus", server.pid, comm.trim());
        }
        Ok(server)
    }

    fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "janus exited ({status}): {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("HTTP webserver started") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("janus did not start within 15 s")
    }

    pub fn sockets(&self) -> anyhow::Result<NetnsSockets> {
        self.sockets.clone().context("no namespace sockets")
    }

    /// Janus's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("janus.log")).unwrap_or_default()
    }

    /// Problems in the log: error lines (warnings are mostly about the lab setup).
    pub fn problems(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("[ERR]"))
            .map(str::to_string)
            .collect()
    }

    /// Creates the VideoRoom room the participants join.
    pub async fn create_room(&self, participants: usize) -> anyhow::Result<()> {
        let mut api = Api::new(self.sockets()?).await?;
        let h = api.attach().await?;
        let r = api
            .message(
                h,
                json!({
                    "request": "create",
                    "room": ROOM,
                    "description": "klausur-bench",
                    "publishers": participants + 4,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "notify_joining": false,
                    "permanent": false,
                }),
                None,
            )
            .await?;
        if r["plugindata"]["data"]["videoroom"] != "created" {
            bail!("room not created: {r}");
        }
        let _ = api.destroy().await;
        Ok(())
    }
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        // Ends the namespace thread (its sockets are the participants' and close with them).
        self.sockets = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("klausur-bench: warning: {e:#}");
            }
        }
    }
}

// ---- the Janus API over HTTP (long poll) ----------------------------------------------------------

fn decode_chunked(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = std::str::from_utf8(&body[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or(&[]);
    }
}

/// Parses a whole HTTP/1.1 response (read until the server closed) into its JSON body.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<Value> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(body));
    }
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&body).context("Janus answered no JSON")
}

/// One Janus session over the HTTP transport.
struct Api {
    sockets: NetnsSockets,
    session: u64,
    next_tx: u64,
}

impl Api {
    async fn new(sockets: NetnsSockets) -> anyhow::Result<Api> {
        let mut api = Api {
            sockets,
            session: 0,
            next_tx: 0,
        };
        let r = api
            .post("/janus".into(), json!({"janus": "create"}))
            .await?;
        api.session = r["data"]["id"].as_u64().context("no session id")?;
        Ok(api)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let addr = SocketAddr::V4(SocketAddrV4::new(SERVER_ADDR, HTTP_PORT));
        let mut stream = self.sockets.tcp(addr).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::with_capacity(4096);
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw).with_context(|| format!("{method} {path}"))
    }

    async fn post(&mut self, path: String, mut body: Value) -> anyhow::Result<Value> {
        self.next_tx += 1;
        body["transaction"] = json!(format!("t{}", self.next_tx));
        let r = self.request("POST", &path, Some(&body)).await?;
        if r["janus"] == "error" {
            bail!("Janus error on {}: {}", body["janus"], r["error"]);
        }
        Ok(r)
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let body =
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "a"});
        let r = self
            .request("POST", &format!("/janus/{}", self.session), Some(&body))
            .await?;
        r["data"]["id"]
            .as_u64()
            .with_context(|| format!("attach failed: {r}"))
    }

    /// Sends a plugin message; returns Janus's immediate reply (`success` or `ack`).
    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut msg = json!({"janus": "message", "transaction": "m", "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let r = self
            .request(
                "POST",
                &format!("/janus/{}/{handle}", self.session),
                Some(&msg),
            )
            .await?;
        if r["janus"] == "error" {
            bail!("Janus error: {}", r["error"]);
        }
        Ok(r)
    }

    /// Long poll: the session's next events (at most 30 s).
    async fn events(&self) -> anyhow::Result<Vec<Value>> {
        let r = self
            .request("GET", &format!("/janus/{}?maxev=16", self.session), None)
            .await?;
        Ok(match r {
            Value::Array(v) => v,
            v => vec![v],
        })
    }

    async fn destroy(&mut self) -> anyhow::Result<()> {
        let path = format!("/janus/{}", self.session);
        self.post(path, json!({"janus": "destroy"})).await?;
        Ok(())
    }
}

// ---- one participant ------------------------------------------------------------------------------

/// What a participant needs to join the Janus room.
pub struct JoinSpec {
    pub index: usize,
    pub role: Role,
    pub timing: Timing,
    /// Leaves before the end of the run (churn).
    pub leave_at: Option<Instant>,
    pub options: PeerOptions,
    pub sockets: NetnsSockets,
}

impl JoinSpec {
    /// One of the participant's str0m peers, on its own socket in the client namespace.
    async fn peer(&self) -> anyhow::Result<Peer> {
        let any = SocketAddr::V4(SocketAddrV4::new(CLIENT_ADDR, 0));
        let socket = self.sockets.udp(any).await?;
        let mut p = Peer::with_socket(self.index as u16, self.timing, self.options, socket)?;
        p.set_leave_at(self.leave_at);
        Ok(p)
    }
}

/// How often a feed is asked for again after the subscriber handle refused a request.
const SUBSCRIBE_ATTEMPTS: u8 = 3;

/// The signaling state of one participant, driven by the session's events.
struct Session {
    api: Api,
    index: usize,
    publisher: u64,
    own_feed: u64,
    subscriber: Option<u64>,
    /// The subscriber handle's `join` went through (its first offer came).
    subscriber_joined: bool,
    /// A `join`/`subscribe` of the subscriber handle awaits its offer.
    in_flight: bool,
    /// The feeds of that request (asked for again if it is refused).
    in_flight_feeds: Vec<u64>,
    wanted: Vec<u64>,
    subscribed: HashSet<u64>,
    /// Feeds that unpublished or left: never asked for again.
    gone: HashSet<u64>,
    /// Feeds asked for again after a refusal, and how often.
    attempts: std::collections::HashMap<u64, u8>,
    backlog: VecDeque<Value>,
    errors: Vec<String>,
}

impl Session {
    fn want_publishers(&mut self, data: &Value) {
        for p in data["publishers"].as_array().into_iter().flatten() {
            if let Some(id) = p["id"].as_u64() {
                if id != self.own_feed
                    && !self.gone.contains(&id)
                    && !self.subscribed.contains(&id)
                    && !self.wanted.contains(&id)
                {
                    self.wanted.push(id);
                }
            }
        }
        // A feed that stopped publishing or left the room.
        for key in ["unpublished", "leaving"] {
            if let Some(id) = data[key].as_u64() {
                self.gone.insert(id);
                self.wanted.retain(|f| *f != id);
            }
        }
    }

    /// The subscriber handle refused a request: its feeds that are still there are asked for
    /// again, a bounded number of times.
    fn requeue_in_flight(&mut self) {
        for id in std::mem::take(&mut self.in_flight_feeds) {
            self.subscribed.remove(&id);
            let n = self.attempts.entry(id).or_insert(0);
            *n += 1;
            if *n < SUBSCRIBE_ATTEMPTS && !self.gone.contains(&id) && !self.wanted.contains(&id) {
                self.wanted.push(id);
            }
        }
    }

    /// The next event (from the backlog or a long poll), until `deadline`.
    async fn next_event(&mut self, deadline: Instant) -> anyhow::Result<Option<Value>> {
        while self.backlog.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match tokio::time::timeout(deadline - now, self.api.events()).await {
                Ok(r) => self.backlog.extend(r?),
                Err(_) => return Ok(None),
            }
        }
        Ok(self.backlog.pop_front())
    }

    /// Waits for an event of `handle` that satisfies `pred`; other events are handled.
    async fn wait_for(
        &mut self,
        handle: u64,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        offers: &mpsc::UnboundedSender<crate::client::OfferRequest>,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = self
                .next_event(deadline)
                .await?
                .with_context(|| format!("no {what} within 10 s"))?;
            if ev["sender"].as_u64() == Some(handle) && pred(&ev) {
                return Ok(ev);
            }
            let data = &ev["plugindata"]["data"];
            if ev["sender"].as_u64() == Some(handle) && data.get("error").is_some() {
                bail!("{what}: {data}");
            }
            self.handle(ev, offers).await?;
        }
    }

    /// Handles one event: new publishers, offers for the subscriber, errors.
    async fn handle(
        &mut self,
        ev: Value,
        offers: &mpsc::UnboundedSender<crate::client::OfferRequest>,
    ) -> anyhow::Result<()> {
        let sender = ev["sender"].as_u64();
        let data = &ev["plugindata"]["data"];
        match ev["janus"].as_str() {
            Some("event") => {}
            Some("hangup") | Some("detached") => {
                self.errors
                    .push(format!("participant {}: Janus {ev}", self.index));
                return Ok(());
            }
            _ => return Ok(()),
        }
        if let Some(err) = data.get("error") {
            self.errors.push(format!(
                "participant {}: VideoRoom error: {err}",
                self.index
            ));
            if sender.is_some() && sender == self.subscriber {
                self.in_flight = false;
                self.requeue_in_flight();
                if !self.subscriber_joined {
                    // A refused `join` leaves the handle out of the room: the next request
                    // joins on a new one.
                    self.subscriber = None;
                }
            }
            return Ok(());
        }
        if sender == Some(self.publisher) {
            self.want_publishers(data);
            return Ok(());
        }
        if sender.is_some() && sender == self.subscriber {
            if ev["jsep"]["type"] == "offer" {
                let sdp = ev["jsep"]["sdp"]
                    .as_str()
                    .context("offer without sdp")?
                    .to_string();
                let (tx, rx) = oneshot::channel();
                offers
                    .send((sdp, tx))
                    .ok()
                    .context("subscriber peer gone")?;
                let answer = rx.await.context("subscriber peer gone")??;
                let h = self.subscriber.context("no subscriber")?;
                self.api
                    .message(
                        h,
                        json!({"request": "start"}),
                        Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
                    )
                    .await?;
                self.subscriber_joined = true;
                self.in_flight = false;
                self.in_flight_feeds.clear();
            } else if matches!(
                data["videoroom"].as_str(),
                Some("updated") | Some("attached")
            ) {
                // An update with nothing to renegotiate.
                self.in_flight = false;
                self.in_flight_feeds.clear();
            }
        }
        Ok(())
    }

    /// Subscribes to the wanted feeds (one request at a time).
    async fn subscribe(&mut self) -> anyhow::Result<()> {
        if self.in_flight || self.wanted.is_empty() {
            return Ok(());
        }
        let feeds: Vec<u64> = std::mem::take(&mut self.wanted);
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let body = match self.subscriber {
            None => {
                let h = self.api.attach().await?;
                self.subscriber = Some(h);
                json!({"request": "join", "ptype": "subscriber", "room": ROOM, "streams": streams})
            }
            Some(_) => json!({"request": "subscribe", "streams": streams}),
        };
        let h = self.subscriber.context("no subscriber")?;
        self.api.message(h, body, None).await?;
        self.subscribed.extend(feeds.iter().copied());
        self.in_flight_feeds = feeds;
        self.in_flight = true;
        Ok(())
    }
}

/// Joins the Janus room, publishes what the role says and subscribes to everyone else; runs
/// until `timing.stop_at` (or its departure) and reports like a klausur participant (send side
/// from the publisher peer, receive side from the subscriber peer).
pub async fn participant(spec: JoinSpec) -> anyhow::Result<PeerReport> {
    let i = spec.index;
    let timing = spec.timing;
    let mut publisher = if spec.role.publishes() {
        let mut p = spec.peer().await?;
        p.set_role(spec.role);
        Some(p)
    } else {
        None
    };
    let mut subscriber = spec.peer().await?;
    let api = Api::new(spec.sockets.clone()).await?;
    let pub_handle = api.attach().await?;
    let (offer_tx, offer_rx) = mpsc::unbounded_channel();
    let mut s = Session {
        api,
        index: i,
        publisher: pub_handle,
        own_feed: 0,
        subscriber: None,
        subscriber_joined: false,
        in_flight: false,
        in_flight_feeds: Vec::new(),
        wanted: Vec::new(),
        subscribed: HashSet::new(),
        gone: HashSet::new(),
        attempts: std::collections::HashMap::new(),
        backlog: VecDeque::new(),
        errors: Vec::new(),
    };
    let joined_at = Instant::now();
    if let Some(p) = publisher.as_mut() {
        p.set_joined_at(joined_at);
    }
    subscriber.set_joined_at(joined_at);
    s.api
        .message(
            pub_handle,
            json!({"request": "join", "ptype": "publisher", "room": ROOM, "display": format!("Bench {i}")}),
            None,
        )
        .await?;
    let joined = s
        .wait_for(
            pub_handle,
            "`joined`",
            |e| e["plugindata"]["data"]["videoroom"] == "joined",
            &offer_tx,
        )
        .await?;
    let data = &joined["plugindata"]["data"];
    s.own_feed = data["id"].as_u64().context("no feed id")?;
    s.want_publishers(data);

    if let Some(p) = publisher.as_mut() {
        let (offer, pending) = p.publish_offer()?;
        s.api
            .message(
                pub_handle,
                json!({"request": "configure"}),
                Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
            )
            .await?;
        let answered = s
            .wait_for(
                pub_handle,
                "the publisher's answer",
                |e| e["jsep"]["type"] == "answer",
                &offer_tx,
            )
            .await?;
        let sdp = answered["jsep"]["sdp"]
            .as_str()
            .context("answer without sdp")?;
        p.accept_answer_sdp(pending, sdp)?;
    }
    subscriber.answer_offers_from(offer_rx);
    let stop_at = subscriber.stop_at();
    let pub_task = publisher.map(|p| tokio::spawn(p.run()));
    let sub_task = tokio::spawn(subscriber.run());

    let mut failure = None;
    // Bounded by `stop_at`: every wait below ends there.
    loop {
        if let Err(e) = s.subscribe().await {
            failure = Some(e);
            break;
        }
        match s.next_event(stop_at).await {
            Ok(Some(ev)) => {
                if let Err(e) = s.handle(ev, &offer_tx).await {
                    failure = Some(e);
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(offer_tx);
    let sent = match pub_task {
        Some(t) => Some(t.await.context("publisher task")?),
        None => None,
    };
    let received = sub_task.await.context("subscriber task")?;
    let mut errors = std::mem::take(&mut s.errors);
    if spec.leave_at.is_some_and(|t| t < timing.stop_at) {
        // Leaving the room: Janus detaches both handles and tells the others.
        match tokio::time::timeout(Duration::from_secs(5), s.api.destroy()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("leaving: {e:#}")),
            Err(_) => errors.push("leaving: no answer within 5 s".into()),
        }
    }
    if let Some(e) = failure {
        errors.push(format!("signaling: {e:#}"));
    }
    if let Some(sent) = &sent {
        errors.extend(sent.errors.iter().map(|e| format!("publisher: {e}")));
    }
    errors.extend(received.errors.iter().map(|e| format!("subscriber: {e}")));
    let left_ns = sent
        .as_ref()
        .map_or(0, |p| p.presence.left_ns)
        .max(received.presence.left_ns);
    Ok(match sent {
        Some(sent) => PeerReport {
            index: sent.index,
            meeting: 0,
            presence: Presence {
                joined_ns: timing.ns(joined_at),
                left_ns,
            },
            send: sent.send,
            recv: received.recv,
            connect_time: sent.connect_time,
            recv_slots: received.recv_slots,
            keyframe_requests: sent.keyframe_requests,
            shows: None,
            ended_by_server: sent.ended_by_server || received.ended_by_server,
            joined_at_url: None,
            errors,
        },
        // A listener: connected once its subscriber is.
        None => PeerReport {
            index: received.index,
            meeting: 0,
            presence: Presence {
                joined_ns: timing.ns(joined_at),
                left_ns,
            },
            send: received.send,
            recv: received.recv,
            connect_time: received.connect_time,
            recv_slots: received.recv_slots,
            keyframe_requests: 0,
            shows: None,
            ended_by_server: received.ended_by_server,
            joined_at_url: None,
            errors,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).expect("chunked"), json!({"a": 1}));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":2}";
        assert_eq!(parse_response(raw).expect("plain"), json!({"a": 2}));
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nx").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
