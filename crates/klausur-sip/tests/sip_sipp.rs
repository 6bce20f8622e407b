//! The SIP endpoint against a real peer: Debian's sipp (package sip-tester) runs the scenarios
//! in tests/sipp/ against an endpoint on free loopback ports.

mod sip_support;

use std::time::Duration;

use klausur_sip::driver::sip::{
    ActiveCall, CallError, CallEvent, DigestAlgorithm, DigestConfig, EndReason, LocalMedia,
    MediaDirection, MediaFormat,
};
use sip_support::{
    accept_pcmu, answer_next, assert_passed, config, next_call, pcmu_answer, start, start_with,
    Gateway, Sipp, WAIT,
};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use zeroize::Zeroizing;

/// How `call` ends (changes of the remote media on the way are passed over).
async fn ended(call: &mut ActiveCall) -> EndReason {
    loop {
        match timeout(WAIT, call.next_event())
            .await
            .expect("an event in time")
        {
            CallEvent::Ended(reason) => return reason,
            CallEvent::RemoteMediaChanged(_) => continue,
        }
    }
}

/// `active` ends by `reason`, and the sipp run `sipp` that made the call passes.
async fn assert_ends(
    active: &mut ActiveCall,
    reason: EndReason,
    sipp: JoinHandle<i32>,
    what: &str,
) {
    assert_eq!(ended(active).await, reason, "{what}");
    assert_passed(sipp, what).await;
}

/// Runs `sipp` and answers its call with PCMU: the call ends with the caller's BYE and the
/// scenario passes.
async fn caller_hangs_up(gw: &mut Gateway, sipp: Sipp, what: &str) {
    let sipp = sipp.spawn();
    let mut active = answer_next(&mut gw.calls).await;
    assert_ends(&mut active, EndReason::RemoteHangup, sipp, what).await;
}

/// A sipp caller that waits for our BYE (uac_wait_bye.xml), answered with PCMU.
async fn caller_awaiting_bye(gw: &mut Gateway) -> (ActiveCall, JoinHandle<i32>) {
    let sipp = Sipp::new("uac_wait_bye.xml", gw.udp, 40).spawn();
    (answer_next(&mut gw.calls).await, sipp)
}

#[tokio::test]
async fn basic_call_the_caller_hangs_up() {
    let mut gw = start(config()).await;
    let sipp = Sipp::new("uac_basic.xml", gw.udp, 40)
        .arg("-d", "500")
        .spawn();

    let call = next_call(&mut gw.calls).await;
    assert_eq!(call.info().caller(), Some("+4930123456789"));
    assert_eq!(call.info().caller_suffix().as_deref(), Some("6789"));
    assert_eq!(call.info().called(), Some("100"));
    assert_eq!(call.info().source.ip().to_string(), "127.0.0.1");
    assert_eq!(call.info().transport, "UDP");
    let offer = call.offer().expect("offer").clone();
    assert_eq!(offer.rtp_addr.ip().to_string(), "127.0.0.1");
    let names: Vec<_> = offer
        .formats
        .iter()
        .map(|f| (f.payload_type, f.encoding.as_str(), f.clock_rate))
        .collect();
    assert_eq!(
        names,
        vec![
            (0, "PCMU", 8000),
            (8, "PCMA", 8000),
            (101, "telephone-event", 8000)
        ]
    );
    assert_eq!(offer.formats[2].fmtp.as_deref(), Some("0-16"));
    assert_eq!(offer.ptime, Some(20));

    let mut active = accept_pcmu(call).await;
    assert_eq!(active.codec(), &MediaFormat::pcmu());
    assert_eq!(active.telephone_event().map(|f| f.payload_type), Some(101));
    assert_eq!(active.remote().rtp_addr, offer.rtp_addr);
    assert_eq!(gw.endpoint.active_calls(), 1);

    let what = "sipp's scenario passed";
    assert_ends(&mut active, EndReason::RemoteHangup, sipp, what).await;
    // The slot is free again once the task finished.
    timeout(WAIT, async {
        while gw.endpoint.active_calls() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("call slot released");
    assert_eq!(gw.endpoint.stats().calls_answered, 1);
}

#[tokio::test]
async fn basic_call_over_tcp() {
    let mut gw = start(config()).await;
    let sipp = Sipp::new("uac_basic.xml", gw.tcp, 40)
        .tcp()
        .arg("-d", "300")
        .spawn();
    let call = next_call(&mut gw.calls).await;
    assert_eq!(call.info().transport, "TCP");
    let mut active = accept_pcmu(call).await;
    assert_ends(&mut active, EndReason::RemoteHangup, sipp, "over TCP").await;
}

#[tokio::test]
async fn the_gateway_hangs_up() {
    let mut gw = start(config()).await;
    let (active, sipp) = caller_awaiting_bye(&mut gw).await;
    timeout(WAIT, active.hangup())
        .await
        .expect("hangup in time")
        .expect("BYE answered");
    assert_passed(sipp, "sipp got our BYE").await;
}

#[tokio::test]
async fn dropping_the_call_hangs_up() {
    let mut gw = start(config()).await;
    let (active, sipp) = caller_awaiting_bye(&mut gw).await;
    drop(active);
    assert_passed(sipp, "sipp got our BYE").await;
}

#[tokio::test]
async fn source_outside_the_allow_list_gets_403() {
    let mut gw = start(config()).await;
    let code = Sipp::new("uac_403.xml", gw.udp, 20)
        .arg("-i", "127.0.0.2")
        .run()
        .await;
    assert_eq!(code, 0, "sipp from 127.0.0.2 got 403");
    assert!(gw.calls.try_recv().is_err(), "no call was offered");
    let stats = gw.endpoint.stats();
    assert_eq!(stats.calls_offered, 0);
    assert!(stats.not_allowed >= 1, "{stats:?}");

    // Negative control: the same scenario from the allowed address does not get 403.
    let control = Sipp::new("uac_403.xml", gw.udp, 10).spawn();
    let call = next_call(&mut gw.calls).await;
    call.reject(486).await.expect("rejected");
    assert_ne!(
        control.await.expect("sipp task"),
        0,
        "the allowed source is not refused"
    );
}

/// An endpoint that asks for the digest of user "trunk", password "correct horse".
async fn start_with_digest(algorithms: Vec<DigestAlgorithm>) -> Gateway {
    start_with(|c| {
        c.digest = Some(DigestConfig {
            realm: "klausur".into(),
            user: "trunk".into(),
            password: Zeroizing::new("correct horse".into()),
            algorithms,
        })
    })
    .await
}

#[tokio::test]
async fn digest_authentication() {
    let mut gw = start_with_digest(vec![DigestAlgorithm::Md5]).await;

    // Without credentials: 401 and nothing else.
    assert_eq!(Sipp::new("uac_401.xml", gw.udp, 20).run().await, 0);
    assert!(gw.calls.try_recv().is_err());

    // With the right credentials the call goes through.
    let sipp = Sipp::new("uac_auth.xml", gw.udp, 40)
        .auth("trunk", "correct horse")
        .arg("-d", "300");
    caller_hangs_up(&mut gw, sipp, "the right credentials").await;

    // Negative control: a wrong password gets 403 and no call.
    let code = Sipp::new("uac_auth_wrong.xml", gw.udp, 20)
        .auth("trunk", "wrong horse")
        .run()
        .await;
    assert_eq!(code, 0, "sipp with the wrong password got 403");
    assert!(gw.calls.try_recv().is_err());
    let stats = gw.endpoint.stats();
    assert!(stats.auth_challenges >= 3, "{stats:?}");
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    assert_eq!(stats.calls_offered, 1, "{stats:?}");
}

#[tokio::test]
async fn digest_authentication_with_two_challenges() {
    // Both algorithms challenged (two WWW-Authenticate headers); sipp knows only MD5 and
    // reads the first.
    let mut gw = start_with_digest(vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256]).await;
    let sipp = Sipp::new("uac_auth.xml", gw.udp, 40)
        .auth("trunk", "correct horse")
        .arg("-d", "100");
    caller_hangs_up(&mut gw, sipp, "MD5 of the two challenges").await;
}

#[tokio::test]
async fn invite_flood_gets_503_while_a_call_carries_on() {
    let mut gw = start_with(|c| {
        c.limits.invite_burst = 3;
        c.limits.invites_per_source_per_minute = 60;
    })
    .await;

    // An established call that lasts through the flood and ends with the caller's BYE.
    let first = Sipp::new("uac_basic.xml", gw.udp, 60)
        .arg("-d", "6000")
        .spawn();
    let mut active = answer_next(&mut gw.calls).await;

    // The flood: 30 INVITEs at 15 per second from the same address. Calls that get through
    // the rate limit are rejected by us (480), the rest get 503 from the limiter.
    let flood = Sipp::new("uac_flood.xml", gw.udp, 40)
        .arg("-m", "30")
        .arg("-r", "15")
        .arg("-l", "30")
        .spawn();
    let mut calls = gw.calls;
    let rejecter = tokio::spawn(async move {
        let mut n = 0;
        while let Some(call) = calls.recv().await {
            n += 1;
            let _ = call.reject(480).await;
        }
        n
    });
    assert_eq!(
        flood.await.expect("flood task"),
        0,
        "every flood INVITE got 480 or 503"
    );
    let stats = gw.endpoint.stats();
    assert!(
        stats.rate_limited >= 20,
        "most of the flood was limited: {stats:?}"
    );

    // The established call was not disturbed: the caller's BYE ends it normally.
    let what = "the established call";
    assert_ends(&mut active, EndReason::RemoteHangup, first, what).await;
    drop(gw.endpoint);
    let let_through = timeout(WAIT, rejecter)
        .await
        .expect("rejecter ends")
        .expect("task");
    assert!(
        let_through <= 8,
        "{let_through} flood calls got through the limiter"
    );
}

/// A REFER before the ACK (UDP may deliver them so) and one right after it: both get 405 although
/// the call is not yet established on our side for the first and only just for the second
/// (before, the usage that answers came only once the ACK was in, and such a REFER got 404).
#[tokio::test]
async fn refer_in_a_call_is_refused_and_the_call_goes_on() {
    let mut gw = start(config()).await;
    let sipp = Sipp::new("uac_refer.xml", gw.udp, 40);
    caller_hangs_up(
        &mut gw,
        sipp,
        "both REFERs (before and after the ACK) got 405, BYE got 200",
    )
    .await;
}

/// A new offer by UPDATE before the ACK gets 491 (Request Pending: the INVITE's own offer and
/// answer are not done), the same offer in the established call 200.
#[tokio::test]
async fn an_update_offer_before_the_ack_gets_491_and_after_it_200() {
    let mut gw = start(config()).await;
    let sipp = Sipp::new("uac_update.xml", gw.udp, 40);
    caller_hangs_up(
        &mut gw,
        sipp,
        "UPDATE before the ACK got 491, after it 200, BYE got 200",
    )
    .await;
}

#[tokio::test]
async fn concurrent_call_limit_gives_486() {
    let mut gw = start_with(|c| c.limits.max_calls = 1).await;
    let first = Sipp::new("uac_basic.xml", gw.udp, 60)
        .arg("-d", "4000")
        .spawn();
    let mut active = answer_next(&mut gw.calls).await;

    assert_eq!(
        Sipp::new("uac_486.xml", gw.udp, 20).run().await,
        0,
        "second call got 486"
    );
    assert!(gw.calls.try_recv().is_err());
    assert_ends(
        &mut active,
        EndReason::RemoteHangup,
        first,
        "the first call",
    )
    .await;
    assert!(gw.endpoint.stats().busy >= 1);
}

#[tokio::test]
async fn call_duration_limit_sends_bye() {
    let mut gw = start_with(|c| c.limits.max_call_duration = Duration::from_secs(2)).await;
    let (mut active, sipp) = caller_awaiting_bye(&mut gw).await;
    assert_ends(
        &mut active,
        EndReason::DurationLimit,
        sipp,
        "sipp got our BYE",
    )
    .await;
}

#[tokio::test]
async fn late_offer_gets_our_offer_and_the_ack_answer() {
    let mut gw = start(config()).await;
    let sipp = Sipp::new("uac_late_offer.xml", gw.udp, 40)
        .arg("-d", "300")
        .spawn();
    let call = next_call(&mut gw.calls).await;
    assert!(call.offer().is_none(), "late offer");
    let ours = LocalMedia::new(
        "127.0.0.1:40002".parse().expect("addr"),
        vec![
            MediaFormat::pcmu(),
            MediaFormat::pcma(),
            MediaFormat::telephone_event(101, 8000),
        ],
    );
    let mut active = timeout(WAIT, call.accept(ours))
        .await
        .expect("in time")
        .expect("established");
    assert_eq!(
        active.codec(),
        &MediaFormat::pcma(),
        "the answer chose PCMA"
    );
    assert_eq!(active.telephone_event().map(|f| f.payload_type), Some(101));
    let remote = active.remote();
    assert_eq!(remote.formats[0].encoding, "PCMA");
    assert_ends(&mut active, EndReason::RemoteHangup, sipp, "late offer").await;
}

#[tokio::test]
async fn reinvite_hold_is_answered_and_reported() {
    let mut gw = start(config()).await;
    let sipp = Sipp::new("uac_reinvite_hold.xml", gw.udp, 40).spawn();
    let mut active = answer_next(&mut gw.calls).await;
    match timeout(WAIT, active.next_event()).await.expect("event") {
        CallEvent::RemoteMediaChanged(remote) => {
            assert_eq!(remote.rtp_addr.port(), 7070);
            assert_eq!(remote.direction, MediaDirection::SendOnly);
            assert!(remote.on_hold());
        }
        other => panic!("expected a media change, got {other:?}"),
    }
    let what = "our answer said recvonly";
    assert_ends(&mut active, EndReason::RemoteHangup, sipp, what).await;
}

#[tokio::test]
async fn cancel_before_the_decision() {
    let mut gw = start(config()).await;
    let sipp = Sipp::new("uac_cancel.xml", gw.udp, 30).spawn();
    let mut call = next_call(&mut gw.calls).await;
    timeout(WAIT, call.cancelled())
        .await
        .expect("the CANCEL is noticed");
    let answer = pcmu_answer(&call);
    assert_eq!(call.accept(answer).await.err(), Some(CallError::Cancelled));
    assert_passed(sipp, "CANCEL got 200, INVITE 487").await;
    assert_eq!(gw.endpoint.active_calls(), 0);
}

#[tokio::test]
async fn undecided_call_gets_480() {
    let mut gw = start_with(|c| c.limits.decision_timeout = Duration::from_secs(1)).await;
    // uac_flood.xml takes 480 (or 503) for an answer.
    let sipp = Sipp::new("uac_flood.xml", gw.udp, 30).spawn();
    let call = next_call(&mut gw.calls).await;
    assert_passed(sipp, "480 after the decision timeout").await;
    let answer = pcmu_answer(&call);
    assert_eq!(call.accept(answer).await.err(), Some(CallError::Gone));
}

#[tokio::test]
async fn shutdown_ends_calls_with_bye() {
    let mut gw = start(config()).await;
    let (mut active, sipp) = caller_awaiting_bye(&mut gw).await;
    timeout(Duration::from_secs(45), gw.endpoint.shutdown())
        .await
        .expect("shutdown in time");
    assert_ends(&mut active, EndReason::Shutdown, sipp, "sipp got our BYE").await;
    // The channel of incoming calls is closed.
    assert!(timeout(WAIT, gw.calls.recv())
        .await
        .expect("closed")
        .is_none());
}
