//! SIP signaling towards the trunk: calls come in, are answered or refused, and end.
//!
//! This module owns the SIP side of the dial-in gateway up to "answered: here is the remote RTP
//! address and the negotiated codec" and the end of the call. RTP contents, mixing, the voice
//! menu and joining meetings belong to others; they get an [`IncomingCall`], decide, and hold
//! an [`ActiveCall`]. Only incoming calls exist: no dial-out, no proxying, no REFER.
//!
//! # Use (tokio)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use klausur_sip::driver::sip::*;
//! let config = SipConfig {
//!     udp: vec!["127.0.0.1:5060".parse()?],
//!     allow: vec!["127.0.0.1/32".parse()?],
//!     ..SipConfig::default()
//! };
//! let (endpoint, mut calls) = SipEndpoint::start(config).await?;
//! let ports = RtpPortAllocator::new("127.0.0.1".parse()?, 20000..=20999)?;
//! while let Some(call) = calls.recv().await {
//!     let Some(offer) = call.offer() else {
//!         call.reject(488).await?; // or accept with our offer (late offer)
//!         continue;
//!     };
//!     let (Some(codec), port) = (offer.find(&MediaFormat::pcma()).cloned(), ports.allocate()?) else {
//!         call.reject(488).await?;
//!         continue;
//!     };
//!     let mut formats = vec![codec];
//!     formats.extend(offer.telephone_event(8000).cloned());
//!     let mut active = call.accept(LocalMedia::new(port.local_addr(), formats)).await?;
//!     // RTP goes to active.remote().rtp_addr with active.codec().payload_type ...
//!     while let CallEvent::RemoteMediaChanged(remote) = active.next_event().await {
//!         // send to remote.rtp_addr from now on (or nothing while remote.on_hold())
//!     }
//! }
//! endpoint.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! - [`SipEndpoint::start`] binds the configured UDP, TCP and TLS listen addresses and returns
//!   the receiving end of a channel of [`IncomingCall`]s (bounded: when the application does
//!   not keep up, INVITEs get 503).
//! - [`IncomingCall`]: caller number (the From user part; never log it, only
//!   [`CallInfo::caller_suffix`]), source address, the SDP offer as [`RemoteSdp`] (or none: a
//!   late offer). [`IncomingCall::accept`] answers 200 with our [`LocalMedia`] and returns the
//!   [`ActiveCall`] once the ACK came; [`IncomingCall::reject`] answers a failure status.
//!   Deciding nothing within [`Limits::decision_timeout`], or dropping it, answers 480; a CANCEL
//!   is answered 487 by the stack and [`IncomingCall::cancelled`] resolves.
//! - [`ActiveCall::next_event`]: [`CallEvent::RemoteMediaChanged`] for a re-INVITE or UPDATE
//!   (already answered with our same media, direction mirrored for hold), [`CallEvent::Ended`]
//!   for the caller's BYE, the duration limit (we sent BYE), a broken session, or shutdown.
//!   [`ActiveCall::hangup`] sends BYE; dropping an [`ActiveCall`] does too. Each call is one
//!   task that ends with the call.
//! - [`RtpPortAllocator`]: even RTP ports (and the odd RTCP port above) from the range, bound on
//!   the RTP address, released on drop.
//!
//! # Abuse and bad input
//!
//! Every message first passes [`inspect::inspect`] (pure, the fuzz entry point): syntax, the
//! headers the stack needs, the allow list (an INVITE from elsewhere gets 403, anything else
//! from elsewhere is dropped, TCP/TLS connections from elsewhere are closed), addressing (404
//! for a Request-URI that is not ours, 403 for a Route elsewhere), methods (REFER and other
//! unsupported methods 405/501), SDP (400/415/488). Then, with state: the INVITE rate per
//! source address (token bucket, 503 with Retry-After), digest authentication if configured
//! (401, then 403 for wrong credentials), the concurrent-call limit (486), the call-duration
//! limit (BYE). Malformed messages get a 400 where a response can be addressed, else they are
//! dropped; nothing a peer sends stops the endpoint or other calls. Counters: [`SipStats`].
//!
//! The SIP stack is ezk (transactions, dialogs, INVITE sessions); the transports in front of it
//! are ours ([`transport`]) so that [`inspect::inspect`] runs before ezk sees a byte. Where ezk
//! would panic on peer input, the input is checked first: a message without a parseable Via,
//! a CSeq of 2^31 or more (ezk adds to it unchecked), non-ASCII `Authorization` headers (ezk
//! slices them by byte index), a system without a DNS configuration (ezk's default resolver
//! panics). ezk's dialog layer parks an in-dialog request whose CSeq skips a number in a
//! backlog for good; such a request is answered 500 instead, except a BYE, which is answered
//! 200 and ends the call.

mod call;
pub mod digest;
pub mod inspect;
mod layer;
pub mod limits;
mod rtp;
pub mod sdp;
mod state;
pub mod transport;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ezk_sip_core::transport::TpHandle;
use ezk_sip_core::Endpoint;
use ezk_sip_ua::dialog::DialogLayer;
use ezk_sip_ua::invite::InviteLayer;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

pub use call::{ActiveCall, CallError, CallEvent, CallInfo, EndReason, IncomingCall};
pub use digest::{DigestAlgorithm, DigestConfig};
pub use ipnet::IpNet;
pub use rtp::{RtpPort, RtpPortAllocator, RtpPortError};
pub use sdp::{LocalMedia, MediaDirection, MediaFormat, RemoteSdp};
pub use state::SipStats;

use inspect::InspectPolicy;
use layer::{CallLayer, GuardLayer};
use state::EndpointState;
use transport::{Receiver, UdpTransport};

/// Limits of the endpoint.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Calls in progress (offered or established) at once; more INVITEs get 486 Busy Here.
    pub max_calls: usize,
    /// An established call is ended with BYE after this long.
    pub max_call_duration: Duration,
    /// Sustained INVITE rate per source address; more get 503 with Retry-After.
    pub invites_per_source_per_minute: u32,
    /// INVITE burst per source address.
    pub invite_burst: u32,
    /// Any SIP messages per source address and second (twice that as burst); more are dropped.
    pub messages_per_source_per_second: u32,
    /// How long an [`IncomingCall`] may wait for accept or reject (then 480).
    pub decision_timeout: Duration,
    /// [`IncomingCall`]s waiting in the channel; more INVITEs get 503.
    pub incoming_queue: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_calls: 200,
            max_call_duration: Duration::from_secs(240 * 60),
            invites_per_source_per_minute: 30,
            invite_burst: 10,
            messages_per_source_per_second: 200,
            decision_timeout: Duration::from_secs(30),
            incoming_queue: 64,
        }
    }
}

/// Certificate chain and private key for the TLS listener (PEM).
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(..)")
    }
}

impl TlsIdentity {
    /// Reads PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsIdentity, SipError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| SipError::Tls(format!("{}: {e}", p.display())));
        Ok(TlsIdentity {
            cert_chain_pem: read(cert)?,
            key_pem: Zeroizing::new(read(key)?),
        })
    }
}

/// Configuration of a [`SipEndpoint`].
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// UDP listen addresses (port 0: any free port, see [`SipEndpoint::local_addrs`]).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses (need `tls_identity`).
    pub tls: Vec<SocketAddr>,
    pub tls_identity: Option<TlsIdentity>,
    /// Trunk networks allowed to send anything.
    pub allow: Vec<IpNet>,
    /// Digest authentication the trunk must pass for INVITEs, if any.
    pub digest: Option<DigestConfig>,
    /// Host names that are ours in Request-URIs (besides the specific listen addresses; with
    /// an unspecified listen address any IP literal is accepted).
    pub local_names: Vec<String>,
    /// Host for our Contact header; default: the listen address, or for an unspecified one
    /// the host the trunk addressed.
    pub contact_host: Option<String>,
    pub limits: Limits,
    /// `User-Agent` of our requests.
    pub user_agent: String,
}

impl Default for SipConfig {
    fn default() -> SipConfig {
        SipConfig {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tcp: vec![],
            tls: vec![],
            tls_identity: None,
            allow: ["127.0.0.1/32", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            digest: None,
            local_names: vec![],
            contact_host: None,
            limits: Limits::default(),
            user_agent: "klausur".into(),
        }
    }
}

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("no SIP listen address configured")]
    NoListenAddress,
    #[error("invalid SIP configuration: {0}")]
    Config(&'static str),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// A listen transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

/// Reads a [`SipEndpoint`]'s counters ([`SipEndpoint::stats_source`]); cheap to clone.
#[derive(Clone)]
pub struct SipStatsSource(Arc<EndpointState>);

impl SipStatsSource {
    /// The counters now.
    pub fn stats(&self) -> SipStats {
        self.0.snapshot()
    }
}

impl std::fmt::Debug for SipStatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SipStatsSource")
            .field(&self.stats())
            .finish()
    }
}

/// Stops a [`SipEndpoint`]'s new calls while its calls in progress go on
/// ([`SipEndpoint::call_gate`]): a node being taken out of service, whose telephone trunk
/// should send new calls to another node. Cheap to clone.
#[derive(Clone)]
pub struct SipCallGate {
    state: Arc<EndpointState>,
    inbox: Arc<call::Inbox>,
}

impl SipCallGate {
    /// From now on every new INVITE is answered 503 (Service Unavailable), on which a trunk
    /// with several targets tries the next (RFC 3261 section 21.5.4); calls in progress go on.
    pub fn refuse_new_calls(&self) {
        self.inbox.close();
    }

    /// Calls in progress (offered or established).
    pub fn active_calls(&self) -> usize {
        self.state.active_calls()
    }
}

/// The running SIP endpoint. Dropping it stops the listeners and ends all calls (BYE) in the
/// background; [`SipEndpoint::shutdown`] does the same and waits for the calls to end.
pub struct SipEndpoint {
    state: Arc<EndpointState>,
    inbox: Arc<call::Inbox>,
    _endpoint: Endpoint,
    tasks: Vec<JoinHandle<()>>,
    bound: Vec<(SipTransport, SocketAddr)>,
}

impl std::fmt::Debug for SipEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipEndpoint")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl SipConfig {
    fn validate(&self) -> Result<(), SipError> {
        if self.udp.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            return Err(SipError::NoListenAddress);
        }
        if !self.tls.is_empty() && self.tls_identity.is_none() {
            return Err(SipError::Config(
                "TLS listen addresses need a certificate and key",
            ));
        }
        let l = &self.limits;
        if l.max_calls == 0 {
            return Err(SipError::Config("max_calls must be at least 1"));
        }
        if l.max_call_duration.is_zero() || l.decision_timeout.is_zero() {
            return Err(SipError::Config("durations must not be zero"));
        }
        if l.invites_per_source_per_minute == 0 || l.invite_burst == 0 {
            return Err(SipError::Config("the INVITE rate must allow at least one"));
        }
        if l.messages_per_source_per_second == 0 || l.incoming_queue == 0 {
            return Err(SipError::Config("message rate and queue must not be zero"));
        }
        if let Some(d) = &self.digest {
            if d.algorithms.is_empty() || d.user.is_empty() || d.password.is_empty() {
                return Err(SipError::Config(
                    "digest authentication needs a user, a password and an algorithm",
                ));
            }
            if !d.realm.is_ascii() || d.realm.contains('"') {
                return Err(SipError::Config("the digest realm must be plain ASCII"));
            }
        }
        Ok(())
    }

    fn policy(&self) -> InspectPolicy {
        let listen = self.udp.iter().chain(&self.tcp).chain(&self.tls);
        let mut local_names = self.local_names.clone();
        if let Some(host) = &self.contact_host {
            local_names.push(host.clone());
        }
        InspectPolicy {
            allow: self.allow.clone(),
            local_names,
            local_ips: listen
                .clone()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
                .collect(),
            any_local_ip: listen.clone().any(|a| a.ip().is_unspecified()),
        }
    }
}

fn tls_acceptor(identity: &TlsIdentity) -> Result<TlsAcceptor, SipError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&identity.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SipError::Tls(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(SipError::Tls("no certificate in the PEM data".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
        .map_err(|e| SipError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SipError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SipError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl SipEndpoint {
    /// Binds the listen addresses and starts the endpoint. Returns it and the channel of
    /// incoming calls.
    pub async fn start(
        config: SipConfig,
    ) -> Result<(SipEndpoint, mpsc::Receiver<IncomingCall>), SipError> {
        config.validate()?;
        let tls = match (&config.tls_identity, config.tls.is_empty()) {
            (Some(identity), false) => Some(tls_acceptor(identity)?),
            _ => None,
        };
        let mut bound = Vec::new();
        let mut udp = Vec::new();
        for &addr in &config.udp {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| SipError::Bind { addr, source })?;
            let socket = Arc::new(socket);
            let transport = UdpTransport::new(socket.clone())
                .map_err(|source| SipError::Bind { addr, source })?;
            bound.push((
                SipTransport::Udp,
                ezk_sip_core::transport::Transport::bound(&transport),
            ));
            udp.push((socket, TpHandle::new(transport)));
        }
        let mut streams = Vec::new();
        for (&addr, kind) in config
            .tcp
            .iter()
            .map(|a| (a, SipTransport::Tcp))
            .chain(config.tls.iter().map(|a| (a, SipTransport::Tls)))
        {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| SipError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| SipError::Bind { addr, source })?;
            bound.push((kind, local));
            streams.push((listener, kind));
        }

        let (incoming_tx, incoming_rx) = mpsc::channel(config.limits.incoming_queue);
        let digest = config.digest.clone().map(digest::DigestServer::new);
        let state = Arc::new(EndpointState::new(config.limits.clone(), digest));
        let inbox = Arc::new(call::Inbox::new(incoming_tx));

        let mut builder = Endpoint::builder();
        builder.set_dns_resolver(
            hickory_resolver::TokioResolver::builder_with_config(
                ResolverConfig::new(),
                TokioConnectionProvider::default(),
            )
            .build(),
        );
        builder.user_agent(config.user_agent.clone());
        for (_, handle) in &udp {
            builder.add_unmanaged_transport(handle.clone());
        }
        builder.add_layer(GuardLayer {
            state: state.clone(),
        });
        builder.add_layer(DialogLayer::default());
        builder.add_layer(InviteLayer::default());
        builder.add_layer(CallLayer {
            state: state.clone(),
            inbox: inbox.clone(),
            contact_host: config.contact_host.clone(),
        });
        let endpoint = builder.build();

        let receiver = Arc::new(Receiver {
            endpoint: endpoint.clone(),
            policy: config.policy(),
            state: state.clone(),
        });
        let mut tasks = Vec::new();
        for (socket, handle) in udp {
            tasks.push(tokio::spawn(transport::udp_loop(
                receiver.clone(),
                socket,
                handle,
            )));
        }
        for (listener, kind) in streams {
            let tls = (kind == SipTransport::Tls).then(|| tls.clone()).flatten();
            tasks.push(tokio::spawn(transport::stream_accept_loop(
                receiver.clone(),
                listener,
                tls,
            )));
        }
        tracing::info!(listen = ?bound, "SIP endpoint started");
        Ok((
            SipEndpoint {
                state,
                inbox,
                _endpoint: endpoint,
                tasks,
                bound,
            },
            incoming_rx,
        ))
    }

    /// The bound listen addresses.
    pub fn local_addrs(&self) -> &[(SipTransport, SocketAddr)] {
        &self.bound
    }

    /// The first bound address of a transport.
    pub fn local_addr(&self, transport: SipTransport) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// Calls in progress (offered or established).
    pub fn active_calls(&self) -> usize {
        self.state.active_calls()
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> SipStats {
        self.state.snapshot()
    }

    /// A handle that reads the endpoint's counters for as long as anyone holds it (for a
    /// monitoring endpoint that outlives no one: after shutdown it reads the last values).
    pub fn stats_source(&self) -> SipStatsSource {
        SipStatsSource(self.state.clone())
    }

    /// A handle that stops new calls while the calls in progress go on.
    pub fn call_gate(&self) -> SipCallGate {
        SipCallGate {
            state: self.state.clone(),
            inbox: self.inbox.clone(),
        }
    }

    /// Stops accepting, ends every call with BYE and waits (at most 40 s) until they are over.
    pub async fn shutdown(mut self) {
        self.state.shut_down();
        self.inbox.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        while self.state.active_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for SipEndpoint {
    fn drop(&mut self) {
        self.state.shut_down();
        self.inbox.close();
        for task in &self.tasks {
            task.abort();
        }
    }
}
