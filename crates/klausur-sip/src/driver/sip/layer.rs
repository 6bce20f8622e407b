//! The endpoint's two ezk layers around ezk's dialog and INVITE layers:
//!
//! 1. [`GuardLayer`] (first): the state-dependent checks that follow [`super::inspect`]:
//!    the CSeq window of our dialogs, and for a new INVITE the per-source rate (503 with
//!    Retry-After) and digest authentication (401 challenge, 403 for wrong credentials).
//! 2. ezk's `DialogLayer` and `InviteLayer` (in-dialog requests, CANCEL).
//! 3. [`CallLayer`] (last): a new INVITE becomes a call (486 at the concurrent-call limit);
//!    OPTIONS outside a dialog is answered 200 (trunk keep-alives).

use std::sync::Arc;

use ezk_sip_core::{Endpoint, EndpointBuilder, IncomingRequest, Layer, MayTake};
use ezk_sip_types::header::typed::{Contact, FromTo};
use ezk_sip_types::host::{Host, HostPort};
use ezk_sip_types::uri::{NameAddr, SipUri};
use ezk_sip_types::{Method, Name, StatusCode};
use ezk_sip_ua::dialog::{Dialog, DialogKey};
use ezk_sip_ua::invite::acceptor::InviteAcceptor;

use super::call::{run_call, CallInfo, NewCall};
use super::digest::DigestVerdict;
use super::inspect::{canonical_ip, uri_user, ALLOW};
use super::sdp::parse_remote_sdp;
use super::state::{CseqCheck, EndpointState};

pub(crate) struct GuardLayer {
    pub(crate) state: Arc<EndpointState>,
}

fn dialog_key(request: &IncomingRequest) -> Option<DialogKey> {
    let base = &request.base_headers;
    Some(DialogKey {
        call_id: base.call_id.0.clone_detach(),
        peer_tag: base.from.tag.as_ref().map(|t| t.clone_detach()),
        local_tag: base.to.tag.as_ref()?.clone_detach(),
    })
}

/// Answers a request with a final status through a server transaction.
async fn respond(
    endpoint: &Endpoint,
    mut request: IncomingRequest,
    status: u16,
    headers: &[(Name, String)],
) {
    if request.line.method == Method::ACK {
        return;
    }
    let mut response = endpoint.create_response(&request, StatusCode::from(status), None);
    for (name, value) in headers {
        response.msg.headers.insert(name.clone(), value.as_str());
    }
    let result = if request.line.method == Method::INVITE {
        endpoint
            .create_server_inv_tsx(&mut request)
            .respond_failure(response)
            .await
    } else {
        endpoint
            .create_server_tsx(&mut request)
            .respond(response)
            .await
    };
    if let Err(e) = result {
        tracing::debug!(status, error = %e, "response failed");
    }
}

#[async_trait::async_trait]
impl Layer for GuardLayer {
    fn name(&self) -> &'static str {
        "klausur-guard"
    }

    fn init(&mut self, endpoint: &mut EndpointBuilder) {
        endpoint.add_allow(Method::OPTIONS);
        endpoint.add_allow(Method::INFO);
    }

    async fn receive(&self, endpoint: &Endpoint, request: MayTake<'_, IncomingRequest>) {
        if let Some(key) = dialog_key(&request) {
            let cseq = request.base_headers.cseq.cseq;
            match self.state.check_dialog_cseq(&key, cseq) {
                CseqCheck::Pass => {}
                CseqCheck::Gap(remote_bye) if request.line.method == Method::BYE => {
                    remote_bye.notify_one();
                    respond(endpoint, request.take(), 200, &[]).await;
                }
                CseqCheck::Gap(_) | CseqCheck::Refuse => {
                    respond(endpoint, request.take(), 500, &[]).await;
                }
            }
            return;
        }
        if request.line.method != Method::INVITE {
            return;
        }
        let source = canonical_ip(request.tp_info.source.ip());
        let now = self.state.now();

        let limited = match self.state.invite_limiter.lock() {
            Ok(mut limiter) => limiter.take(source, now).err(),
            Err(_) => Some(std::time::Duration::from_secs(1)),
        };
        if let Some(wait) = limited {
            self.state.stats.rate_limited.inc();
            let retry = wait.as_secs().saturating_add(1);
            let request = request.take();
            respond(
                endpoint,
                request,
                503,
                &[(Name::RETRY_AFTER, retry.to_string())],
            )
            .await;
            return;
        }

        if let Some(digest) = &self.state.digest {
            let authorization: Vec<_> = request
                .headers
                .get_raw(&Name::AUTHORIZATION)
                .cloned()
                .collect();
            let method = request.line.method.to_string();
            let (verdict, challenges) = match digest.lock() {
                Ok(mut d) => {
                    let verdict = d.verify(now, source, &method, &request.body, &authorization);
                    let challenges = match verdict {
                        DigestVerdict::Missing => d.challenges(now, source, false),
                        DigestVerdict::Stale => d.challenges(now, source, true),
                        _ => Vec::new(),
                    };
                    (verdict, challenges)
                }
                Err(_) => (DigestVerdict::Invalid("lock"), Vec::new()),
            };
            match verdict {
                DigestVerdict::Authorized => {}
                DigestVerdict::Missing | DigestVerdict::Stale => {
                    self.state.stats.auth_challenges.inc();
                    let headers: Vec<_> = challenges
                        .into_iter()
                        .map(|c| (Name::WWW_AUTHENTICATE, c))
                        .collect();
                    respond(endpoint, request.take(), 401, &headers).await;
                }
                DigestVerdict::Invalid(why) => {
                    self.state.stats.auth_failures.inc();
                    tracing::info!(%source, reason = why, "digest authentication failed");
                    respond(endpoint, request.take(), 403, &[]).await;
                }
            }
        }
    }
}

pub(crate) struct CallLayer {
    pub(crate) state: Arc<EndpointState>,
    /// Where answered-to-be calls go (the application's channel).
    pub(crate) inbox: Arc<super::call::Inbox>,
    /// Host for our Contact when the listen address is unspecified (`None`: the Request-URI's).
    pub(crate) contact_host: Option<String>,
}

#[async_trait::async_trait]
impl Layer for CallLayer {
    fn name(&self) -> &'static str {
        "klausur-call"
    }

    async fn receive(&self, endpoint: &Endpoint, request: MayTake<'_, IncomingRequest>) {
        let out_of_dialog = request.base_headers.to.tag.is_none();
        if !out_of_dialog {
            return;
        }
        if request.line.method == Method::OPTIONS {
            respond_options(endpoint, request.take()).await;
        } else if request.line.method == Method::INVITE {
            self.new_call(endpoint, request.take()).await;
        }
    }
}

async fn respond_options(endpoint: &Endpoint, mut request: IncomingRequest) {
    let mut response = endpoint.create_response(&request, StatusCode::OK, None);
    response.msg.headers.insert(Name::ALLOW, ALLOW);
    response.msg.headers.insert(Name::ACCEPT, "application/sdp");
    let mut to: FromTo = request.base_headers.to.clone();
    if to.tag.is_none() {
        to.tag = Some(ezk_sip_ua::util::random_string());
        let _ = response.msg.headers.edit(Name::TO, |t: &mut FromTo| {
            t.tag.clone_from(&to.tag);
        });
    }
    if let Err(e) = endpoint
        .create_server_tsx(&mut request)
        .respond(response)
        .await
    {
        tracing::debug!(error = %e, "OPTIONS response failed");
    }
}

impl CallLayer {
    fn contact(&self, request: &IncomingRequest) -> Contact {
        let transport = &request.tp_info.transport;
        let bound = transport.sent_by();
        let host = match &self.contact_host {
            Some(name) => match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Host::from(ip),
                Err(_) => Host::Name(name.as_str().into()),
            },
            None if !bound.ip().is_unspecified() => Host::from(bound.ip()),
            None => request.line.uri.host_port.host.clone(),
        };
        let mut uri = SipUri::new(HostPort {
            host,
            port: Some(bound.port()),
        })
        .user("klausur".into());
        uri.sips = false;
        let name = transport.name();
        if !name.eq_ignore_ascii_case("UDP") {
            uri = uri.uri_param_value("transport", name.to_ascii_lowercase());
        }
        Contact::new(NameAddr::uri(uri))
    }

    async fn new_call(&self, endpoint: &Endpoint, request: IncomingRequest) {
        let state = &self.state;
        if state.is_shut_down() {
            respond(endpoint, request, 503, &[]).await;
            return;
        }
        let Some(slot) = state.acquire_call() else {
            state.stats.busy.inc();
            respond(endpoint, request, 486, &[]).await;
            return;
        };
        // The body passed the same check in inspect; a failure here would be a bug.
        let offer = if request.body.is_empty() {
            None
        } else {
            match parse_remote_sdp(&request.body) {
                Ok(offer) => Some(offer),
                Err(_) => {
                    respond(endpoint, request, 488, &[]).await;
                    return;
                }
            }
        };
        let info = CallInfo::new(
            state.next_id(),
            uri_user(&request.base_headers.from.uri.uri),
            uri_user(&request.line.uri),
            request.tp_info.source,
            request.tp_info.transport.name(),
        );
        let contact = self.contact(&request);
        let cseq = request.base_headers.cseq.cseq;
        let dialog = match Dialog::new_server(endpoint.clone(), &request, contact) {
            Ok(dialog) => dialog,
            Err(e) => {
                tracing::debug!(error = %e, "no dialog from INVITE");
                respond(endpoint, request, 400, &[]).await;
                return;
            }
        };
        let key = dialog.key();
        let track = state.track_dialog(key.clone(), cseq);
        let mut acceptor = InviteAcceptor::new(dialog, request);
        if let Ok(trying) = acceptor.create_response(StatusCode::TRYING, None).await {
            let _ = acceptor.respond_provisional(trying).await;
        }
        run_call(NewCall {
            endpoint: endpoint.clone(),
            state: state.clone(),
            inbox: self.inbox.clone(),
            info,
            offer,
            acceptor,
            dialog_key: key,
            slot,
            track,
        })
        .await;
    }
}
