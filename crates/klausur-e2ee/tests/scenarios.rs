//! Group scenarios: membership changes, frame protection, credential checks, grace period.

use std::time::Duration;

use klausur_e2ee::{
    CaVerifier, CredentialError, E2eeError, Event, FrameError, IdentityCa, Member, MemberConfig,
    ParticipantKind, SignedCredential, SigningKey, StreamId,
};

const T0: u64 = 1_700_000_000;

fn now(secs: u64) -> Duration {
    Duration::from_secs(T0 + secs)
}

struct Pki {
    ca: IdentityCa,
    evil: IdentityCa,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: IdentityCa::new(SigningKey::from_bytes(&[1; 32])),
            evil: IdentityCa::new(SigningKey::from_bytes(&[2; 32])),
        }
    }

    fn verifier(&self) -> CaVerifier {
        CaVerifier {
            ca_public_key: self.ca.public_key(),
        }
    }

    fn credential(
        &self,
        ca: &IdentityCa,
        name: &str,
        dev: &SigningKey,
        nb: u64,
        na: u64,
    ) -> SignedCredential {
        ca.issue(
            &format!("user-{name}"),
            name,
            ParticipantKind::Staff,
            &dev.verifying_key(),
            nb,
            na,
        )
        .expect("issue")
    }

    /// A member with a valid credential and the strict CA verifier.
    fn member(&self, name: &str, seed: u8) -> Member {
        self.member_with(name, seed, &self.ca, T0 - 60, T0 + 3600, true)
    }

    fn member_with(
        &self,
        name: &str,
        seed: u8,
        ca: &IdentityCa,
        nb: u64,
        na: u64,
        strict: bool,
    ) -> Member {
        let dev = SigningKey::from_bytes(&[seed; 32]);
        let cred = self.credential(ca, name, &dev, nb, na);
        if strict {
            Member::new(cred, dev, self.verifier(), MemberConfig::default()).expect("member")
        } else {
            // A compromised / buggy client that accepts any credential.
            let accept_all =
                |_: &SignedCredential, _: Duration| -> Result<(), CredentialError> { Ok(()) };
            Member::new(cred, dev, accept_all, MemberConfig::default()).expect("member")
        }
    }
}

fn expect_epoch_change(ev: Event) -> klausur_e2ee::EpochChange {
    match ev {
        Event::EpochChanged(c) => c,
        other => panic!("expected epoch change, got {other:?}"),
    }
}

fn assert_agree(members: &[&Member]) {
    let ea = members[0].epoch_authenticator().expect("ea");
    let code = members[0].security_code().expect("code");
    let epoch = members[0].epoch().expect("epoch");
    let roster = members[0].roster().expect("roster");
    for m in members {
        assert_eq!(m.epoch().expect("epoch"), epoch);
        assert_eq!(m.epoch_authenticator().expect("ea"), ea);
        assert_eq!(m.security_code().expect("code"), code);
        assert_eq!(m.roster().expect("roster"), roster);
    }
    assert_eq!(roster.len(), members.len());
}

fn is_code_format(code: &str) -> bool {
    let groups: Vec<&str> = code.split(' ').collect();
    groups.len() == 5
        && groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn membership_lifecycle() {
    let pki = Pki::new();
    let mut a = pki.member("ana", 10);
    let mut b = pki.member("ben", 11);
    let mut c = pki.member("cem", 12);
    let mut codes = Vec::new();

    // Three members form a group.
    a.create_group(b"meeting-1", now(0)).expect("create");
    codes.push(a.security_code().expect("code"));
    let out = a
        .add(
            &[b.key_package().expect("kp"), c.key_package().expect("kp")],
            now(1),
        )
        .expect("add");
    let change = a.merge_pending_commit(now(1)).expect("merge");
    assert_eq!(change.added.len(), 2);
    let welcome = out.welcome.expect("welcome");
    b.join_from_welcome(&welcome, now(1)).expect("b joins");
    c.join_from_welcome(&welcome, now(1)).expect("c joins");
    assert_agree(&[&a, &b, &c]);
    assert!(is_code_format(&a.security_code().expect("code")));
    codes.push(a.security_code().expect("code"));

    // A frame from before the next Add.
    let old_frame = a
        .encrypt_frame(StreamId::CAMERA, b"vp8", b"frame before add")
        .expect("enc");
    assert_eq!(
        b.decrypt_frame(&old_frame, now(2)).expect("dec").payload,
        b"frame before add"
    );

    // A fourth and fifth member, batched into one commit, committed by B.
    let mut d = pki.member("dora", 13);
    let mut e = pki.member("emil", 14);
    let out = b
        .add(
            &[d.key_package().expect("kp"), e.key_package().expect("kp")],
            now(3),
        )
        .expect("add");
    let change_b = b.merge_pending_commit(now(3)).expect("merge");
    for m in [&mut a, &mut c] {
        let ch = expect_epoch_change(m.process_message(&out.commit, now(3)).expect("process"));
        assert_eq!(ch.added, change_b.added);
        assert_eq!(ch.committer, b.leaf_index().expect("leaf"));
    }
    let names: Vec<_> = change_b
        .added
        .iter()
        .map(|r| r.credential.display_name.as_str())
        .collect();
    assert_eq!(names, ["dora", "emil"]);
    let welcome = out.welcome.expect("welcome");
    d.join_from_welcome(&welcome, now(3)).expect("d joins");
    e.join_from_welcome(&welcome, now(3)).expect("e joins");
    assert_agree(&[&a, &b, &c, &d, &e]);
    codes.push(a.security_code().expect("code"));

    // The joiners cannot decrypt a frame from before their Add.
    assert!(d.decrypt_frame(&old_frame, now(3)).is_err());
    assert!(e.decrypt_frame(&old_frame, now(3)).is_err());
    // Everyone decrypts a frame of the new epoch, with sender and stream.
    let f = d
        .encrypt_frame(StreamId::SCREEN, b"", b"hello from dora")
        .expect("enc");
    for m in [&mut a, &mut b, &mut c, &mut e] {
        let got = m.decrypt_frame(&f, now(3)).expect("dec");
        assert_eq!(got.payload, b"hello from dora");
        assert_eq!(got.stream, StreamId::SCREEN);
        assert_eq!(got.sender, d.leaf_index().expect("leaf"));
    }

    // Remove C.
    let c_leaf = c.leaf_index().expect("leaf");
    let out = a.remove(&[c_leaf]).expect("remove");
    assert!(out.welcome.is_none());
    let ch = a.merge_pending_commit(now(4)).expect("merge");
    assert_eq!(ch.removed.len(), 1);
    assert_eq!(ch.removed[0].credential.display_name, "cem");
    let c_before = c.security_code().expect("code");
    // C, not having processed its removal yet, cannot decrypt frames of the new epoch.
    let after = a
        .encrypt_frame(StreamId::AUDIO, b"o", b"after removal")
        .expect("enc");
    assert!(c.decrypt_frame(&after, now(4)).is_err());
    for m in [&mut b, &mut d, &mut e] {
        let ch = expect_epoch_change(m.process_message(&out.commit, now(4)).expect("process"));
        assert_eq!(ch.removed[0].leaf_index, c_leaf);
    }
    assert_eq!(
        c.process_message(&out.commit, now(4)).expect("process"),
        Event::Removed {
            by: a.leaf_index().expect("leaf")
        }
    );
    assert!(!c.in_group());
    // After processing it, C still cannot decrypt frames sent after the commit.
    let after2 = b
        .encrypt_frame(StreamId::AUDIO, b"o", b"after removal 2")
        .expect("enc");
    assert!(c.decrypt_frame(&after, now(4)).is_err());
    assert!(c.decrypt_frame(&after2, now(4)).is_err());
    for m in [&mut b, &mut d, &mut e] {
        assert_eq!(
            m.decrypt_frame(&after, now(4)).expect("dec").payload,
            b"after removal"
        );
    }
    assert_agree(&[&a, &b, &d, &e]);
    assert!(!a
        .roster()
        .expect("roster")
        .iter()
        .any(|r| r.leaf_index == c_leaf));
    codes.push(a.security_code().expect("code"));
    assert_ne!(c_before, a.security_code().expect("code"));

    // A leaf update changes the epoch (and the code) too.
    let out = d.update_own_leaf().expect("update");
    d.merge_pending_commit(now(5)).expect("merge");
    for m in [&mut a, &mut b, &mut e] {
        expect_epoch_change(m.process_message(&out.commit, now(5)).expect("process"));
    }
    assert_agree(&[&a, &b, &d, &e]);
    codes.push(a.security_code().expect("code"));

    // The security code changed with every membership change.
    let mut dedup = codes.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), codes.len(), "codes repeat: {codes:?}");
}

#[test]
fn tampered_frames_are_rejected() {
    let pki = Pki::new();
    let mut a = pki.member("ana", 20);
    let mut b = pki.member("ben", 21);
    a.create_group(b"m", now(0)).expect("create");
    let out = a.add(&[b.key_package().expect("kp")], now(0)).expect("add");
    a.merge_pending_commit(now(0)).expect("merge");
    b.join_from_welcome(&out.welcome.expect("welcome"), now(0))
        .expect("join");

    let frame = a
        .encrypt_frame(
            StreamId::CAMERA,
            &[0x90, 0x80, 0x01],
            b"some camera payload",
        )
        .expect("enc");
    let ok = b
        .decrypt_frame(&frame, now(0))
        .expect("untampered frame decrypts");
    assert_eq!(ok.clear_header, [0x90, 0x80, 0x01]);
    for i in 0..frame.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = frame.clone();
            bad[i] ^= bit;
            assert!(
                b.decrypt_frame(&bad, now(0)).is_err(),
                "flipping bit {bit:#x} of byte {i} was not detected"
            );
        }
    }
    // Truncations and extensions never panic and never decrypt.
    for len in 0..frame.len() {
        assert!(b.decrypt_frame(&frame[..len], now(0)).is_err());
    }
    let mut longer = frame.clone();
    longer.insert(3, 0);
    assert!(b.decrypt_frame(&longer, now(0)).is_err());
}

#[test]
fn bad_credentials_are_rejected_by_every_member() {
    let pki = Pki::new();
    // Mallory holds a valid credential but her client accepts any credential.
    let mut mallory = pki.member_with("mallory", 30, &pki.ca, T0 - 60, T0 + 3600, false);
    let mut b = pki.member("ben", 31);
    let mut c = pki.member("cem", 32);
    mallory.create_group(b"m", now(0)).expect("create");
    let out = mallory
        .add(
            &[b.key_package().expect("kp"), c.key_package().expect("kp")],
            now(0),
        )
        .expect("add");
    mallory.merge_pending_commit(now(0)).expect("merge");
    let w = out.welcome.expect("welcome");
    b.join_from_welcome(&w, now(0)).expect("join");
    c.join_from_welcome(&w, now(0)).expect("join");
    let epoch = b.epoch().expect("epoch");

    // A strict member refuses to commit such Adds itself.
    let rogue = pki.member_with("rogue", 33, &pki.evil, T0 - 60, T0 + 3600, true);
    let expired = pki.member_with("late", 34, &pki.ca, T0 - 3600, T0 - 1, true);
    for (joiner, reason) in [
        (&rogue, CredentialError::BadSignature),
        (&expired, CredentialError::Expired),
    ] {
        match b.add(&[joiner.key_package().expect("kp")], now(1)) {
            Err(E2eeError::CredentialRejected { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("expected rejection, got {other:?}"),
        }

        // Mallory commits it anyway; every other member rejects the commit.
        let out = mallory
            .add(&[joiner.key_package().expect("kp")], now(1))
            .expect("mallory adds");
        for m in [&mut b, &mut c] {
            match m.process_message(&out.commit, now(1)) {
                Err(E2eeError::CredentialRejected { reason: r, .. }) => assert_eq!(r, reason),
                other => panic!("expected rejection, got {other:?}"),
            }
            assert_eq!(
                m.epoch().expect("epoch"),
                epoch,
                "rejected commit was merged"
            );
        }
        mallory.discard_pending_commit().expect("discard");
    }

    // Negative control: the same path with a valid credential is accepted by everyone.
    let mut good = pki.member("gina", 35);
    let out = mallory
        .add(&[good.key_package().expect("kp")], now(2))
        .expect("add");
    mallory.merge_pending_commit(now(2)).expect("merge");
    for m in [&mut b, &mut c] {
        let ch = expect_epoch_change(m.process_message(&out.commit, now(2)).expect("accepted"));
        assert_eq!(ch.added[0].credential.display_name, "gina");
    }
    good.join_from_welcome(&out.welcome.expect("welcome"), now(2))
        .expect("join");
    assert_agree(&[&mallory, &b, &c, &good]);

    // A joiner verifies every member in the Welcome: once Mallory's own view contains a
    // rogue member, a strict joiner refuses the group.
    let out = mallory
        .add(&[rogue.key_package().expect("kp")], now(3))
        .expect("add");
    mallory.merge_pending_commit(now(3)).expect("merge");
    let _ = out;
    let mut w2 = pki.member("wim", 36);
    let out = mallory
        .add(&[w2.key_package().expect("kp")], now(3))
        .expect("add");
    mallory.merge_pending_commit(now(3)).expect("merge");
    match w2.join_from_welcome(&out.welcome.expect("welcome"), now(3)) {
        Err(E2eeError::CredentialRejected { reason, .. }) => {
            assert_eq!(reason, CredentialError::BadSignature)
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    assert!(!w2.in_group());
}

#[test]
fn old_epoch_keys_are_dropped_after_grace() {
    let pki = Pki::new();
    let mut a = pki.member("ana", 40);
    let mut b = pki.member("ben", 41);
    a.create_group(b"m", now(0)).expect("create");
    let out = a.add(&[b.key_package().expect("kp")], now(0)).expect("add");
    a.merge_pending_commit(now(0)).expect("merge");
    b.join_from_welcome(&out.welcome.expect("welcome"), now(0))
        .expect("join");

    let old = a
        .encrypt_frame(StreamId::AUDIO, b"", b"old epoch")
        .expect("enc");
    let t = now(10);
    let out = a.update_own_leaf().expect("update");
    a.merge_pending_commit(t).expect("merge");
    expect_epoch_change(b.process_message(&out.commit, t).expect("process"));
    assert_eq!(b.poll_timeout(), Some(t + Duration::from_secs(5)));

    // Within the grace period the old-epoch frame still decrypts ...
    let almost = t + Duration::from_millis(4_999);
    assert_eq!(
        b.decrypt_frame(&old, almost).expect("in grace").payload,
        b"old epoch"
    );
    // ... at now + grace it does not.
    assert!(matches!(
        b.decrypt_frame(&old, t + Duration::from_secs(5)),
        Err(E2eeError::Frame(FrameError::UnknownKey(_)))
    ));
    assert_eq!(b.poll_timeout(), None);
    // New-epoch frames are unaffected.
    let new = a
        .encrypt_frame(StreamId::AUDIO, b"", b"new epoch")
        .expect("enc");
    assert_eq!(
        b.decrypt_frame(&new, t + Duration::from_secs(60))
            .expect("dec")
            .payload,
        b"new epoch"
    );

    // The grace period is configurable.
    let dev = SigningKey::from_bytes(&[42; 32]);
    let cred = pki.credential(&pki.ca, "cy", &dev, T0 - 60, T0 + 3600);
    let mut c = Member::new(
        cred,
        dev,
        pki.verifier(),
        MemberConfig {
            frame_grace: Duration::from_secs(1),
        },
    )
    .expect("member");
    let out = a
        .add(&[c.key_package().expect("kp")], now(20))
        .expect("add");
    a.merge_pending_commit(now(20)).expect("merge");
    b.process_message(&out.commit, now(20)).expect("process");
    c.join_from_welcome(&out.welcome.expect("welcome"), now(20))
        .expect("join");
    let before = a.encrypt_frame(StreamId::AUDIO, b"", b"x").expect("enc");
    let out = b.update_own_leaf().expect("update");
    b.merge_pending_commit(now(21)).expect("merge");
    a.process_message(&out.commit, now(21)).expect("process");
    c.process_message(&out.commit, now(21)).expect("process");
    assert!(c.decrypt_frame(&before, now(21)).is_ok());
    assert!(c.decrypt_frame(&before, now(22)).is_err());
}

#[test]
fn garbage_handshake_input_is_an_error_not_a_panic() {
    let pki = Pki::new();
    let mut a = pki.member("ana", 50);
    a.create_group(b"m", now(0)).expect("create");
    for input in [&[][..], &[0u8; 1], &[0xff; 64], b"\x00\x01\x00\x01garbage"] {
        assert!(a.process_message(input, now(0)).is_err());
    }
    let mut b = pki.member("ben", 51);
    assert!(b.join_from_welcome(&[0, 1, 0, 3], now(0)).is_err());
    assert!(a.add(&[vec![1, 2, 3]], now(0)).is_err());
}

#[test]
fn member_refuses_credential_for_another_key() {
    let pki = Pki::new();
    let dev = SigningKey::from_bytes(&[60; 32]);
    let other = SigningKey::from_bytes(&[61; 32]);
    let cred = pki.credential(&pki.ca, "x", &other, T0, T0 + 10);
    assert!(matches!(
        Member::new(cred, dev, pki.verifier(), MemberConfig::default()),
        Err(E2eeError::Misuse(_))
    ));
}

#[test]
fn key_packages_are_verified_before_a_policy_decision() {
    let pki = Pki::new();
    // No group needed: a client decides about joiners with the same checks `add` makes.
    let alice = pki.member("alice", 40);
    let ben = pki.member("ben", 41);
    let cred = alice
        .verify_key_package(&ben.key_package().expect("kp"), now(0))
        .expect("valid key package");
    assert_eq!(cred.user_id, "user-ben");
    assert_eq!(cred.display_name, "ben");
    assert_eq!(cred.kind, ParticipantKind::Staff);
    assert_eq!(
        cred.device_public_key,
        SigningKey::from_bytes(&[41; 32]).verifying_key().to_bytes()
    );

    // Negative controls: a foreign CA, an expired credential, garbage bytes.
    let rogue = pki.member_with("rogue", 42, &pki.evil, T0 - 60, T0 + 3600, true);
    match alice.verify_key_package(&rogue.key_package().expect("kp"), now(0)) {
        Err(E2eeError::CredentialRejected { reason, .. }) => {
            assert_eq!(reason, CredentialError::BadSignature)
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    let late = pki.member_with("late", 43, &pki.ca, T0 - 3600, T0 - 1, true);
    match alice.verify_key_package(&late.key_package().expect("kp"), now(0)) {
        Err(E2eeError::CredentialRejected { reason, .. }) => {
            assert_eq!(reason, CredentialError::Expired)
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    let mut kp = ben.key_package().expect("kp");
    let last = kp.len() - 1;
    kp[last] ^= 1;
    assert!(matches!(
        alice.verify_key_package(&kp, now(0)),
        Err(E2eeError::PeerInput(_))
    ));
    assert!(matches!(
        alice.verify_key_package(&[0, 1, 2], now(0)),
        Err(E2eeError::PeerInput(_))
    ));
}

#[test]
fn chat_reaches_members_with_its_sender_and_no_one_else() {
    let pki = Pki::new();
    let mut a = pki.member("ana", 30);
    let mut b = pki.member("ben", 31);
    let mut c = pki.member("cem", 32);
    let mut d = pki.member("dan", 35);
    a.create_group(b"meeting-chat", now(0)).expect("create");
    let out = a
        .add(
            &[
                b.key_package().expect("kp"),
                c.key_package().expect("kp"),
                d.key_package().expect("kp"),
            ],
            now(1),
        )
        .expect("add");
    a.merge_pending_commit(now(1)).expect("merge");
    let welcome = out.welcome.expect("welcome");
    b.join_from_welcome(&welcome, now(1)).expect("b joins");
    c.join_from_welcome(&welcome, now(1)).expect("c joins");
    d.join_from_welcome(&welcome, now(1)).expect("d joins");

    let text = "Vertraulich: Tagesordnungspunkt 4";
    let sealed = b.encrypt_application(text.as_bytes()).expect("encrypt");
    // The delivery service sees ciphertext only, padded to APPLICATION_PADDING steps.
    assert!(
        !sealed.windows(12).any(|w| w == &text.as_bytes()[..12]),
        "plaintext visible in the MLS message"
    );
    let longer = b
        .encrypt_application(&text.as_bytes()[..text.len() - 5])
        .expect("encrypt");
    assert_eq!(
        sealed.len(),
        longer.len(),
        "texts of nearly the same length look the same"
    );
    let b_leaf = b.leaf_index().expect("leaf");
    for m in [&mut a, &mut c] {
        match m.process_message(&sealed, now(2)).expect("decrypt") {
            Event::Application { sender, data } => {
                assert_eq!(sender, b_leaf);
                assert_eq!(data, text.as_bytes());
            }
            other => panic!("expected an application message, got {other:?}"),
        }
    }
    // Replays are refused (the sender ratchet moved on).
    assert!(a.process_message(&sealed, now(2)).is_err());
    // A tampered message is refused.
    let mut bad = longer.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(a.process_message(&bad, now(2)).is_err());

    // A member removed by a commit cannot read chat of the new epoch, and chat of the old
    // epoch is not readable after the change: no past-epoch keys are kept, which is why the
    // delivery service relays chat of the current epoch only.
    let stale = a
        .encrypt_application(b"before the change")
        .expect("encrypt");
    let out = a.remove(&[c.leaf_index().expect("leaf")]).expect("remove");
    a.merge_pending_commit(now(3)).expect("merge");
    // A commit offered as chat is refused and not merged: handshakes only go the ordered way.
    // (Decrypting it used its key, so d cannot process it afterwards either: a server that
    // does this only achieves what dropping the commit would.)
    let before = d.epoch().expect("epoch");
    assert!(matches!(
        d.decrypt_application(&out.commit),
        Err(E2eeError::Refused(_))
    ));
    assert_eq!(d.epoch().expect("epoch"), before);
    assert_eq!(d.roster().expect("roster").len(), 4);
    expect_epoch_change(b.process_message(&out.commit, now(3)).expect("b"));
    assert!(matches!(
        c.process_message(&out.commit, now(3)).expect("c"),
        Event::Removed { .. }
    ));
    assert!(
        b.process_message(&stale, now(3)).is_err(),
        "chat of a past epoch must not decrypt"
    );
    let after = a
        .encrypt_application(b"nach der Entfernung")
        .expect("encrypt");
    assert!(c.decrypt_application(&after).is_err());
    let (sender, data) = b.decrypt_application(&after).expect("decrypt");
    assert_eq!(sender, a.leaf_index().expect("leaf"));
    assert_eq!(data, b"nach der Entfernung");

    // An outsider with its own group cannot read it either.
    let mut x = pki.member("xia", 33);
    x.create_group(b"meeting-chat", now(0)).expect("create");
    let again = a.encrypt_application(b"noch einmal").expect("encrypt");
    assert!(x.decrypt_application(&again).is_err());
    // Not in a group: a clear misuse error.
    let mut y = pki.member("yan", 34);
    assert!(matches!(
        y.encrypt_application(b"x"),
        Err(E2eeError::Misuse(_))
    ));
}

#[test]
fn a_reset_member_can_be_added_again_to_the_same_group() {
    let pki = Pki::new();
    let mut a = pki.member("ana", 40);
    let mut b = pki.member("ben", 41);
    a.create_group(b"meeting-reset", now(0)).expect("create");
    let out = a.add(&[b.key_package().expect("kp")], now(1)).expect("add");
    a.merge_pending_commit(now(1)).expect("merge");
    b.join_from_welcome(&out.welcome.expect("welcome"), now(1))
        .expect("b joins");
    let b_leaf = b.leaf_index().expect("leaf");
    // b made a commit the others never processed (voided by the DS): it starts over.
    let _lost = b.update_own_leaf().expect("update");
    b.merge_pending_commit(now(2)).expect("merge");
    b.reset().expect("reset");
    assert!(!b.in_group());
    assert!(b.encrypt_frame(StreamId::CAMERA, b"", b"x").is_err());
    // a removes the old leaf and adds the fresh key package; b joins the same group id again.
    let r = a.remove(&[b_leaf]).expect("remove");
    a.merge_pending_commit(now(3)).expect("merge");
    drop(r);
    let out = a.add(&[b.key_package().expect("kp")], now(3)).expect("add");
    a.merge_pending_commit(now(3)).expect("merge");
    b.join_from_welcome(&out.welcome.expect("welcome"), now(3))
        .expect("b joins again");
    assert_agree(&[&a, &b]);
    let f = a
        .encrypt_frame(StreamId::CAMERA, b"", b"wieder da")
        .expect("encrypt");
    assert_eq!(
        b.decrypt_frame(&f, now(3)).expect("decrypt").payload,
        b"wieder da"
    );
}
