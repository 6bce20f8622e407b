//! A browser's MLS side in tests: a device with a credential from the server's identity CA,
//! and the signed claim of its leaf (`mls_member`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use klausur_e2ee::{CaVerifier, Member, MemberConfig, SignedCredential, SigningKey, VerifyingKey};
use klausur_proto::ClientMsg;
use serde_json::{json, Value};

use super::TestServer;

/// Now, as the MLS member takes it.
pub fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

/// `mls_member` for `m`'s leaf, signed for participant `pid` (with the GroupInfo if `creator`).
pub fn claim(m: &Member, pid: &str, creator: bool) -> ClientMsg {
    ClientMsg::MlsMember {
        leaf: m.leaf_index().expect("leaf"),
        epoch: m.epoch().expect("epoch"),
        signature: B64.encode(m.sign_leaf_claim(pid).expect("claim")),
        group_info: creator.then(|| B64.encode(m.group_info().expect("group info"))),
    }
}

/// A device: a fresh signing key, a credential from the server's CA for `body`, an MLS member.
pub async fn device(
    srv: &TestServer,
    http: &reqwest::Client,
    csrf: Option<&str>,
    body: Value,
) -> Member {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = SigningKey::from_bytes(&seed);
    let mut body = body;
    body["device_key"] = json!(hex::encode(key.verifying_key().to_bytes()));
    let mut req = http
        .post(format!("{}/api/identity/credential", srv.base))
        .json(&body);
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    let v: Value = req
        .send()
        .await
        .expect("credential request")
        .json()
        .await
        .expect("json");
    let cred = B64
        .decode(v["credential"].as_str().unwrap_or_else(|| panic!("{v}")))
        .expect("base64");
    let ca: [u8; 32] = hex::decode(v["ca_public_key"].as_str().expect("ca"))
        .expect("hex")
        .try_into()
        .expect("32");
    Member::new(
        SignedCredential::from_bytes(&cred).expect("credential"),
        key,
        CaVerifier {
            ca_public_key: VerifyingKey::from_bytes(&ca).expect("ca key"),
        },
        MemberConfig::default(),
    )
    .expect("member")
}
