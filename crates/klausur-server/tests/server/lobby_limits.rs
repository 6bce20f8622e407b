//! A crowd in the lobby drowns neither the moderator nor the server. 100 guests wait at most
//! (the next is told the lobby is full, and gets in once there is room again), and moderators
//! get the lobby list at most every half second instead of once per arriving guest: 600 guests
//! once sent a moderator 21 MB of lobby lists.

use std::net::Ipv4Addr;
use std::time::Duration;

use klausur_proto::{ClientMsg, EndReason, ErrorCode, SecurityProfile, ServerMsg};
use klausur_server::meeting::MAX_LOBBY;
use klausur_store::Role;

use crate::common::ws::{session_cookie, Client};
use crate::common::TestServer;

async fn guest_joins(srv: &TestServer, i: usize) -> (Client, ServerMsg) {
    let mut c = Client::connect_from(srv, Ipv4Addr::new(127, 0, 0, 2 + (i % 100) as u8)).await;
    c.send(&ClientMsg::Join {
        meeting_id: "lobbymeeting0001".into(),
        invite_token: None,
        display_name: Some(format!("Gast {i}")),
        rejoin_token: None,
        dial_in_ticket: None,
    })
    .await;
    let first = c.next().await;
    (c, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_in_the_lobby_is_bounded_and_sent_to_moderators_in_few_lists() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    srv.store
        .create_meeting(
            "lobbymeeting0001",
            "Rat",
            None,
            olga.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting");
    let cookie = session_cookie(&srv, "olga").await;
    let mut olga = Client::connect(&srv, Some(&cookie)).await;
    olga.join("lobbymeeting0001", None, None).await;

    let mut waiting = Vec::new();
    for i in 0..MAX_LOBBY {
        let (c, first) = guest_joins(&srv, i).await;
        assert!(
            matches!(first, ServerMsg::LobbyWait { .. }),
            "guest {i}: {first:?}"
        );
        waiting.push(c);
    }
    // One more finds the lobby full, with a message that says so.
    let (mut late, first) = guest_joins(&srv, MAX_LOBBY).await;
    match first {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(message.contains("full"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(
        late.next().await,
        ServerMsg::Ended {
            reason: EndReason::LobbyFull,
            ..
        }
    ));

    // The moderator got the full list in a few messages, not one per guest.
    let mut lists = 0;
    let mut bytes = 0;
    let first_id = loop {
        let m = olga.next().await;
        if let ServerMsg::LobbyChanged { lobby, .. } = &m {
            lists += 1;
            bytes += serde_json::to_string(&m).expect("json").len();
            if lobby.len() == MAX_LOBBY {
                break lobby[0].id.clone();
            }
        }
    };
    assert!(
        lists < MAX_LOBBY / 2,
        "{lists} lobby lists for {MAX_LOBBY} arrivals"
    );
    assert!(bytes < 2_000_000, "{bytes} bytes of lobby lists");

    // Once a moderator decides about one, there is room again.
    olga.send(&ClientMsg::Deny {
        participant_id: first_id,
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, first) = guest_joins(&srv, MAX_LOBBY + 1).await;
        if matches!(first, ServerMsg::LobbyWait { .. }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a denial: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
