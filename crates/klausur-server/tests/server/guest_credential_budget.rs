//! The guest-credential budget (issue 19, "Other defects"): requests for meetings that do not
//! exist or have ended no longer spend the budget of the real guests from that address (60
//! such requests used to block every real guest behind the same address for 15 minutes). They
//! count against a stricter budget of their own, so probing is still limited.
//!
//! Negative controls: real guests beyond their budget are still refused; another address is not
//! affected. Clients use distinct loopback source addresses (127.0.0.2, 127.0.0.3) as distinct
//! computers.

use std::net::IpAddr;

use klausur_proto::SecurityProfile;
use klausur_server::auth;
use klausur_server::identity::GUEST_FAILURES_PER_15MIN;
use klausur_store::Role;
use serde_json::{json, Value};

use crate::common::TestServer;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// Asks for a lobby guest's credential to `meeting`: status and body.
async fn guest_credential(srv: &TestServer, http: &reqwest::Client, meeting: &str) -> (u16, Value) {
    let device = klausur_e2ee::SigningKey::from_bytes(&[8; 32]).verifying_key();
    let resp = http
        .post(format!("{}/api/identity/credential", srv.base))
        .json(&json!({
            "device_key": hex::encode(device.to_bytes()),
            "meeting_id": meeting,
            "display_name": "Gustav",
        }))
        .send()
        .await
        .expect("credential");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn meeting(srv: &TestServer, organiser: i64) -> String {
    srv.store
        .create_meeting(
            &auth::new_meeting_id(),
            "Sprechstunde",
            None,
            organiser,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting")
        .id
}

#[tokio::test]
async fn probing_for_meetings_does_not_spend_the_real_guests_budget() {
    // The default budget: 60 guest credentials per address and 15 minutes.
    let srv = TestServer::start().await;
    let budget = srv.state.config.identity.guest_credentials_per_15min as usize;
    assert_eq!(budget, 60);
    let olga = srv.user("olga", Role::Staff).await;
    let open = meeting(&srv, olga.id).await;
    let ended = meeting(&srv, olga.id).await;
    srv.store
        .set_meeting_ended(&ended, chrono::Utc::now())
        .await
        .expect("end");

    let city = client_from("127.0.0.2");
    // More requests for meetings that do not exist (or have ended) than the whole budget of
    // real guests. The first ones say what is wrong; then they are limited on their own.
    let probes = budget + 1;
    let mut statuses = Vec::with_capacity(probes);
    for i in 0..probes {
        let target = if i == 0 {
            ended.clone()
        } else {
            format!("no-such-meeting-{i}")
        };
        let (status, v) = guest_credential(&srv, &city, &target).await;
        if status == 429 {
            assert_eq!(v["error"]["code"], "rate_limited", "{v}");
        }
        statuses.push(status);
    }

    // A real lobby guest from the same address still gets a credential.
    let (status, v) = guest_credential(&srv, &city, &open).await;
    assert_eq!(status, 200, "after {probes} probes {statuses:?}: {v}");
    assert!(v["credential"].is_string(), "{v}");

    // The probes said what was wrong until their own budget was spent.
    let failures = GUEST_FAILURES_PER_15MIN as usize;
    assert_eq!(statuses[0], 410, "an ended meeting: {statuses:?}");
    assert!(
        statuses[1..failures].iter().all(|s| *s == 404),
        "{statuses:?}"
    );
    assert!(
        statuses[failures..].iter().all(|s| *s == 429),
        "probing is limited: {statuses:?}"
    );

    // Negative control: the real guests' budget still holds.
    for i in 1..budget {
        let (status, v) = guest_credential(&srv, &city, &open).await;
        assert_eq!(status, 200, "guest {i}: {v}");
    }
    let (status, v) = guest_credential(&srv, &city, &open).await;
    assert_eq!(status, 429, "beyond the budget: {v}");
    assert_eq!(v["error"]["code"], "rate_limited");

    // Negative control: another address has budgets of its own.
    let elsewhere = client_from("127.0.0.3");
    let (status, v) = guest_credential(&srv, &elsewhere, "no-such-meeting").await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = guest_credential(&srv, &elsewhere, &open).await;
    assert_eq!(status, 200, "{v}");
}
