//! The checks every SIP message passes before it reaches the SIP stack.
//!
//! [`inspect`] is a pure function of the raw bytes, the source address and the
//! [`InspectPolicy`]: it parses with ezk-sip-types (the same parser ezk's own transports use)
//! and decides whether the message goes on to the stack ([`Inspection::Forward`]), is answered
//! right here without any state ([`Inspection::Reply`], e.g. 400, 403, 404, 405, 415, 420, 488,
//! 501), or is dropped ([`Inspection::Drop`]). The endpoint's UDP, TCP and TLS transports call
//! it for every message, so it is also the fuzzing entry point: it never panics, whatever the
//! bytes.
//!
//! What is checked here, in order:
//! - size (at most 65535 bytes), keep-alives;
//! - syntax: start line, header lines (no malformed line), Content-Length against the body;
//! - the headers the stack relies on: at least one parseable Via, From, To, Call-ID, CSeq
//!   (without them no response can be addressed: dropped). ezk indexes the first Via without
//!   a check, so a message without one must never reach it;
//! - the source: only the allow list may talk to us. From elsewhere an INVITE gets a 403,
//!   everything else is dropped;
//! - requests: a From tag, CSeq below 2^31 (ezk adds to it unchecked) and matching the method,
//!   the Request-URI addressed to us (404 otherwise: we are no proxy), no Route to elsewhere
//!   (403), outside a dialog no Require of an extension we lack (420);
//! - methods: a new INVITE needs a Contact and, if it has a body, a parseable SDP offer with
//!   plain RTP audio (415 for other bodies, 400 for broken SDP, 488 for no usable audio).
//!   Outside a dialog REFER, REGISTER, SUBSCRIBE, PUBLISH, MESSAGE get 405, UPDATE, INFO, PRACK, NOTIFY
//!   481, unknown methods 501. Inside a dialog every well-formed request goes on to the stack
//!   (the call answers 405/501 there), so that ezk's CSeq bookkeeping sees it.
//!
//! State-dependent checks (INVITE rate, concurrent calls, digest authentication, the CSeq
//! window of running dialogs) follow in the endpoint's first layer, after the transaction
//! layer has absorbed retransmissions.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::from_utf8;

use bytes::Bytes;
use ezk_sip_types::header::typed::{
    CSeq, CallID, Contact, ContentLength, FromTo, Require, Routing, Via,
};
use ezk_sip_types::host::Host;
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::uri::{SipUri, SipUriUserPart};
use ezk_sip_types::{Headers, Method, Name};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::sdp::{parse_remote_sdp, SdpError};

/// Largest SIP message accepted (the UDP limit; TCP and TLS use the same).
pub const MAX_MESSAGE_SIZE: usize = 65_535;

/// Methods we answer; sent in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";

/// Extensions we accept in `Require`.
const SUPPORTED_EXTENSIONS: [&str; 2] = ["timer", "100rel"];

/// Which sources may talk to us and which Request-URI hosts are ours.
#[derive(Debug, Clone, Default)]
pub struct InspectPolicy {
    /// Trunk networks allowed to send requests (and responses).
    pub allow: Vec<IpNet>,
    /// Host names accepted in the Request-URI (compared case-insensitively).
    pub local_names: Vec<String>,
    /// IP addresses accepted in the Request-URI (the specific listen addresses).
    pub local_ips: Vec<IpAddr>,
    /// Accept any IP literal in the Request-URI (set when listening on an unspecified address,
    /// where the addresses we are reached at are not known).
    pub any_local_ip: bool,
}

impl InspectPolicy {
    /// Whether `ip` is on the allow list.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.allow.iter().any(|net| net.contains(&ip))
    }

    fn is_local_host(&self, host: &Host) -> bool {
        match host {
            Host::Name(name) => self
                .local_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_str())),
            Host::IP4(ip) => self.is_local_ip(IpAddr::V4(*ip)),
            Host::IP6(ip) => self.is_local_ip(IpAddr::V6(*ip)),
        }
    }

    fn is_local_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.any_local_ip || self.local_ips.iter().any(|l| canonical_ip(*l) == ip)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack socket reports IPv4 peers that way).
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A message as parsed for the stack.
#[derive(Debug, Clone)]
pub struct ParsedMessage {
    pub line: MessageLine,
    pub headers: Headers,
    pub body: Bytes,
    /// The whole message.
    pub buffer: Bytes,
}

/// Why a message was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A keep-alive answer (`\r\n`) or other blank data.
    Blank,
    TooLarge,
    /// Not a SIP message (start line or framing broken).
    Unparseable,
    /// Without Via, From, To, Call-ID and CSeq no response can be sent.
    MissingHeaders,
    /// From a source outside the allow list.
    NotAllowed,
    /// A broken ACK (ACKs are never answered).
    BadAck,
}

/// What to do with a message.
#[derive(Debug, Clone)]
pub enum Inspection {
    /// A keep-alive ping (`\r\n\r\n`): answer `\r\n`.
    KeepAlive,
    /// Drop silently.
    Drop(DropReason),
    /// Answer with this response right away; nothing else happens.
    Reply { status: u16, response: Bytes },
    /// Hand to the SIP stack.
    Forward(Box<ParsedMessage>),
}

/// The fuzz entry point: inspects raw bytes from `source` exactly as the endpoint does before
/// any state changes. Never panics.
pub fn inspect(bytes: &[u8], source: SocketAddr, policy: &InspectPolicy) -> Inspection {
    if bytes == b"\r\n\r\n" {
        return Inspection::KeepAlive;
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Inspection::Drop(DropReason::Blank);
    }
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Inspection::Drop(DropReason::TooLarge);
    }
    let Some(raw) = parse_raw(bytes) else {
        return Inspection::Drop(DropReason::Unparseable);
    };
    let Some(base) = BaseParts::extract(&raw.headers) else {
        return Inspection::Drop(DropReason::MissingHeaders);
    };
    let allowed = policy.allows(source.ip());

    let request_line = match &raw.line {
        MessageLine::Response(_) => {
            return if allowed && !raw.malformed_header && !raw.body_truncated {
                forward(raw)
            } else if allowed {
                Inspection::Drop(DropReason::Unparseable)
            } else {
                Inspection::Drop(DropReason::NotAllowed)
            };
        }
        MessageLine::Request(line) => line.clone(),
    };
    let method = &request_line.method;
    let reply = |status: u16, reason: &str, extra: &[(&str, &str)]| {
        if *method == Method::ACK {
            Inspection::Drop(DropReason::BadAck)
        } else {
            Inspection::Reply {
                status,
                response: stateless_response(&base, source, status, reason, extra),
            }
        }
    };

    if !allowed {
        return if *method == Method::INVITE {
            reply(403, "Forbidden", &[])
        } else {
            Inspection::Drop(DropReason::NotAllowed)
        };
    }
    if raw.malformed_header {
        return reply(400, "Malformed Header", &[]);
    }
    if raw.body_truncated {
        return reply(400, "Incomplete Body", &[]);
    }
    if base.from.tag.is_none() {
        return reply(400, "Missing From Tag", &[]);
    }
    if base.cseq.cseq >= 1 << 31 {
        return reply(400, "Invalid CSeq", &[]);
    }
    if base.cseq.method != *method {
        return reply(400, "CSeq Method Mismatch", &[]);
    }
    if !policy.is_local_host(&request_line.uri.host_port.host) {
        return reply(404, "Not Found", &[]);
    }
    match raw.headers.try_get::<Vec<Routing>>(Name::ROUTE) {
        None => {}
        Some(Ok(routes)) => {
            if let Some(top) = routes.first() {
                if !policy.is_local_host(&top.uri.uri.host_port.host) {
                    return reply(403, "Not Relaying", &[]);
                }
            }
        }
        Some(Err(_)) => return reply(400, "Malformed Route", &[]),
    }
    let in_dialog = base.to.tag.is_some();
    if !in_dialog && *method != Method::ACK && *method != Method::CANCEL {
        if let Some(required) = raw.headers.try_get_named::<Vec<Require>>() {
            let Ok(required) = required else {
                return reply(400, "Malformed Require", &[]);
            };
            let unsupported: Vec<&str> = required
                .iter()
                .map(|r| r.0.as_str().trim())
                .filter(|r| {
                    !SUPPORTED_EXTENSIONS
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(r))
                })
                .collect();
            if !unsupported.is_empty() {
                let list = unsupported.join(", ");
                return reply(420, "Bad Extension", &[("Unsupported", &list)]);
            }
        }
    }

    if in_dialog {
        // Inside a dialog every request must pass ezk's dialog layer, which counts CSeq
        // numbers; a request answered here would leave a gap that stalls the dialog. The
        // call answers what it does not support (405/501) and checks re-INVITE offers.
        return forward(raw);
    }
    if *method == Method::INVITE {
        match raw.headers.get_named::<Contact>() {
            Ok(_) => {}
            Err(_) => return reply(400, "Missing Or Invalid Contact", &[]),
        }
        if !raw.body.is_empty() {
            if let Err((status, reason)) = check_sdp_body(&raw.headers, &raw.body) {
                return reply(status, reason, &[("Accept", "application/sdp")]);
            }
        }
        return forward(raw);
    }
    if *method == Method::ACK
        || *method == Method::BYE
        || *method == Method::CANCEL
        || *method == Method::OPTIONS
    {
        return forward(raw);
    }
    if *method == Method::UPDATE
        || *method == Method::INFO
        || *method == Method::PRACK
        || *method == Method::NOTIFY
    {
        return reply(481, "Call/Transaction Does Not Exist", &[]);
    }
    if *method == Method::REFER
        || *method == Method::REGISTER
        || *method == Method::SUBSCRIBE
        || *method == Method::PUBLISH
        || *method == Method::MESSAGE
    {
        return reply(405, "Method Not Allowed", &[("Allow", ALLOW)]);
    }
    reply(501, "Not Implemented", &[("Allow", ALLOW)])
}

fn forward(raw: RawMessage) -> Inspection {
    Inspection::Forward(Box::new(ParsedMessage {
        line: raw.line,
        headers: raw.headers,
        body: raw.body,
        buffer: raw.buffer,
    }))
}

/// Checks an offer or answer body: `Err((status, reason))` if it is not usable SDP.
pub(crate) fn check_sdp_body(headers: &Headers, body: &[u8]) -> Result<(), (u16, &'static str)> {
    let content_type = headers
        .get_raw(&Name::CONTENT_TYPE)
        .next()
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/sdp" {
        return Err((415, "Unsupported Media Type"));
    }
    if let Some(enc) = headers.get_raw(&Name::CONTENT_ENCODING).next() {
        if !enc.as_str().trim().eq_ignore_ascii_case("identity") {
            return Err((415, "Unsupported Media Type"));
        }
    }
    match parse_remote_sdp(body) {
        Ok(_) => Ok(()),
        Err(SdpError::NoUsableAudio) => Err((488, "Not Acceptable Here")),
        Err(_) => Err((400, "Malformed SDP")),
    }
}

/// A message as split by the parser, with what went wrong on the way.
struct RawMessage {
    line: MessageLine,
    headers: Headers,
    body: Bytes,
    buffer: Bytes,
    malformed_header: bool,
    body_truncated: bool,
}

/// Splits a message like ezk's transports do (PullParser, MessageLine, Line), but keeps going
/// past a malformed header line so that the message can still be answered with a 400.
fn parse_raw(bytes: &[u8]) -> Option<RawMessage> {
    let buffer = Bytes::copy_from_slice(bytes);
    let mut parser = PullParser::new(&buffer, 0);
    let mut line = None;
    let mut headers = Headers::new();
    let mut malformed_header = false;
    for item in &mut parser {
        let text = from_utf8(item.ok()?).ok()?;
        if line.is_none() {
            let (_, parsed) = MessageLine::parse(&buffer)(text).ok()?;
            line = Some(parsed);
        } else {
            match Line::parse(&buffer, text) {
                Ok((_, l)) if !l.name.as_print_str().is_empty() => headers.insert(l.name, l.value),
                _ => malformed_header = true,
            }
        }
    }
    let line = line?;
    let head_end = parser.head_end().min(buffer.len());
    let available = buffer.len() - head_end;
    let mut body_truncated = false;
    let body = match headers.try_get_named::<ContentLength>() {
        Some(Ok(len)) if len.0 <= available => buffer.slice(head_end..head_end + len.0),
        Some(Ok(_)) => {
            body_truncated = true;
            Bytes::new()
        }
        Some(Err(_)) => {
            malformed_header = true;
            Bytes::new()
        }
        None => buffer.slice(head_end..),
    };
    Some(RawMessage {
        line,
        headers,
        body,
        buffer,
        malformed_header,
        body_truncated,
    })
}

/// The headers every message must have, parsed.
struct BaseParts {
    vias: Vec<Via>,
    from: FromTo,
    to: FromTo,
    call_id: CallID,
    cseq: CSeq,
}

impl BaseParts {
    fn extract(headers: &Headers) -> Option<BaseParts> {
        let vias: Vec<Via> = headers.get_named().ok()?;
        if vias.is_empty() {
            return None;
        }
        Some(BaseParts {
            vias,
            from: headers.get(Name::FROM).ok()?,
            to: headers.get(Name::TO).ok()?,
            call_id: headers.get_named().ok()?,
            cseq: headers.get_named().ok()?,
        })
    }
}

/// Builds a response without a transaction (RFC 3261 8.2.6): Vias (the top one with
/// `received`/`rport`), From, To (with a To tag derived from the request, so retransmissions
/// get the same one), Call-ID and CSeq copied, plus `extra` headers.
fn stateless_response(
    base: &BaseParts,
    source: SocketAddr,
    status: u16,
    reason: &str,
    extra: &[(&str, &str)],
) -> Bytes {
    let mut vias = base.vias.clone();
    if let Some(top) = vias.first_mut() {
        let source_host: Host = source.ip().into();
        if top.sent_by.host != source_host {
            top.params.push_or_edit("received", source.ip().to_string());
        }
        if let Some(rport) = top.params.get_mut("rport") {
            rport.value = Some(source.port().to_string().into());
        }
    }
    let mut to = base.to.clone();
    if to.tag.is_none() {
        to.tag = Some(stateless_tag(base).into());
    }
    let mut headers = Headers::new();
    headers.insert_named(&vias);
    headers.insert_type(Name::FROM, &base.from);
    headers.insert_type(Name::TO, &to);
    headers.insert_named(&base.call_id);
    headers.insert_named(&base.cseq);
    let mut out = format!("SIP/2.0 {status} {reason}\r\n{headers}");
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(out)
}

fn stateless_tag(base: &BaseParts) -> String {
    let mut h = Sha256::new();
    h.update(base.call_id.0.as_bytes());
    h.update(b"|");
    if let Some(tag) = &base.from.tag {
        h.update(tag.as_bytes());
    }
    h.update(b"|");
    if let Some(branch) = base.vias.first().and_then(|v| v.params.get_val("branch")) {
        h.update(branch.as_bytes());
    }
    hex::encode(h.finalize().get(..8).unwrap_or_default())
}

/// The user part of a URI as text (before any `;` parameters), if any.
pub(crate) fn uri_user(uri: &SipUri) -> Option<String> {
    let user = match &uri.user_part {
        SipUriUserPart::Empty => return None,
        SipUriUserPart::User(u) => u.as_str(),
        SipUriUserPart::UserPw(up) => up.user.as_str(),
    };
    let user = user.split(';').next().unwrap_or("").trim();
    if user.is_empty() || user.len() > 64 {
        None
    } else {
        Some(user.to_string())
    }
}

/// Where a stream transport's next message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrame {
    /// More bytes are needed.
    Incomplete,
    /// `\r\n\r\n` keep-alive ping of this length (answer `\r\n`).
    KeepAlive(usize),
    /// Blank bytes (keep-alive answers) of this length to skip.
    Blank(usize),
    /// A message of this length.
    Message(usize),
    /// The stream cannot be framed (too large, bad Content-Length): close it.
    Invalid,
}

/// Frames the next message in a stream buffer (RFC 3261 18.3: the head ends with an empty
/// line, the body is Content-Length bytes; a missing Content-Length means no body).
pub fn stream_frame(buf: &[u8]) -> StreamFrame {
    if buf.starts_with(b"\r\n\r\n") {
        return StreamFrame::KeepAlive(4);
    }
    let blank = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if blank > 0 {
        // A lone CRLF may be the start of a ping: wait for more unless more followed.
        if blank == buf.len() && blank < 4 {
            return StreamFrame::Incomplete;
        }
        return StreamFrame::Blank(blank);
    }
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() > MAX_MESSAGE_SIZE {
            StreamFrame::Invalid
        } else {
            StreamFrame::Incomplete
        };
    };
    let mut content_length = 0usize;
    let head = buf.get(..head_end).unwrap_or_default();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let name = trim_ascii(name);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim_ascii(value.get(1..).unwrap_or_default());
            let Some(len) = from_utf8(value).ok().and_then(|v| v.parse::<usize>().ok()) else {
                return StreamFrame::Invalid;
            };
            content_length = len;
        }
    }
    let total = head_end.saturating_add(content_length);
    if total > MAX_MESSAGE_SIZE {
        StreamFrame::Invalid
    } else if buf.len() < total {
        StreamFrame::Incomplete
    } else {
        StreamFrame::Message(total)
    }
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
