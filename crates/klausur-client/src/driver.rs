//! The tokio driver of a [`Session`]: one task per participant that owns the WebSocket to
//! `/api/ws`, the UDP socket of the media connection and the session's timers, fetches the
//! device credential over HTTP, and talks to its owner through a [`ClientHandle`].
//!
//! The driver is thin: every decision is the session's. It does the I/O the session asks for
//! ([`Output`]) and feeds it what arrives, with the time of arrival.
//!
//! Decrypted audio goes to an [`AudioSink`] (shared by the participants of one meeting in the
//! dial-in gateway), and only for the participants its filter wants, so a frame that some
//! other client of the same meeting already delivers is not decrypted twice.
//!
//! # TLS towards the server
//!
//! A client reaches an `https://` server over TLS with one rustls configuration for both its
//! HTTP requests (the credential) and its meeting WebSocket (`wss://`): [`ClientOptions::tls`].
//! `None` trusts the web roots (Mozilla's, as bundled by `webpki-roots`); [`tls_config`] adds
//! the certificates of a PEM file, for a server whose certificate comes from an organisation's
//! own CA. Every configuration built here uses the aws-lc-rs provider explicitly, never a
//! process-wide default, and offers no ALPN protocol (the WebSocket needs HTTP/1.1).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use klausur_e2ee::{CaVerifier, Member, MemberConfig, SignedCredential, SigningKey, VerifyingKey};
use klausur_proto::ServerMsg;
use rand::RngCore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::session::{Event, JoinAs, Now, Output, Session, SessionConfig};

/// How long connecting and joining may take before the client gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirects one join may follow (a cluster sends a join on to the node that runs its
/// meeting: one, or two while a meeting moves).
const MAX_REDIRECTS: u32 = 3;
/// Keep-alive `ping` towards the server (the browser sends one every 20 s).
const PING_EVERY: Duration = Duration::from_secs(20);
/// Datagrams handled in a row before the driver looks at signaling, commands and timers again.
const DRAIN_BATCH: usize = 32;

/// Which participants' audio a client decrypts and delivers.
pub type AudioFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A decrypted audio frame for the owner.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    /// Which client received it ([`ClientOptions::client_id`]).
    pub client_id: u64,
    pub participant_id: String,
    pub rtp_time: u64,
    pub arrived: Instant,
    pub opus: Vec<u8>,
}

/// Where decrypted audio goes.
#[derive(Clone)]
pub struct AudioSink {
    pub tx: mpsc::Sender<AudioFrame>,
    /// Decrypt and deliver only the audio of participants for which this returns true.
    pub filter: AudioFilter,
}

/// How a client connects.
#[derive(Clone)]
pub struct ClientOptions {
    /// The server's base URL, `http://host:port` or `https://host`.
    pub server: String,
    pub meeting_id: String,
    pub join: JoinAs,
    pub publish_audio: bool,
    /// The address to bind the media socket to (an ephemeral port). An unspecified address
    /// (`0.0.0.0`, `::`) means the local address of the route towards the server's host.
    pub bind_ip: IpAddr,
    /// A number the owner knows this client by (in [`AudioFrame::client_id`]).
    pub client_id: u64,
    pub audio: Option<AudioSink>,
    /// Which server certificates the client trusts, for HTTP and the WebSocket alike (see the
    /// module docs): `None` trusts the web roots; [`tls_config`] builds one that also trusts an
    /// organisation's own CA. Unused for an `http://` server.
    pub tls: Option<TlsConfig>,
    /// The dial-in gateway's token, sent as `Authorization: Bearer` on the WebSocket upgrade:
    /// a gateway carries many calls from one address, and its connections do not count against
    /// the server's per-address limit. `None` for every other client.
    pub gateway_token: Option<zeroize::Zeroizing<String>>,
}

/// A client's TLS trust: the rustls configuration its HTTP requests and its WebSocket use.
pub type TlsConfig = Arc<rustls::ClientConfig>;

/// Why [`tls_config`] cannot build a configuration. Each names the CA file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the CA file {}: {reason}", path.display())]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("the CA file {} is not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error(
        "the CA file {} holds no certificate (PEM \"BEGIN CERTIFICATE\" sections expected)",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "the CA file {} holds a certificate that cannot be trusted as a CA: {reason}",
        path.display()
    )]
    Certificate {
        path: PathBuf,
        reason: rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The PEM file `path` of an organisation's own CA, checked: it is read, holds at least one
/// certificate, and each can be trusted as a CA. Its text (for a library that takes PEM) and
/// its certificates as trust anchors.
pub fn read_ca_file(path: &Path) -> Result<(Vec<u8>, rustls::RootCertStore), TlsSetupError> {
    let pem = std::fs::read(path).map_err(|reason| TlsSetupError::Read {
        path: path.to_path_buf(),
        reason,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|reason| TlsSetupError::Certificate {
                path: path.to_path_buf(),
                reason,
            })?;
    }
    Ok((pem, roots))
}

/// The TLS configuration of a client: the web roots (Mozilla's, as bundled by `webpki-roots`)
/// plus every certificate in the PEM file `ca_file`, if one is given (an organisation's own
/// root or intermediate CA; the server's own self-signed certificate works as well). The
/// aws-lc-rs provider, TLS 1.2 and 1.3, no client certificate, no ALPN.
pub fn tls_config(ca_file: Option<&Path>) -> Result<TlsConfig, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        roots.roots.extend(read_ca_file(path)?.1.roots);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP client that trusts what `tls` trusts (the web roots when `None`; see
/// [`tls_config`]), giving up on a request after `timeout`.
pub fn http_client(
    tls: Option<&TlsConfig>,
    timeout: Duration,
) -> Result<reqwest::Client, DriverError> {
    http_client_as(tls, timeout, None)
}

/// [`http_client`] that presents `bearer` (a dial-in gateway's token) with every request: a
/// server accepts a caller's dial-in ticket only from its gateway.
pub fn http_client_as(
    tls: Option<&TlsConfig>,
    timeout: Duration,
    bearer: Option<&str>,
) -> Result<reqwest::Client, DriverError> {
    let tls = match tls {
        Some(t) => t.clone(),
        None => tls_config(None)?,
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = bearer {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| {
                DriverError::Refused("the gateway token is not a valid header value".into())
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .use_preconfigured_tls((*tls).clone())
        .build()?)
}

/// A meeting WebSocket, over TLS for a `wss://` URL.
type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the WebSocket to `/api/ws` of `server`, trusting what `tls` trusts over `wss://`,
/// with the gateway's token if there is one ([`ClientOptions::gateway_token`]).
async fn connect_ws(
    server: &str,
    tls: TlsConfig,
    gateway_token: Option<&str>,
) -> Result<WsStream, DriverError> {
    let mut request = ws_url(server).into_client_request()?;
    if let Some(token) = gateway_token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            DriverError::Refused("the gateway token is not a valid header value".into())
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(Connector::Rustls(tls)),
        ),
    )
    .await
    .map_err(|_| {
        DriverError::Refused("the server did not answer the WebSocket in time".into())
    })??;
    Ok(ws)
}

/// `e` and its causes, as one line (what went wrong with TLS is only in the causes).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// What the owner hears about (besides audio, which goes to the [`AudioSink`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A session event (never [`Event::Audio`]).
    Session(Event),
    /// The client could not connect, join or keep its connection; it has stopped.
    Failed(String),
    /// The client has stopped (after [`Event::Ended`] or a failure).
    Stopped,
    /// A commit or Welcome went out or came in (for measurement: the benchmark's large
    /// meetings record their sizes and when they passed).
    Mls(MlsTraffic),
}

/// A commit or Welcome that passed the client's WebSocket, with its size in bytes (the
/// `MLSMessage`, base64-decoded) and when it was sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MlsTraffic {
    /// This client sent a commit for `epoch`, with a Welcome for `welcome_for` joiners.
    CommitSent {
        epoch: u64,
        commit_bytes: usize,
        welcome_bytes: Option<usize>,
        welcome_for: usize,
        at: Instant,
    },
    /// The commit that won `epoch` arrived (another member's).
    CommitReceived {
        epoch: u64,
        bytes: usize,
        at: Instant,
    },
    /// The Welcome that adds this client arrived; it joins in `epoch`.
    WelcomeReceived {
        epoch: u64,
        bytes: usize,
        at: Instant,
    },
}

/// The size of the bytes a base64 text holds (padding and all; no decoding).
fn base64_len(text: &str) -> usize {
    let pad = text.bytes().rev().take_while(|&b| b == b'=').count().min(2);
    (text.len() / 4 * 3).saturating_sub(pad)
}

/// The [`MlsTraffic`] a server message is, if any.
fn mls_received(msg: &ServerMsg, at: Instant) -> Option<MlsTraffic> {
    match msg {
        ServerMsg::MlsCommit { epoch, commit, .. } => Some(MlsTraffic::CommitReceived {
            epoch: *epoch,
            bytes: base64_len(commit),
            at,
        }),
        ServerMsg::MlsWelcome { welcome, epoch } => Some(MlsTraffic::WelcomeReceived {
            epoch: *epoch,
            bytes: base64_len(welcome),
            at,
        }),
        _ => None,
    }
}

enum Command {
    Audio(Vec<u8>, u8),
    SetMuted(bool),
    RaiseHand(bool),
    Leave,
}

/// The owner's side of a running client.
pub struct ClientHandle {
    cmds: mpsc::Sender<Command>,
    /// Events, in order. The channel closes when the client has stopped.
    pub events: mpsc::UnboundedReceiver<ClientEvent>,
}

impl ClientHandle {
    /// Sends 20 ms of Opus as the microphone (dropped when the client is busy).
    pub fn send_audio(&self, opus: Vec<u8>, level: u8) {
        let _ = self.cmds.try_send(Command::Audio(opus, level));
    }

    /// Mutes or unmutes the own microphone.
    pub fn set_muted(&self, muted: bool) {
        let _ = self.cmds.try_send(Command::SetMuted(muted));
    }

    /// Raises or lowers the own hand.
    pub fn raise_hand(&self, raised: bool) {
        let _ = self.cmds.try_send(Command::RaiseHand(raised));
    }

    /// Leaves the meeting; the client stops.
    pub fn leave(&self) {
        let _ = self.cmds.try_send(Command::Leave);
    }
}

/// The identity a credential is asked for.
#[derive(Clone)]
pub enum CredentialFor {
    Invitation(String),
    DialIn(String),
    Guest { meeting_id: String, name: String },
}

/// Errors of the HTTP parts.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot reach the server: {}", error_chain(.0))]
    Http(#[from] reqwest::Error),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server's answer is not usable: {0}")]
    BadAnswer(String),
    /// Boxed: the WebSocket's error is large, and every result of the driver carries this type.
    #[error("WebSocket: {0}")]
    Ws(Box<tokio_tungstenite::tungstenite::Error>),
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Session(#[from] crate::session::SessionError),
    #[error("{0}")]
    Tls(#[from] TlsSetupError),
}

impl From<tokio_tungstenite::tungstenite::Error> for DriverError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> DriverError {
        DriverError::Ws(Box::new(e))
    }
}

/// The wall-clock time since the Unix epoch.
pub fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: wall_now(),
    }
}

/// A new device key, a credential for it from the server's identity CA, and the MLS member
/// built from both (verifying others against the CA key the server named, which must also
/// verify the own credential).
pub async fn fetch_member(
    http: &reqwest::Client,
    server: &str,
    who: &CredentialFor,
) -> Result<Member, DriverError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let body = credential_body(who, &key.verifying_key().to_bytes());
    let credential = request_credential(http, server, &body).await?;
    let ca = credential.1;
    Member::new(
        credential.0,
        key,
        CaVerifier { ca_public_key: ca },
        MemberConfig::default(),
    )
    .map_err(|e| DriverError::BadAnswer(e.to_string()))
}

/// A renewed credential for the same device key (the same identity as before).
pub async fn renew_credential(
    http: &reqwest::Client,
    server: &str,
    who: &CredentialFor,
    device_key: &[u8; 32],
) -> Result<SignedCredential, DriverError> {
    let body = credential_body(who, device_key);
    Ok(request_credential(http, server, &body).await?.0)
}

/// The body of `POST /api/identity/credential` for `who` and a device key.
fn credential_body(who: &CredentialFor, device_key: &[u8; 32]) -> serde_json::Value {
    let device_key = hex::encode(device_key);
    match who {
        CredentialFor::Invitation(t) => {
            serde_json::json!({"device_key": device_key, "invite_token": t})
        }
        CredentialFor::DialIn(t) => {
            serde_json::json!({"device_key": device_key, "dial_in_ticket": t})
        }
        CredentialFor::Guest { meeting_id, name } => serde_json::json!({
            "device_key": device_key, "meeting_id": meeting_id, "display_name": name
        }),
    }
}

async fn request_credential(
    http: &reqwest::Client,
    server: &str,
    body: &serde_json::Value,
) -> Result<(SignedCredential, VerifyingKey), DriverError> {
    let url = format!("{}/api/identity/credential", server.trim_end_matches('/'));
    let resp = http.post(&url).json(body).send().await?;
    let status = resp.status();
    let value: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        let msg = value["error"]["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string();
        return Err(DriverError::Refused(format!("credential: {status}: {msg}")));
    }
    let cred = value["credential"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| SignedCredential::from_bytes(&b).ok())
        .ok_or_else(|| DriverError::BadAnswer("credential missing or malformed".into()))?;
    let ca = value["ca_public_key"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| DriverError::BadAnswer("CA key missing or malformed".into()))?;
    // Only the signature: the validity window is on the CA's clock, which the group corrects
    // for (a local clock a minute off must not refuse a fresh credential).
    cred.verify(&ca, Duration::from_secs(cred.credential.not_before))
        .map_err(|e| DriverError::BadAnswer(format!("own credential does not verify: {e}")))?;
    Ok((cred, ca))
}

/// The local address the system would send from towards the server's host (nothing is sent).
async fn route_source(server: &str) -> Result<IpAddr, DriverError> {
    let url = reqwest::Url::parse(server).map_err(|e| DriverError::BadAnswer(e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| DriverError::BadAnswer("the server URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| DriverError::BadAnswer(format!("{host} has no address")))?;
    let any: IpAddr = if target.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    let probe = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    probe.connect(target).await?;
    Ok(probe.local_addr()?.ip())
}

fn ws_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_string());
    format!("{rest}/api/ws")
}

/// Starts a client task.
pub fn spawn(opts: ClientOptions) -> ClientHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        if let Err(e) = run(opts, cmd_rx, &ev_tx).await {
            let _ = ev_tx.send(ClientEvent::Failed(e.to_string()));
        }
        let _ = ev_tx.send(ClientEvent::Stopped);
    });
    ClientHandle {
        cmds: cmd_tx,
        events: ev_rx,
    }
}

fn credential_for(opts: &ClientOptions) -> CredentialFor {
    match &opts.join {
        JoinAs::Invitation(t) => CredentialFor::Invitation(t.clone()),
        JoinAs::DialIn(t) => CredentialFor::DialIn(t.clone()),
        JoinAs::Guest(name) => CredentialFor::Guest {
            meeting_id: opts.meeting_id.clone(),
            name: name.clone(),
        },
    }
}

async fn run(
    opts: ClientOptions,
    mut cmds: mpsc::Receiver<Command>,
    events: &mpsc::UnboundedSender<ClientEvent>,
) -> Result<(), DriverError> {
    let tls = match &opts.tls {
        Some(t) => t.clone(),
        None => tls_config(None)?,
    };
    let gateway_token = opts.gateway_token.as_deref().map(|t| t.as_str());
    let http = http_client_as(Some(&tls), CONNECT_TIMEOUT, gateway_token)?;
    let bind_ip = if opts.bind_ip.is_unspecified() {
        route_source(&opts.server).await?
    } else {
        opts.bind_ip
    };
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    let local = socket.local_addr()?;
    let mut ws = connect_ws(&opts.server, tls.clone(), gateway_token).await?;
    // The `join` as sent, for the node a cluster redirects it to, and how often it was.
    let mut join_text: Option<String> = None;
    let mut redirects = 0u32;
    let mut session = Session::new(
        SessionConfig {
            meeting_id: opts.meeting_id.clone(),
            join: opts.join.clone(),
            local_addr: local,
            publish_audio: opts.publish_audio,
        },
        now(),
    )?;
    if let Some(sink) = &opts.audio {
        let filter = sink.filter.clone();
        session.set_receive_filter(Box::new(move |pid| filter(pid)));
    }
    session.start(now());
    let who = credential_for(&opts);
    // The credential is fetched beside the loop so signaling and media keep going meanwhile.
    let (member_tx, mut member_rx) = mpsc::channel::<(Duration, Result<Member, DriverError>)>(1);
    let (renew_tx, mut renew_rx) = mpsc::channel::<Result<SignedCredential, DriverError>>(1);
    let mut buf = vec![0u8; 2048];
    // Two timers that live across the loop (reset when their deadline moves, not made anew for
    // every datagram): the session's next timeout and the next ping.
    let ping = tokio::time::sleep(PING_EVERY);
    tokio::pin!(ping);
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(session.poll_timeout()));
    tokio::pin!(timer);
    let mut ended = false;
    // Datagrams taken in a row without a round through `select!`.
    let mut drained = 0usize;
    loop {
        // Everything the session wants done.
        while let Some(out) = session.poll_output() {
            match out {
                Output::Signal(msg) => {
                    let text = serde_json::to_string(&msg)
                        .map_err(|e| DriverError::BadAnswer(e.to_string()))?;
                    if matches!(msg, klausur_proto::ClientMsg::Join { .. }) {
                        join_text = Some(text.clone());
                    }
                    ws.send(Message::Text(text.into())).await?;
                    if let klausur_proto::ClientMsg::MlsCommit {
                        epoch,
                        commit,
                        welcome,
                        welcome_for,
                    } = &msg
                    {
                        let _ = events.send(ClientEvent::Mls(MlsTraffic::CommitSent {
                            epoch: *epoch,
                            commit_bytes: base64_len(commit),
                            welcome_bytes: welcome.as_deref().map(base64_len),
                            welcome_for: welcome_for.len(),
                            at: Instant::now(),
                        }));
                    }
                }
                Output::Transmit(t) => {
                    if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                        tracing::debug!("media send failed: {e}");
                    }
                }
                Output::Event(Event::Audio {
                    participant_id,
                    rtp_time,
                    arrived,
                    opus,
                }) => {
                    if let Some(sink) = &opts.audio {
                        let _ = sink.tx.try_send(AudioFrame {
                            client_id: opts.client_id,
                            participant_id,
                            rtp_time,
                            arrived,
                            opus,
                        });
                    }
                }
                Output::Event(e) => {
                    match &e {
                        Event::NeedCredential => {
                            let (http, server, who, tx) = (
                                http.clone(),
                                opts.server.clone(),
                                who.clone(),
                                member_tx.clone(),
                            );
                            tokio::spawn(async move {
                                let asked = wall_now();
                                let m = fetch_member(&http, &server, &who).await;
                                let _ = tx.send((asked, m)).await;
                            });
                        }
                        Event::RenewCredential { device_key } => {
                            let (http, server, who, tx, key) = (
                                http.clone(),
                                opts.server.clone(),
                                who.clone(),
                                renew_tx.clone(),
                                *device_key,
                            );
                            tokio::spawn(async move {
                                let _ = tx
                                    .send(renew_credential(&http, &server, &who, &key).await)
                                    .await;
                            });
                        }
                        Event::Ended { .. } => ended = true,
                        Event::Refused { ended: true, .. } => ended = true,
                        _ => {}
                    }
                    let _ = events.send(ClientEvent::Session(e));
                }
            }
        }
        if ended {
            let _ = ws.close(None).await;
            return Ok(());
        }
        // Datagrams that are already waiting go straight in (a gateway's client receives every
        // speaker of its meeting); a bounded run, so signaling and timers keep their turn.
        if drained < DRAIN_BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    drained += 1;
                    if let Some(bytes) = buf.get(..n) {
                        session.handle_datagram(from, local, bytes, now());
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        drained = 0;
        let timeout = tokio::time::Instant::from_std(session.poll_timeout());
        if timer.deadline() != timeout {
            timer.as_mut().reset(timeout);
        }
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    match serde_json::from_str::<ServerMsg>(text.as_str()) {
                        Ok(ServerMsg::Redirect { url }) => {
                            // A node of a cluster that does not run the meeting: the same join
                            // at the node that does.
                            redirects += 1;
                            let join = join_text.clone().ok_or_else(|| {
                                DriverError::BadAnswer("redirected before joining".into())
                            })?;
                            if redirects > MAX_REDIRECTS {
                                return Err(DriverError::Refused(format!(
                                    "redirected more than {MAX_REDIRECTS} times in a row"
                                )));
                            }
                            if !(url.starts_with("https://") || url.starts_with("http://")) {
                                return Err(DriverError::BadAnswer(
                                    "redirected to something that is not an http(s) URL".into(),
                                ));
                            }
                            let _ = ws.close(None).await;
                            ws = connect_ws(&url, tls.clone(), gateway_token).await?;
                            ws.send(Message::Text(join.into())).await?;
                        }
                        Ok(msg) => {
                            let now = now();
                            if let Some(t) = mls_received(&msg, now.instant) {
                                let _ = events.send(ClientEvent::Mls(t));
                            }
                            session.handle_signal(msg, now);
                        }
                        Err(e) => tracing::debug!("unknown server message: {e}"),
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(DriverError::Refused("the server closed the connection".into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                let Some(bytes) = buf.get(..n) else { continue };
                session.handle_datagram(from, local, bytes, now());
            }
            cmd = cmds.recv() => match cmd {
                Some(Command::Audio(opus, level)) => session.send_audio(&opus, level, now()),
                Some(Command::SetMuted(m)) => { session.set_muted(m, now()); }
                Some(Command::RaiseHand(r)) => session.raise_hand(r, now()),
                Some(Command::Leave) | None => session.leave(now()),
            },
            m = member_rx.recv() => match m {
                Some((asked, Ok(member))) => session.start_group(member, asked, now()),
                Some((_, Err(e))) => return Err(e),
                None => {}
            },
            r = renew_rx.recv() => match r {
                Some(Ok(cred)) => session.renew_credential(cred, now()),
                Some(Err(e)) => tracing::warn!("credential renewal failed: {e}"),
                None => {}
            },
            _ = &mut ping => {
                let next = ping.deadline() + PING_EVERY;
                ping.as_mut().reset(next);
                let text = serde_json::to_string(&klausur_proto::ClientMsg::Ping)
                    .map_err(|e| DriverError::BadAnswer(e.to_string()))?;
                ws.send(Message::Text(text.into())).await?;
            }
            _ = &mut timer => session.handle_timeout(now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An organisation's own CA called `name` and a server certificate it issued for
    /// `localhost` and 127.0.0.1: the CA's PEM and the server's TLS configuration.
    fn own_ca(name: &str) -> (String, Arc<rustls::ServerConfig>) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name.push(rcgen::DnType::CommonName, name);
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        (ca_cert.pem(), Arc::new(server))
    }

    /// What the test server speaks after the TLS handshake.
    #[derive(Clone, Copy)]
    enum Speaks {
        /// Accepts a WebSocket and sends the text message "hello".
        WebSocket,
        /// Answers any request with `HTTP/1.1 200` and the body "ok".
        Http,
    }

    /// A TLS server on loopback with the server configuration `config`.
    async fn tls_server(config: Arc<rustls::ServerConfig>, speaks: Speaks) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate gives up here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    match speaks {
                        Speaks::WebSocket => {
                            let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                                return;
                            };
                            let _ = ws.send(Message::Text("hello".into())).await;
                            // Until the client goes.
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                        Speaks::Http => {
                            let mut req = Vec::new();
                            let mut buf = [0u8; 1024];
                            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                                match tls.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => req.extend_from_slice(buf.get(..n).unwrap_or(&[])),
                                }
                            }
                            let _ = tls
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\
                                      connection: close\r\n\r\nok",
                                )
                                .await;
                            let _ = tls.shutdown().await;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn base64_lengths() {
        let e = base64::engine::general_purpose::STANDARD;
        for n in 0..10 {
            assert_eq!(base64_len(&e.encode(vec![7u8; n])), n);
        }
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("missing.pem");
        let err = tls_config(Some(&missing)).expect_err("missing");
        assert!(matches!(err, TlsSetupError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").expect("write");
        let err = tls_config(Some(&empty)).expect_err("empty");
        assert!(matches!(err, TlsSetupError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");

        // Only a private key: no certificate either.
        let key = rcgen::KeyPair::generate().expect("key");
        let key_only = dir.path().join("key.pem");
        std::fs::write(&key_only, key.serialize_pem()).expect("write");
        let err = tls_config(Some(&key_only)).expect_err("key only");
        assert!(matches!(err, TlsSetupError::NoCertificate { .. }), "{err}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n%%%% not base64 %%%%\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = tls_config(Some(&broken)).expect_err("broken");
        assert!(err.to_string().contains("broken.pem"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = tls_config(Some(&garbage)).expect_err("garbage");
        assert!(matches!(err, TlsSetupError::Certificate { .. }), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        let (ca, _) = own_ca("Musterstadt Root CA");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, format!("# the city's CA\n{ca}")).expect("write");
        tls_config(Some(&good)).expect("a CA certificate");
        tls_config(None).expect("the web roots");
    }

    #[tokio::test]
    async fn https_and_wss_trust_the_own_ca_only_when_given() {
        let (ca, server) = own_ca("Musterstadt Root CA");
        let addr = tls_server(server.clone(), Speaks::Http).await;
        let ws_addr = tls_server(server, Speaks::WebSocket).await;
        let dir = tempfile::tempdir().expect("tmp");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).expect("write");
        let own = tls_config(Some(&ca_file)).expect("config");
        // Another CA's certificate does not make the server trusted.
        let (other_ca, _) = own_ca("Anderswo Root CA");
        let other_file = dir.path().join("other.pem");
        std::fs::write(&other_file, other_ca).expect("write");
        let other = tls_config(Some(&other_file)).expect("config");

        for base in [
            format!("https://localhost:{}", addr.port()),
            format!("https://127.0.0.1:{}", addr.port()),
        ] {
            // HTTP.
            let http = http_client(Some(&own), Duration::from_secs(10)).expect("client");
            let resp = http.get(format!("{base}/")).send().await.expect("trusted");
            assert_eq!(resp.text().await.expect("body"), "ok");
            for untrusted in [None, Some(&other)] {
                let http = http_client(untrusted, Duration::from_secs(10)).expect("client");
                let err = http
                    .get(format!("{base}/"))
                    .send()
                    .await
                    .expect_err("the server's CA is not trusted");
                let text = DriverError::from(err).to_string();
                assert!(text.contains("UnknownIssuer"), "{text}");
            }
        }
        let web_roots = tls_config(None).expect("config");
        for base in [
            format!("https://localhost:{}", ws_addr.port()),
            format!("https://127.0.0.1:{}", ws_addr.port()),
        ] {
            // The WebSocket (`wss://`).
            let mut ws = connect_ws(&base, own.clone(), None).await.expect("trusted");
            match ws.next().await {
                Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "hello"),
                other => panic!("no greeting: {other:?}"),
            }
            let _ = ws.close(None).await;
            for untrusted in [web_roots.clone(), other.clone()] {
                let err = connect_ws(&base, untrusted, None)
                    .await
                    .expect_err("the server's CA is not trusted");
                assert!(err.to_string().contains("UnknownIssuer"), "{err}");
            }
        }
    }
}
