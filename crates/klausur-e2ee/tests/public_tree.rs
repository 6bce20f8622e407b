//! The delivery service's public view of a group ([`PublicTree`]): it follows the group from
//! the creator's GroupInfo and the commits, knows which device key holds which leaf, accepts
//! a leaf claim only from that key, and refuses what is not a member's commit of this epoch.

use std::time::Duration;

use klausur_e2ee::{
    CaVerifier, E2eeError, IdentityCa, Member, MemberConfig, ParticipantKind, PublicTree,
    SigningKey,
};

const T0: u64 = 1_700_000_000;

fn now() -> Duration {
    Duration::from_secs(T0)
}

fn ca() -> IdentityCa {
    IdentityCa::new(SigningKey::from_bytes(&[1; 32]))
}

fn member_as(
    ca: &IdentityCa,
    user_id: &str,
    name: &str,
    kind: ParticipantKind,
    seed: u8,
) -> Member {
    let dev = SigningKey::from_bytes(&[seed; 32]);
    let cred = ca
        .issue(
            user_id,
            name,
            kind,
            &dev.verifying_key(),
            T0 - 60,
            T0 + 3600,
        )
        .expect("issue");
    Member::new(
        cred,
        dev,
        CaVerifier {
            ca_public_key: ca.public_key(),
        },
        MemberConfig::default(),
    )
    .expect("member")
}

fn member(ca: &IdentityCa, name: &str, seed: u8) -> Member {
    member_as(
        ca,
        &format!("user:{seed}"),
        name,
        ParticipantKind::Staff,
        seed,
    )
}

/// `a` creates group `gid`; the server starts following it from a's GroupInfo.
fn created(a: &mut Member, gid: &[u8]) -> PublicTree {
    a.create_group(gid, now()).expect("create");
    PublicTree::from_group_info(&a.group_info().expect("group info"), gid).expect("public tree")
}

/// `adder` adds `joiner`; the server checks and merges the commit first, as it would.
fn add(tree: &mut PublicTree, adder: &mut Member, others: &mut [&mut Member], joiner: &mut Member) {
    let kp = joiner.key_package().expect("kp");
    let out = adder.add(std::slice::from_ref(&kp), now()).expect("add");
    let checked = tree
        .check_commit(&out.commit)
        .expect("the server accepts the add");
    assert_eq!(checked.sender, adder.leaf_index().expect("leaf"));
    assert_eq!(
        checked.added,
        vec![kp],
        "the commit adds the joiner's key package"
    );
    assert!(checked.removed.is_empty());
    tree.merge(checked).expect("merge");
    adder.merge_pending_commit(now()).expect("merge");
    for o in others.iter_mut() {
        o.process_message(&out.commit, now())
            .expect("member processes");
    }
    joiner
        .join_from_welcome(&out.welcome.expect("welcome"), now())
        .expect("join");
}

#[test]
fn the_server_follows_the_tree_and_knows_which_key_holds_which_leaf() {
    let ca = ca();
    let mut olga = member(&ca, "Olga", 10);
    let mut gina = member_as(
        &ca,
        "invitation:7",
        "Gina",
        ParticipantKind::InvitedGuest,
        11,
    );
    let mut sam = member(&ca, "Sam", 12);
    let mut tree = created(&mut olga, b"m1/1");
    assert_eq!((tree.epoch(), tree.leaves()), (0, vec![0]));
    let leaf0 = tree.leaf(0).expect("creator's leaf");
    assert_eq!(leaf0.credential.user_id, "user:10");
    assert_eq!(
        leaf0.device_key,
        SigningKey::from_bytes(&[10; 32]).verifying_key().to_bytes()
    );

    add(&mut tree, &mut olga, &mut [], &mut gina);
    add(&mut tree, &mut olga, &mut [&mut gina], &mut sam);
    assert_eq!((tree.epoch(), tree.leaves()), (2, vec![0, 1, 2]));
    for m in [&olga, &gina, &sam] {
        let leaf = m.leaf_index().expect("leaf");
        assert_eq!(
            tree.leaf(leaf).expect("leaf").credential,
            m.credential().credential,
            "the server's tree agrees with the member at leaf {leaf}"
        );
        assert_eq!(m.epoch().expect("epoch"), tree.epoch());
    }

    // A leaf update by Gina (the sender is her leaf), then Olga removes Sam.
    let up = gina.update_own_leaf().expect("update");
    let checked = tree.check_commit(&up.commit).expect("accepted");
    assert_eq!((checked.sender, checked.removed.clone()), (1, vec![]));
    tree.merge(checked).expect("merge");
    gina.merge_pending_commit(now()).expect("merge");
    olga.process_message(&up.commit, now()).expect("process");
    sam.process_message(&up.commit, now()).expect("process");
    let rm = olga.remove(&[2]).expect("remove");
    let checked = tree.check_commit(&rm.commit).expect("accepted");
    assert_eq!((checked.sender, checked.removed.clone()), (0, vec![2]));
    tree.merge(checked).expect("merge");
    assert_eq!((tree.epoch(), tree.leaves()), (4, vec![0, 1]));
    assert!(tree.leaf(2).is_err(), "the removed leaf is empty");
}

#[test]
fn a_leaf_claim_verifies_only_under_that_leafs_device_key() {
    let ca = ca();
    let mut olga = member(&ca, "Olga", 20);
    let mut gina = member_as(
        &ca,
        "invitation:7",
        "Gina",
        ParticipantKind::InvitedGuest,
        21,
    );
    let mut tree = created(&mut olga, b"m2/1");
    add(&mut tree, &mut olga, &mut [], &mut gina);

    // Each member's own claim passes, for its participant id.
    let claim = olga.sign_leaf_claim("p1").expect("claim");
    let who = tree.verify_leaf_claim(0, 0, "p1", &claim);
    assert!(who.is_err(), "signed at epoch 1, not 0");
    let who = tree
        .verify_leaf_claim(0, 1, "p1", &claim)
        .expect("Olga's claim");
    assert_eq!(who.credential.user_id, "user:20");
    let gina_claim = gina.sign_leaf_claim("p2").expect("claim");
    assert_eq!(
        tree.verify_leaf_claim(1, 1, "p2", &gina_claim)
            .expect("Gina's claim")
            .credential
            .user_id,
        "invitation:7"
    );

    // Gina claims Olga's leaf: her key did not sign for leaf 0, whatever she signs.
    for (leaf, pid, sig) in [
        (0, "p2", &gina_claim),
        (0, "p1", &gina_claim),
        (1, "p1", &gina_claim), // her claim passed off for another participant
        (1, "p2", &claim),      // Olga's signature for Gina's leaf
        (5, "p2", &gina_claim), // an empty leaf
    ] {
        assert!(
            tree.verify_leaf_claim(leaf, 1, pid, sig).is_err(),
            "leaf {leaf} for {pid} passed"
        );
    }
    // A claim for a future epoch, or with a mangled signature, is refused too.
    assert!(tree.verify_leaf_claim(1, 2, "p2", &gina_claim).is_err());
    let mut bad = gina_claim.clone();
    bad[3] ^= 1;
    assert!(tree.verify_leaf_claim(1, 1, "p2", &bad).is_err());
    assert!(tree.verify_leaf_claim(1, 1, "p2", &[1, 2, 3]).is_err());
}

#[test]
fn the_server_refuses_what_is_not_a_members_commit_of_this_epoch() {
    let ca = ca();
    let mut olga = member(&ca, "Olga", 30);
    let mut gina = member(&ca, "Gina", 31);
    let mut tree = created(&mut olga, b"m3/1");
    add(&mut tree, &mut olga, &mut [], &mut gina);

    // Chat is a PrivateMessage (always encrypted): not a commit.
    let chat = gina.encrypt_application(b"hello").expect("chat");
    assert!(tree.check_commit(&chat).is_err());
    // Garbage, and a commit of another group under the same id (a group of its own).
    assert!(tree.check_commit(b"not MLS").is_err());
    let mut ghost = member(&ca, "Ghost", 32);
    let lone = member(&ca, "Lone", 33);
    ghost.create_group(b"m3/1", now()).expect("create");
    let forged = ghost
        .add(&[lone.key_package().expect("kp")], now())
        .expect("add");
    assert!(tree.check_commit(&forged.commit).is_err());
    // A commit made for epoch 1 after the group moved on.
    let late = gina.update_own_leaf().expect("update");
    let first = olga.update_own_leaf().expect("update");
    let c = tree.check_commit(&first.commit).expect("accepted");
    tree.merge(c).expect("merge");
    assert!(
        tree.check_commit(&late.commit).is_err(),
        "an old epoch's commit"
    );
    // A GroupInfo of another group id, or of another group, does not start a view.
    let info = olga.group_info().expect("info");
    assert!(PublicTree::from_group_info(&info, b"m3/2").is_err());
    assert!(PublicTree::from_group_info(b"garbage", b"m3/1").is_err());
    assert!(matches!(
        PublicTree::from_group_info(&lone.key_package().expect("kp"), b"m3/1"),
        Err(E2eeError::PeerInput(_))
    ));
}

#[test]
fn a_voided_commit_is_undone() {
    let ca = ca();
    let mut olga = member(&ca, "Olga", 40);
    let gina = member(&ca, "Gina", 41);
    let mut tree = created(&mut olga, b"m4/1");
    let before = tree.snapshot().expect("snapshot");
    let kp = gina.key_package().expect("kp");
    let out = olga.add(&[kp], now()).expect("add");
    let c = tree.check_commit(&out.commit).expect("accepted");
    tree.merge(c).expect("merge");
    assert_eq!((tree.epoch(), tree.leaves()), (1, vec![0, 1]));
    tree.restore(before).expect("restore");
    assert_eq!((tree.epoch(), tree.leaves()), (0, vec![0]));
    // The group goes on from there: Olga's next commit for epoch 0 is accepted.
    olga.discard_pending_commit().expect("discard");
    let up = olga.update_own_leaf().expect("update");
    let c = tree
        .check_commit(&up.commit)
        .expect("accepted after the restore");
    tree.merge(c).expect("merge");
    assert_eq!(tree.epoch(), 1);
}

/// Key packages are small: the largest a klausur client can make (an 80-character name of
/// four-byte characters, a guest id) is well under 1 KiB (765 bytes when this was written; a
/// short name gives about 420). The server's limit (2 KiB) leaves room for it twice over.
#[test]
fn a_key_package_is_under_one_kibibyte() {
    let ca = ca();
    let name: String = "\u{1F600}".repeat(80);
    let m = member_as(
        &ca,
        &format!("guest:{}", "ab".repeat(16)),
        &name,
        ParticipantKind::Guest,
        50,
    );
    let kp = m.key_package().expect("kp");
    let small = member(&ca, "Ann", 51).key_package().expect("kp");
    assert!(kp.len() < 1024, "{} bytes", kp.len());
    assert!(small.len() < kp.len());
    eprintln!(
        "key package: {} bytes (largest name), {} bytes (short name)",
        kp.len(),
        small.len()
    );
}
