//! The gateway: the SIP endpoint, and a task per answered call bridging it into its meeting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::api::{self, DialInApi};
use super::bus::Bus;
use super::sip::{
    self, IncomingCall, LocalMedia, MediaFormat, RtpPortAllocator, SipConfig, SipEndpoint,
};
use crate::core::codec::{self, OfferedCodec};
use crate::core::prompts::{Language, PromptSet};

/// Everything the gateway is set up with.
#[derive(Clone)]
pub struct GatewayConfig {
    pub sip: SipConfig,
    /// Where RTP towards the trunk is bound (and announced in SDP), and its port range.
    pub rtp_ip: IpAddr,
    pub rtp_ports: RangeInclusive<u16>,
    /// The server's base URL (`http://127.0.0.1:8080`) and the gateway token.
    pub server: String,
    pub token: Zeroizing<String>,
    /// Which certificates of an `https://` server the gateway trusts, for the dial-in API and
    /// every caller's meeting client alike: `None` trusts the web roots;
    /// [`klausur_client::driver::tls_config`] adds an operator's own CA.
    pub server_tls: Option<klausur_client::driver::TlsConfig>,
    /// Where the callers' meeting clients bind their media sockets.
    pub media_ip: IpAddr,
    pub language: Language,
    /// An operator's own recordings (`<dir>/<prompt>.wav`), instead of the built-in prompts.
    pub prompts_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("server", &self.server)
            .field("own_ca", &self.server_tls.is_some())
            .field("rtp_ip", &self.rtp_ip)
            .field("rtp_ports", &self.rtp_ports)
            .finish_non_exhaustive()
    }
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("SIP: {0}")]
    Sip(#[from] sip::SipError),
    #[error("RTP ports: {0}")]
    Rtp(#[from] sip::RtpPortError),
    #[error("voice prompts: {0}")]
    Prompts(#[from] crate::core::prompts::PromptError),
    #[error("server API: {0}")]
    Api(#[from] api::ApiError),
}

/// What every call task shares.
pub struct Gateway {
    pub(super) api: DialInApi,
    pub(super) prompts: PromptSet,
    pub(super) media_ip: IpAddr,
    buses: Mutex<HashMap<String, Weak<Bus>>>,
    next_client: AtomicU64,
    next_call: AtomicU64,
}

impl Gateway {
    pub(super) fn bus(&self, meeting_id: &str) -> Arc<Bus> {
        let mut buses = self.buses.lock().unwrap_or_else(|p| p.into_inner());
        buses.retain(|_, b| b.strong_count() > 0);
        if let Some(b) = buses.get(meeting_id).and_then(Weak::upgrade) {
            return b;
        }
        let b = Arc::new(Bus::start());
        buses.insert(meeting_id.to_string(), Arc::downgrade(&b));
        b
    }

    pub(super) fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running gateway.
pub struct RunningGateway {
    endpoint: SipEndpoint,
    accept: JoinHandle<()>,
}

impl RunningGateway {
    /// The SIP listen addresses (with the ports actually bound).
    pub fn sip_addrs(&self) -> Vec<(sip::SipTransport, std::net::SocketAddr)> {
        self.endpoint.local_addrs().to_vec()
    }

    /// SIP counters.
    pub fn stats(&self) -> sip::SipStats {
        self.endpoint.stats()
    }

    /// A handle on the SIP counters that a monitoring endpoint can keep.
    pub fn stats_source(&self) -> sip::SipStatsSource {
        self.endpoint.stats_source()
    }

    /// A handle that stops new calls (503) while the calls in progress go on.
    pub fn call_gate(&self) -> sip::SipCallGate {
        self.endpoint.call_gate()
    }

    /// Ends every call (BYE) and stops.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.endpoint.shutdown().await;
    }
}

fn offered(formats: &[MediaFormat]) -> Vec<OfferedCodec> {
    formats
        .iter()
        .map(|f| {
            OfferedCodec::new(
                f.payload_type,
                &f.encoding,
                f.clock_rate,
                f.channels,
                f.fmtp.as_deref(),
            )
        })
        .collect()
}

fn media_formats(codecs: &[OfferedCodec]) -> Vec<MediaFormat> {
    codecs
        .iter()
        .map(|c| MediaFormat::new(c.pt, &c.name, c.clock_rate, c.channels, c.fmtp.as_deref()))
        .collect()
}

impl Gateway {
    /// Starts the SIP endpoint and answers calls until [`RunningGateway::shutdown`].
    pub async fn start(cfg: GatewayConfig) -> Result<RunningGateway, GatewayError> {
        let prompts = match &cfg.prompts_dir {
            Some(dir) => PromptSet::from_dir(dir)?,
            None => PromptSet::builtin(cfg.language)?,
        };
        let ports = RtpPortAllocator::new(cfg.rtp_ip, cfg.rtp_ports.clone())?;
        let api = DialInApi::new(&cfg.server, cfg.token.clone(), cfg.server_tls.clone())?;
        let (endpoint, mut calls) = SipEndpoint::start(cfg.sip.clone()).await?;
        let gw = Arc::new(Gateway {
            api,
            prompts,
            media_ip: cfg.media_ip,
            buses: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            next_call: AtomicU64::new(1),
        });
        let accept = tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                let gw = gw.clone();
                let ports = &ports;
                match answer(&gw, ports, call).await {
                    Ok(Some(setup)) => {
                        tokio::spawn(super::caller::run(gw, setup));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::info!("a call could not be answered: {e}"),
                }
            }
        });
        Ok(RunningGateway { endpoint, accept })
    }
}

/// Negotiates and answers one call; `None` if it was refused.
async fn answer(
    gw: &Gateway,
    ports: &RtpPortAllocator,
    call: IncomingCall,
) -> Result<Option<super::caller::CallSetup>, String> {
    let number = gw.next_call.fetch_add(1, Ordering::Relaxed);
    let caller = call.info().caller().map(str::to_string);
    let source = call.info().source;
    let port = match ports.allocate() {
        Ok(p) => p,
        Err(e) => {
            let _ = call.reject(503).await;
            return Err(format!("no RTP port: {e}"));
        }
    };
    let (local, negotiated) = match call.offer() {
        Some(offer) => match codec::negotiate(&offered(&offer.formats)) {
            Ok(n) => (
                LocalMedia::new(port.local_addr(), media_formats(&n.answer())),
                Some(n),
            ),
            Err(e) => {
                let _ = call.reject(488).await;
                return Err(e.to_string());
            }
        },
        None => (
            LocalMedia::new(port.local_addr(), media_formats(&codec::our_offer())),
            None,
        ),
    };
    let active = call.accept(local).await.map_err(|e| e.to_string())?;
    let negotiated = match negotiated {
        Some(n) => n,
        // A late offer: the ACK's answer chose among ours.
        None => {
            let mut answer = vec![active.codec().clone()];
            answer.extend(active.telephone_event().cloned());
            match codec::negotiate(&offered(&answer)) {
                Ok(n) => n,
                Err(e) => {
                    let _ = active.hangup().await;
                    return Err(e.to_string());
                }
            }
        }
    };
    Ok(Some(super::caller::CallSetup {
        call: active,
        port,
        negotiated,
        caller,
        source,
        number,
    }))
}
