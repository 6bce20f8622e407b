//! Server side of SIP digest authentication (RFC 3261 22, RFC 2617, RFC 7616 algorithms as
//! adopted for SIP by RFC 8760): challenges and the check of the trunk's answer.
//!
//! Written here because ezk-sip-auth implements only the client side (it answers challenges;
//! it has no nonce issuing or response checking). The `Authorization` header itself is parsed by
//! ezk-sip-types.
//!
//! Sans-IO: time is an argument (`now`, any monotonic clock the caller keeps). Nonces are
//! stateless: hex of `timestamp || random || HMAC-SHA256(key, timestamp || random || source IP)`
//! truncated, so a nonce is bound to the address it was issued to and expires after
//! [`NONCE_LIFETIME`]; an expired but genuine nonce gets a `stale=true` challenge. Replays are
//! refused by remembering, per nonce used successfully, the highest `nc` (a nonce without `qop`
//! is good once). Responses and user names are compared in constant time. Algorithms: MD5,
//! MD5-sess, SHA-256, SHA-256-sess; qop `auth`, `auth-int`, or none (RFC 2069 style).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{
    Algorithm, AlgorithmValue, AuthResponse, DigestResponse, QopOption, Username,
};
use ezk_sip_types::header::HeaderParse;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// How long a nonce may be used.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// At most this many nonces are remembered for replay protection; beyond it, new successful
/// answers are refused until old nonces expire (a flood of valid logins is not a use case).
const MAX_REMEMBERED: usize = 10_000;

/// A digest hash algorithm offered in challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &[u8]) -> String {
        match self {
            DigestAlgorithm::Md5 => hex::encode(Md5::digest(data)),
            DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(data)),
        }
    }
}

/// The credentials the trunk must prove, and the algorithms to challenge with (first =
/// preferred; RFC 8760 puts SHA-256 before MD5).
#[derive(Clone)]
pub struct DigestConfig {
    pub realm: String,
    pub user: String,
    pub password: Zeroizing<String>,
    pub algorithms: Vec<DigestAlgorithm>,
}

impl std::fmt::Debug for DigestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestConfig")
            .field("realm", &self.realm)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a request's `Authorization` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestVerdict {
    /// A valid answer to one of our challenges.
    Authorized,
    /// No answer for our realm: challenge.
    Missing,
    /// A genuine nonce of ours that expired: challenge again with `stale=true`.
    Stale,
    /// Wrong credentials, a forged or replayed nonce, or a malformed header: refuse.
    Invalid(&'static str),
}

/// Issues challenges and checks answers. One per endpoint.
pub struct DigestServer {
    config: DigestConfig,
    key: Zeroizing<[u8; 32]>,
    /// nonce -> (issue time, highest nc seen; `None` for a nonce used without qop).
    used: HashMap<String, (Duration, Option<u32>)>,
}

type HmacSha256 = Hmac<Sha256>;

impl DigestServer {
    /// A server with a fresh random nonce key.
    pub fn new(config: DigestConfig) -> DigestServer {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::thread_rng(), &mut key[..]);
        DigestServer::with_key(config, key)
    }

    /// A server with a given nonce key (tests).
    pub fn with_key(config: DigestConfig, key: Zeroizing<[u8; 32]>) -> DigestServer {
        DigestServer {
            config,
            key,
            used: HashMap::new(),
        }
    }

    /// `WWW-Authenticate` header values for a 401 to a request from `source`.
    pub fn challenges(&self, now: Duration, source: IpAddr, stale: bool) -> Vec<String> {
        let nonce = self.issue_nonce(now, source, rand::random());
        self.config
            .algorithms
            .iter()
            .map(|alg| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"{}",
                    self.config.realm,
                    nonce,
                    alg.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    fn nonce_mac(&self, ts: u64, salt: u64, source: IpAddr) -> Vec<u8> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.key[..]) {
            Ok(mac) => mac,
            Err(_) => return Vec::new(),
        };
        mac.update(&ts.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        match source {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .take(16)
            .copied()
            .collect()
    }

    fn issue_nonce(&self, now: Duration, source: IpAddr, salt: u64) -> String {
        let ts = now.as_secs();
        let mut raw = Vec::with_capacity(32);
        raw.extend_from_slice(&ts.to_be_bytes());
        raw.extend_from_slice(&salt.to_be_bytes());
        raw.extend_from_slice(&self.nonce_mac(ts, salt, source));
        hex::encode(raw)
    }

    /// `Some(issue time)` if `nonce` is one of ours for `source`.
    fn check_nonce(&self, nonce: &str, source: IpAddr) -> Option<Duration> {
        let raw = hex::decode(nonce).ok()?;
        if raw.len() != 32 {
            return None;
        }
        let ts = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
        let salt = u64::from_be_bytes(raw.get(8..16)?.try_into().ok()?);
        let expected = self.nonce_mac(ts, salt, source);
        if bool::from(expected.ct_eq(raw.get(16..)?)) {
            Some(Duration::from_secs(ts))
        } else {
            None
        }
    }

    /// Checks the `Authorization` header values of a request (`method`, `body` for
    /// `qop=auth-int`) from `source`.
    pub fn verify(
        &mut self,
        now: Duration,
        source: IpAddr,
        method: &str,
        body: &[u8],
        authorization: &[BytesStr],
    ) -> DigestVerdict {
        self.used
            .retain(|_, (issued, _)| now.saturating_sub(*issued) <= NONCE_LIFETIME);
        let mut ours = None;
        for value in authorization {
            // ezk-sip-types slices the algorithm token by byte index and would panic on a
            // multi-byte character there; SIP header values of this kind are ASCII anyway.
            if !value.as_str().is_ascii() {
                return DigestVerdict::Invalid("non-ASCII Authorization header");
            }
            let bytes: &Bytes = value.as_ref();
            match AuthResponse::parse(bytes, value.as_str()) {
                Ok((_, AuthResponse::Digest(d))) if d.realm.as_str() == self.config.realm => {
                    ours = Some(d);
                    break;
                }
                Ok(_) => {}
                Err(_) => return DigestVerdict::Invalid("malformed Authorization header"),
            }
        }
        let Some(response) = ours else {
            return DigestVerdict::Missing;
        };
        self.verify_response(now, source, method, body, &response)
    }

    fn verify_response(
        &mut self,
        now: Duration,
        source: IpAddr,
        method: &str,
        body: &[u8],
        r: &DigestResponse,
    ) -> DigestVerdict {
        let Some(issued) = self.check_nonce(r.nonce.as_str(), source) else {
            return DigestVerdict::Invalid("unknown nonce");
        };
        if now.saturating_sub(issued) > NONCE_LIFETIME || issued > now + Duration::from_secs(5) {
            return DigestVerdict::Stale;
        }
        let (alg, sess) = match &r.algorithm {
            Algorithm::AlgorithmValue(AlgorithmValue::MD5) => (DigestAlgorithm::Md5, false),
            Algorithm::AlgorithmValue(AlgorithmValue::MD5Sess) => (DigestAlgorithm::Md5, true),
            Algorithm::AlgorithmValue(AlgorithmValue::SHA256) => (DigestAlgorithm::Sha256, false),
            Algorithm::AlgorithmValue(AlgorithmValue::SHA256Sess) => {
                (DigestAlgorithm::Sha256, true)
            }
            _ => return DigestVerdict::Invalid("unsupported algorithm"),
        };
        if !self.config.algorithms.contains(&alg) {
            return DigestVerdict::Invalid("algorithm not offered");
        }
        if r.userhash {
            return DigestVerdict::Invalid("userhash not supported");
        }
        let Username::Username(user) = &r.username else {
            return DigestVerdict::Invalid("encoded user name not supported");
        };
        let user_ok: bool = user.as_bytes().ct_eq(self.config.user.as_bytes()).into();

        let expected = compute_response(
            alg,
            sess,
            &ResponseInput {
                user: user.as_str(),
                realm: &self.config.realm,
                password: &self.config.password,
                nonce: r.nonce.as_str(),
                method,
                uri: r.uri.as_str(),
                body,
                qop: r.qop_response.as_ref().map(|q| QopInput {
                    qop: &q.qop,
                    nc: q.nc,
                    cnonce: q.cnonce.as_str(),
                }),
            },
        );
        let Some(expected) = expected else {
            return DigestVerdict::Invalid("unsupported qop");
        };
        let given = r.response.as_str().to_ascii_lowercase();
        let response_ok: bool = expected.as_bytes().ct_eq(given.as_bytes()).into();
        if !(user_ok & response_ok) {
            return DigestVerdict::Invalid("wrong credentials");
        }

        // Replay protection.
        let nc = r.qop_response.as_ref().map(|q| q.nc);
        match self.used.get_mut(r.nonce.as_str()) {
            Some((_, last)) => match (nc, *last) {
                (Some(nc), Some(prev)) if nc > prev => *last = Some(nc),
                _ => return DigestVerdict::Invalid("replayed nonce"),
            },
            None => {
                if self.used.len() >= MAX_REMEMBERED {
                    return DigestVerdict::Invalid("too many nonces in use");
                }
                self.used.insert(r.nonce.as_str().to_string(), (issued, nc));
            }
        }
        DigestVerdict::Authorized
    }
}

/// The qop part of a digest response.
pub(crate) struct QopInput<'a> {
    pub(crate) qop: &'a QopOption,
    pub(crate) nc: u32,
    pub(crate) cnonce: &'a str,
}

/// Everything a digest response is computed from.
pub(crate) struct ResponseInput<'a> {
    pub(crate) user: &'a str,
    pub(crate) realm: &'a str,
    pub(crate) password: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) method: &'a str,
    pub(crate) uri: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) qop: Option<QopInput<'a>>,
}

/// The expected `response` value (lower-case hex); `None` for an unknown qop.
pub(crate) fn compute_response(
    alg: DigestAlgorithm,
    sess: bool,
    i: &ResponseInput<'_>,
) -> Option<String> {
    let mut ha1 = alg.hash(format!("{}:{}:{}", i.user, i.realm, i.password).as_bytes());
    if sess {
        let cnonce = i.qop.as_ref().map(|q| q.cnonce).unwrap_or("");
        ha1 = alg.hash(format!("{ha1}:{}:{cnonce}", i.nonce).as_bytes());
    }
    let ha2 = match i.qop.as_ref().map(|q| q.qop) {
        None | Some(QopOption::Auth) => alg.hash(format!("{}:{}", i.method, i.uri).as_bytes()),
        Some(QopOption::AuthInt) => {
            alg.hash(format!("{}:{}:{}", i.method, i.uri, alg.hash(i.body)).as_bytes())
        }
        Some(QopOption::Other(_)) => return None,
    };
    Some(match &i.qop {
        None => alg.hash(format!("{ha1}:{}:{ha2}", i.nonce).as_bytes()),
        Some(q) => alg.hash(
            format!(
                "{ha1}:{}:{:08x}:{}:{}:{ha2}",
                i.nonce, q.nc, q.cnonce, q.qop
            )
            .as_bytes(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_input<'a>(
        realm: &'a str,
        password: &'a str,
        nonce: &'a str,
        cnonce: &'a str,
    ) -> ResponseInput<'a> {
        ResponseInput {
            user: "Mufasa",
            realm,
            password,
            nonce,
            method: "GET",
            uri: "/dir/index.html",
            body: b"",
            qop: Some(QopInput {
                qop: &QopOption::Auth,
                nc: 1,
                cnonce,
            }),
        }
    }

    #[test]
    fn rfc2617_md5_example() {
        let i = rfc_input(
            "testrealm@host.com",
            "Circle Of Life",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "0a4f113b",
        );
        assert_eq!(
            compute_response(DigestAlgorithm::Md5, false, &i).as_deref(),
            Some("6629fae49393a05397450978507c4ef1")
        );
    }

    #[test]
    fn rfc7616_md5_and_sha256_examples() {
        let i = rfc_input(
            "http-auth@example.org",
            "Circle of Life",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert_eq!(
            compute_response(DigestAlgorithm::Md5, false, &i).as_deref(),
            Some("8ca523f5e9506fed4657c9700eebdbec")
        );
        assert_eq!(
            compute_response(DigestAlgorithm::Sha256, false, &i).as_deref(),
            Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
    }

    fn server(algs: Vec<DigestAlgorithm>) -> DigestServer {
        DigestServer::with_key(
            DigestConfig {
                realm: "klausur".into(),
                user: "trunk".into(),
                password: Zeroizing::new("s3cret".into()),
                algorithms: algs,
            },
            Zeroizing::new([7u8; 32]),
        )
    }

    fn nonce_of(challenge: &str) -> String {
        let start = challenge.find("nonce=\"").expect("nonce") + 7;
        let rest = &challenge[start..];
        rest[..rest.find('"').expect("end")].to_string()
    }

    fn answer(alg: DigestAlgorithm, password: &str, nonce: &str, nc: u32) -> BytesStr {
        let i = ResponseInput {
            user: "trunk",
            realm: "klausur",
            password,
            nonce,
            method: "INVITE",
            uri: "sip:100@127.0.0.1",
            body: b"",
            qop: Some(QopInput {
                qop: &QopOption::Auth,
                nc,
                cnonce: "abc",
            }),
        };
        let resp = compute_response(alg, false, &i).expect("known qop");
        BytesStr::from(format!(
            "Digest username=\"trunk\", realm=\"klausur\", nonce=\"{nonce}\", \
             uri=\"sip:100@127.0.0.1\", response=\"{resp}\", algorithm={}, qop=auth, \
             nc={nc:08x}, cnonce=\"abc\"",
            alg.name()
        ))
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn challenge_answer_and_negative_controls() {
        let mut s = server(vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]);
        let now = Duration::from_secs(1000);
        let ch = s.challenges(now, IP, false);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256"));
        let nonce = nonce_of(&ch[0]);
        assert_eq!(
            s.verify(now, IP, "INVITE", b"", &[]),
            DigestVerdict::Missing
        );
        // Wrong password.
        let wrong = answer(DigestAlgorithm::Sha256, "guess", &nonce, 1);
        assert!(matches!(
            s.verify(now, IP, "INVITE", b"", &[wrong]),
            DigestVerdict::Invalid(_)
        ));
        // Right password, SHA-256 and MD5.
        let good = answer(DigestAlgorithm::Sha256, "s3cret", &nonce, 1);
        assert_eq!(
            s.verify(now, IP, "INVITE", b"", std::slice::from_ref(&good)),
            DigestVerdict::Authorized
        );
        // The same nc again is a replay; a higher nc is fine.
        assert!(matches!(
            s.verify(now, IP, "INVITE", b"", &[good]),
            DigestVerdict::Invalid("replayed nonce")
        ));
        let next = answer(DigestAlgorithm::Md5, "s3cret", &nonce, 2);
        assert_eq!(
            s.verify(now, IP, "INVITE", b"", &[next]),
            DigestVerdict::Authorized
        );
        // A nonce issued to another address does not count.
        let other = nonce_of(&s.challenges(now, "127.0.0.2".parse().expect("ip"), false)[0]);
        let foreign = answer(DigestAlgorithm::Sha256, "s3cret", &other, 1);
        assert!(matches!(
            s.verify(now, IP, "INVITE", b"", &[foreign]),
            DigestVerdict::Invalid("unknown nonce")
        ));
        // An expired nonce is stale.
        let fresh = nonce_of(&s.challenges(now, IP, false)[0]);
        let late = answer(DigestAlgorithm::Sha256, "s3cret", &fresh, 1);
        assert_eq!(
            s.verify(
                now + NONCE_LIFETIME + Duration::from_secs(1),
                IP,
                "INVITE",
                b"",
                &[late]
            ),
            DigestVerdict::Stale
        );
        // Garbage and non-ASCII never panic.
        for junk in [
            "Digest",
            "Digest realm=klausur",
            "Digest algorithm=AKAé-MD5, realm=\"klausur\"",
            "Basic abc",
        ] {
            let v = s.verify(now, IP, "INVITE", b"", &[BytesStr::from(junk)]);
            assert_ne!(v, DigestVerdict::Authorized, "{junk}");
        }
    }

    #[test]
    fn md5_only_server_refuses_sha256_answer() {
        let mut s = server(vec![DigestAlgorithm::Md5]);
        let now = Duration::from_secs(50);
        let nonce = nonce_of(&s.challenges(now, IP, false)[0]);
        let sha = answer(DigestAlgorithm::Sha256, "s3cret", &nonce, 1);
        assert!(matches!(
            s.verify(now, IP, "INVITE", b"", &[sha]),
            DigestVerdict::Invalid("algorithm not offered")
        ));
    }

    #[test]
    fn ezk_client_answers_are_accepted() {
        use ezk_sip_auth::{
            ClientAuthenticator, DigestAuthenticator, DigestCredentials, DigestUser, RequestParts,
            ResponseParts,
        };
        use ezk_sip_types::msg::{RequestLine, StatusLine};
        use ezk_sip_types::{Headers, Method, Name, StatusCode};

        for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            let mut s = server(vec![alg]);
            let now = Duration::from_secs(77);
            let mut challenge_headers = Headers::new();
            for c in s.challenges(now, IP, false) {
                challenge_headers.insert(Name::WWW_AUTHENTICATE, c);
            }
            let mut creds = DigestCredentials::new();
            creds.add_for_realm("klausur", DigestUser::new("trunk", "s3cret"));
            let mut client = DigestAuthenticator::new(creds);
            let line = RequestLine {
                method: Method::INVITE,
                uri: "sip:100@127.0.0.1".parse().expect("uri"),
            };
            let req_headers = Headers::new();
            client
                .handle_rejection(
                    RequestParts {
                        line: &line,
                        headers: &req_headers,
                        body: b"",
                    },
                    ResponseParts {
                        line: &StatusLine {
                            code: StatusCode::UNAUTHORIZED,
                            reason: None,
                        },
                        headers: &challenge_headers,
                        body: b"",
                    },
                )
                .expect("client answers");
            let mut authorized = Headers::new();
            client.authorize_request(&mut authorized);
            let values: Vec<BytesStr> = authorized.get_raw(&Name::AUTHORIZATION).cloned().collect();
            assert_eq!(values.len(), 1);
            assert_eq!(
                s.verify(now, IP, "INVITE", b"", &values),
                DigestVerdict::Authorized,
                "{alg:?}"
            );
        }
    }
}
