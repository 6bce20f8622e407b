//! Several `klausur serve` nodes on one PostgreSQL and one Redis (issue 22 §3, docs/cluster.md),
//! each a real process with its own data directory and media port, sharing the identity CA's
//! key; native clients (`klausur-client`: real MLS, SFrame and WebRTC) join through any node and
//! follow its redirect to the node that runs their meeting.
//!
//! - Twenty meetings, every first join sent to node 0: they spread over the three nodes, each
//!   on exactly one, none with more than twice the meetings of another (issue 22, test 1).
//!   Without the redirect every meeting would run on node 0.
//! - The node that runs a meeting of three is killed (SIGKILL): the participants, joining again
//!   through the nodes that are left (as through a load balancer), are back in the meeting on
//!   another node within 10 s, in one new encrypted group with one security code, hearing each
//!   other; the stored meeting is intact (issue 22, test 2, with native clients).
//! - Redis restarted under a running meeting: the meeting goes on (its clients keep hearing each
//!   other and are never ended), a join meanwhile is refused with a clear `cluster_unavailable`
//!   error, and placement works again afterwards without a second copy of the running meeting
//!   (issue 22, test 3).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use klausur_client::session::JoinAs;
use serde_json::{json, Value};

use crate::common::native::{hear_each_other, start_at, until, Client, WAIT};
use crate::postgres::engines;
use crate::process::{free_port, run, serve_cmd, start, Proc, PASSWORD};
use crate::storage_faults::login_as as login;

use klausur_testbed::redis;

/// The tests of this file run one after another: each runs two or three server processes and
/// their clients, and two at once on a 2-core machine would measure the machine, not the move.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One node: its process (killed when dropped), its base URL and its stderr log.
struct Node {
    proc: Option<Proc>,
    base: String,
    log: PathBuf,
}

/// Nodes on one PostgreSQL database and one Redis, with Ada (staff) and Root (admin).
struct Nodes {
    nodes: Vec<Node>,
    redis: redis::Redis,
    dir: tempfile::TempDir,
}

impl Nodes {
    /// `n` nodes `n0`, `n1`, ... started one after another (the first makes the schema).
    async fn start(n: usize) -> Nodes {
        Self::start_with(n, "").await
    }

    /// [`Nodes::start`] with `config` (TOML) as every node's configuration file.
    async fn start_with(n: usize, config: &str) -> Nodes {
        let db_url = engines::cluster().create_database().await;
        let redis = redis::start();
        let dir = tempfile::tempdir().expect("tmp");
        // Every node signs credentials with the same identity CA: one key file for all.
        let ca_key = dir.path().join("identity-ca.key");
        let config_file = dir.path().join("klausur.toml");
        std::fs::write(&config_file, config).expect("config");
        let mut nodes = Vec::new();
        for i in 0..n {
            if i > 0 {
                // ... and the same dial-in PIN key (the operator copies it from the first).
                same_pin_key(dir.path(), i);
            }
            let (mut cmd, base) = node_cmd(dir.path(), i, &db_url, &redis.url(), &ca_key);
            cmd.env("KLAUSUR_CONFIG", &config_file);
            nodes.push(run_node(dir.path(), i, cmd, base));
        }
        let global = [
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--database",
        ];
        for (name, role) in [("ada", "staff"), ("root", "admin")] {
            let args = [
                &global[..],
                &[&db_url, "user", "add", name, "--display-name", name],
                &["--role", role, "--permanent-password"],
            ]
            .concat();
            let (ok, _, err) = run(&args, Some(&format!("{PASSWORD}\n")));
            assert!(ok, "{err}");
        }
        Nodes { nodes, redis, dir }
    }

    fn base(&self, i: usize) -> &str {
        &self.nodes[i].base
    }

    /// SIGKILL to node `i`.
    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.0.kill().expect("kill");
            let _ = p.0.wait();
        }
    }

    /// SIGTERM to node `i` (an orderly shutdown, as for an upgrade); waits until it has ended.
    fn stop(&mut self, i: usize) {
        self.terminate(i);
        self.wait_exit(i);
    }

    /// SIGTERM to node `i`, without waiting.
    fn terminate(&self, i: usize) {
        if let Some(p) = &self.nodes[i].proc {
            crate::process::terminate(p);
        }
    }

    /// Waits (at most [`WAIT`]) until node `i` has ended by itself: its exit status.
    fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let mut p = self.nodes[i].proc.take().expect("a running node");
        crate::process::wait_exit(&mut p, WAIT).unwrap_or_else(|| {
            panic!("node {i} did not stop:\n{}", self.logs());
        })
    }

    /// Waits until `f` holds for the loads the nodes last published in their heartbeats:
    /// (meetings, participants) per node, in node order ((0, 0) for a node without one).
    async fn until_published(&self, what: &str, f: impl Fn(&[(u64, u64)]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let loads: Vec<(u64, u64)> = (0..self.nodes.len())
                .map(|i| {
                    let out = std::process::Command::new("redis-cli")
                        .args(["-p", &self.redis.port().to_string()])
                        .args(["GET", &format!("klausur:node:n{i}")])
                        .output()
                        .expect("redis-cli");
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    let load = &v["load"];
                    (
                        load["meetings"].as_u64().unwrap_or(0),
                        load["participants"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            if f(&loads) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {loads:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether Redis holds `key` now.
    fn redis_has(&self, key: &str) -> bool {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.redis.port().to_string(), "EXISTS", key])
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// The meetings each node runs now (`meetings_running` of its `/api/status`), and its
    /// `node` id; `None` for a killed node.
    async fn running(&self) -> Vec<Option<(String, u64)>> {
        let mut out = Vec::new();
        for node in &self.nodes {
            if node.proc.is_none() {
                out.push(None);
                continue;
            }
            let v = get_json(&node.base, "root", "/api/status").await;
            let id = v["node"].as_str().expect("node id").to_string();
            out.push(Some((
                id,
                v["meetings_running"].as_u64().expect("meetings"),
            )));
        }
        out
    }

    /// The meetings each of `nodes` runs now (they must be running).
    async fn meetings_of(&self, nodes: &[usize]) -> Vec<u64> {
        let running = self.running().await;
        let of = |i: usize| running[i].as_ref().map(|(_, m)| *m);
        nodes
            .iter()
            .map(|&i| of(i).unwrap_or_else(|| panic!("node {i} runs: {running:?}")))
            .collect()
    }

    /// Waits until exactly one node runs a meeting and returns its index (a two-node test's
    /// one meeting).
    async fn owner_of_the_one_meeting(&self) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let running = self.running().await;
            let busy: Vec<usize> = (0..running.len())
                .filter(|&i| running[i].as_ref().is_some_and(|(_, m)| *m > 0))
                .collect();
            if let [one] = busy[..] {
                return one;
            }
            assert!(Instant::now() < deadline, "one node runs it: {running:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- node {i}:\n"));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn start_node(dir: &Path, i: usize, db_url: &str, redis_url: &str, ca_key: &Path) -> Node {
    let (cmd, base) = node_cmd(dir, i, db_url, redis_url, ca_key);
    run_node(dir, i, cmd, base)
}

/// Starts node `i` by `cmd` (until it listens), its log in `dir`.
fn run_node(dir: &Path, i: usize, mut cmd: std::process::Command, base: String) -> Node {
    let log = dir.join(format!("node{i}.log"));
    cmd.stdin(Stdio::null());
    let (proc, lines) = start(cmd, &log);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("node n{i} of the cluster"))),
        "{lines:?}"
    );
    Node {
        proc: Some(proc),
        base,
        log,
    }
}

/// Node `i`'s data directory gets node 0's dial-in PIN key.
fn same_pin_key(dir: &Path, i: usize) {
    let data = dir.join(format!("data{i}"));
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::copy(
        dir.join("data0").join("dialin-pin.key"),
        data.join("dialin-pin.key"),
    )
    .expect("copy the PIN key");
}

/// `klausur serve` as node `n<i>`: the command and its base URL.
fn node_cmd(
    dir: &Path,
    i: usize,
    db_url: &str,
    redis_url: &str,
    ca_key: &Path,
) -> (std::process::Command, String) {
    let data = dir.join(format!("data{i}"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = serve_cmd(&data, port);
    cmd.args(["--media-workers", "1", "--redis-url", redis_url])
        .args(["--node-id", &format!("n{i}"), "--node-url", &base])
        .env("KLAUSUR_DATABASE", db_url)
        .env("KLAUSUR_IDENTITY_CA_KEY_FILE", ca_key)
        .env(
            "KLAUSUR_METRICS_TOKEN_FILE",
            crate::metrics::token_file(dir, METRICS_TOKEN),
        );
    (cmd, base)
}

/// The token every node's `GET /metrics` opens to.
const METRICS_TOKEN: &str = "the-cluster-tests-scrape-token-0123456789";

/// One series' value in node `base`'s `GET /metrics`.
async fn metric(base: &str, series: &str) -> Option<f64> {
    crate::metrics::metric(base, METRICS_TOKEN, series).await
}

/// Ada creates a meeting at `base` and invites `guests` to it: (meeting id, invitation tokens).
pub(crate) async fn meeting_with_guests(
    base: &str,
    title: &str,
    guests: usize,
) -> (String, Vec<String>) {
    let names: Vec<String> = (0..guests).map(|g| format!("Guest {g}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (meeting, invitations) = meeting_with(base, json!({"title": title}), &names).await;
    let id = meeting["id"].as_str().expect("id").to_string();
    let tokens = invitations
        .iter()
        .map(|inv| inv["token"].as_str().expect("token").to_string())
        .collect();
    (id, tokens)
}

/// Ada creates the meeting `body` describes at `base` and invites a guest for each of
/// `names`: (the meeting's JSON, the invitations' JSON).
async fn meeting_with(base: &str, body: Value, names: &[&str]) -> (Value, Vec<Value>) {
    let (http, csrf) = login(base, "ada").await;
    let resp = http
        .post(format!("{base}/api/meetings"))
        .header("X-CSRF-Token", &csrf)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 201);
    let meeting: Value = resp.json().await.expect("json");
    let id = meeting["id"].as_str().expect("id").to_string();
    let mut invitations = Vec::new();
    for name in names {
        let resp = http
            .post(format!("{base}/api/meetings/{id}/invitations"))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": name, "kind": "guest"}))
            .send()
            .await
            .expect("invite");
        assert_eq!(resp.status(), 201);
        invitations.push(resp.json().await.expect("json"));
    }
    (meeting, invitations)
}

/// Pumps `clients` until every one is in the group with the same security code.
/// `GET path` at `base` as `user` (Ada, staff, or Root, administrator): the JSON answer.
async fn get_json(base: &str, user: &str, path: &str) -> Value {
    let (http, _) = login(base, user).await;
    http.get(format!("{base}{path}"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// A client joining `meeting` at `base` with the invitation `token`, once it is in the meeting's
/// encrypted group (`what` names it if it is not, in time).
async fn in_group_at(base: &str, meeting: &str, token: &str, id: u64, what: &str) -> Client {
    let mut c = start_at(base, meeting, JoinAs::Invitation(token.to_string()), id);
    until(&mut [&mut c], what, |c| c[0].in_group).await;
    c
}

pub(crate) async fn one_group(clients: &mut [&mut Client], what: &str) {
    until(clients, what, |c| {
        let code = c[0].codes.last();
        c.iter()
            .all(|x| x.in_group && x.codes.last().is_some() && x.codes.last() == code)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_twenty_meetings_and_every_join_is_sent_to_its_meeting_s_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let nodes = Nodes::start(3).await;
    let mut clients = Vec::new();
    let mut seconds = Vec::new();
    for m in 0..20 {
        let (id, tokens) = meeting_with_guests(nodes.base(0), &format!("Meeting {m}"), 2).await;
        if m < 3 {
            seconds.push((id.clone(), tokens[1].clone()));
        }
        // Every first join arrives at node 0, as if the load balancer always chose it.
        let c = start_at(nodes.base(0), &id, JoinAs::Invitation(tokens[0].clone()), m);
        clients.push(c);
    }
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    until(
        &mut refs,
        "every meeting's first participant in its group",
        |c| c.iter().all(|x| x.in_group),
    )
    .await;
    let running = nodes.running().await;
    let counts: Vec<u64> = running
        .iter()
        .map(|r| r.as_ref().expect("alive").1)
        .collect();
    let ids: Vec<&str> = running
        .iter()
        .map(|r| r.as_ref().expect("alive").0.as_str())
        .collect();
    assert_eq!(ids, ["n0", "n1", "n2"]);
    assert_eq!(
        counts.iter().sum::<u64>(),
        20,
        "each meeting on one node: {counts:?}"
    );
    let (min, max) = (counts.iter().min(), counts.iter().max());
    assert!(
        max <= min.map(|m| m * 2).as_ref(),
        "no node more than twice another: {counts:?}"
    );
    // Each node's monitoring says the same: its meetings, the leases it keeps for them, a
    // heartbeat that reaches Redis, and its node id.
    for (i, count) in counts.iter().enumerate() {
        let base = nodes.base(i);
        let n = Some(*count as f64);
        assert_eq!(
            metric(base, "klausur_meetings_running").await,
            n,
            "node {i}"
        );
        assert_eq!(metric(base, "klausur_cluster_leases").await, n, "node {i}");
        assert_eq!(
            metric(base, "klausur_cluster_heartbeat_ok").await,
            Some(1.0),
            "node {i}"
        );
        let info = format!(
            "klausur_build_info{{version=\"{}\",node=\"n{i}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(metric(base, &info).await, Some(1.0), "node {i}");
    }
    // A second participant of a meeting, arriving at another node, lands in the same meeting
    // (the same group), wherever it runs.
    drop(refs);
    for (m, (id, token)) in seconds.iter().enumerate() {
        let mut second = start_at(
            nodes.base(2),
            id,
            JoinAs::Invitation(token.clone()),
            100 + m as u64,
        );
        one_group(
            &mut [&mut clients[m], &mut second],
            "a second participant in the same group",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_meeting_is_back_on_another_node_within_ten_seconds() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut nodes = Nodes::start(3).await;
    let (id, tokens) = meeting_with_guests(nodes.base(0), "Council", 3).await;
    let mut clients: Vec<Client> = (0..3)
        .map(|i| {
            start_at(
                nodes.base(i),
                &id,
                JoinAs::Invitation(tokens[i].clone()),
                i as u64,
            )
            .expect_to_stop()
        })
        .collect();
    {
        let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
        one_group(&mut refs, "three participants in one group").await;
    }
    let (a, rest) = clients.split_at_mut(1);
    hear_each_other(&mut a[0], &mut rest[0], 10, "before the kill").await;
    let before = clients[0].codes.last().cloned();
    let owner = nodes.owner_of_the_one_meeting().await;

    nodes.kill(owner);
    let killed_at = Instant::now();
    // Each participant notices its connection end, and joins again through a node that is
    // left (as through a load balancer), after the browser's delays (0.5, 1, 1.5, then 2 s)
    // whenever an attempt fails: until the dead node's heartbeat is gone, the meeting's lease
    // still names it and a join is redirected there.
    let entry = (0..3).find(|&i| i != owner).expect("a node is left");
    let deadline = killed_at + WAIT;
    for (i, c) in clients.iter_mut().enumerate() {
        while c.stopped.is_none() {
            assert!(
                Instant::now() < deadline,
                "client {i} did not notice: {}",
                nodes.logs()
            );
            c.pump();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let join = |i: usize, attempt: u64| {
        start_at(
            nodes.base(entry),
            &id,
            JoinAs::Invitation(tokens[i].clone()),
            10 * attempt + i as u64,
        )
        .expect_to_stop()
    };
    let mut back: Vec<Client> = (0..3).map(|i| join(i, 1)).collect();
    let mut attempts = [1u64; 3];
    let mut retry_at: [Option<Instant>; 3] = [None; 3];
    loop {
        for i in 0..3 {
            back[i].pump();
            if let Some(at) = retry_at[i] {
                if Instant::now() >= at {
                    attempts[i] += 1;
                    back[i] = join(i, attempts[i]);
                    retry_at[i] = None;
                }
            } else if back[i].stopped.is_some() {
                let delay = [500, 1000, 1500]
                    .get(attempts[i] as usize - 1)
                    .copied()
                    .unwrap_or(2000);
                retry_at[i] = Some(Instant::now() + Duration::from_millis(delay));
            }
        }
        let code = back[0].codes.last().cloned();
        if back.iter().all(|c| {
            c.stopped.is_none()
                && c.in_group
                && c.codes.last().is_some()
                && c.codes.last().cloned() == code
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three back in one group: {}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "back in the meeting {took:?} after the kill:\n{}",
        nodes.logs()
    );
    // A new group: a new security code, the same for all three.
    assert_ne!(
        back[0].codes.last().cloned(),
        before,
        "the group was formed anew"
    );
    let (a, rest) = back.split_at_mut(1);
    hear_each_other(&mut a[0], &mut rest[1], 10, "after the move").await;
    let now_owner = nodes.owner_of_the_one_meeting().await;
    assert_ne!(now_owner, owner);
    // Nothing stored was lost: the meeting and its three invitations are there.
    let meeting = get_json(nodes.base(entry), "ada", &format!("/api/meetings/{id}")).await;
    assert_eq!(meeting["title"], "Council", "{meeting}");
    eprintln!("back in the meeting {took:?} after the kill, attempts {attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_stops_no_meeting_and_placement_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let nodes = Nodes::start(2).await;
    let (id, tokens) = meeting_with_guests(nodes.base(0), "Running", 2).await;
    // Made before Redis stops: the outage stays short (a few seconds stop no meeting).
    let (other, other_tokens) = meeting_with_guests(nodes.base(0), "Later", 1).await;
    let mut a =
        start_at(nodes.base(0), &id, JoinAs::Invitation(tokens[0].clone()), 1).expect_to_stop();
    let mut b =
        start_at(nodes.base(1), &id, JoinAs::Invitation(tokens[1].clone()), 2).expect_to_stop();
    one_group(&mut [&mut a, &mut b], "two participants in one group").await;
    hear_each_other(&mut a, &mut b, 10, "before the restart").await;
    let owner = nodes.owner_of_the_one_meeting().await;

    let stopped_at = Instant::now();
    nodes.redis.stop();
    // A join that needs placement meanwhile gets a clear error (a meeting not running yet).
    let mut ws = crate::common::ws::Client::connect_to(nodes.base(0)).await;
    let refusal = ws.join(&other, Some(&other_tokens[0]), None).await;
    // The running meeting goes on meanwhile.
    hear_each_other(&mut a, &mut b, 5, "while Redis is down").await;
    nodes.redis.start_again();
    let outage = stopped_at.elapsed();
    let klausur_proto::ServerMsg::Error { code, message } = refusal else {
        panic!("a join while Redis is away: {refusal:?}");
    };
    assert_eq!(
        code,
        klausur_proto::ErrorCode::ClusterUnavailable,
        "{message}"
    );
    assert!(message.contains("try again"), "{message}");
    // ... and after: never ended, still one copy, on the same node.
    let what = format!("after a Redis outage of {outage:?}");
    hear_each_other(&mut a, &mut b, 10, &what).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    hear_each_other(&mut a, &mut b, 10, "a lease period after the restart").await;
    for c in [&mut a, &mut b] {
        c.pump();
        assert_eq!(c.stopped, None, "{what}: the meeting went on");
    }
    assert_eq!(nodes.owner_of_the_one_meeting().await, owner);
    // Placement works again: the other meeting starts, on some node.
    let _later = in_group_at(
        nodes.base(0),
        &other,
        &other_tokens[0],
        4,
        "a meeting placed after the restart",
    )
    .await;
    let running = nodes.running().await;
    let total: u64 = running.iter().flatten().map(|(_, m)| m).sum();
    assert_eq!(total, 2, "{running:?}");
    // Both nodes' heartbeats reach Redis again, as their monitoring says.
    for i in 0..2 {
        let series = "klausur_cluster_heartbeat_ok";
        let what = format!("node {i}'s heartbeat after the restart");
        crate::metrics::until_metric(nodes.base(i), METRICS_TOKEN, series, 1.0, &what).await;
    }
    eprintln!("Redis was away {outage:?}; the meeting went on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_identity_ca_or_pin_key_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db_url = engines::cluster().create_database().await;
    let redis = redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let ca_key = dir.path().join("identity-ca.key");
    let _first = start_node(dir.path(), 0, &db_url, &redis.url(), &ca_key);
    // A second node with a CA key of its own (and, in its own data directory, a PIN key of
    // its own): it says which keys differ and does not start.
    let (cmd, _) = node_cmd(
        dir.path(),
        1,
        &db_url,
        &redis.url(),
        &dir.path().join("other-ca.key"),
    );
    let out = tokio::time::timeout(WAIT, tokio::process::Command::from(cmd).output())
        .await
        .expect("ends")
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot join the cluster")
            && err.contains("identity CA")
            && err.contains("dial-in PIN key"),
        "{err}"
    );
    // With the first node's keys it starts (the control).
    same_pin_key(dir.path(), 2);
    let _third = start_node(dir.path(), 2, &db_url, &redis.url(), &ca_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telephone_caller_admitted_by_one_node_joins_the_meeting_on_another() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Every node knows the gateways' token (one file for all), as a cluster with dial-in needs.
    let tokens_dir = tempfile::tempdir().expect("tmp");
    let token_file = tokens_dir.path().join("gateway.token");
    let gateway_token = crate::process::init_token(&token_file);
    let config = format!(
        "[dialin]\ngateway_token_file = {:?}\nphone_number = \"+49 30 9999 0000\"\n",
        token_file.to_str().expect("utf-8")
    );
    let nodes = Nodes::start_with(2, &config).await;
    // A first meeting on node 0 (the emptiest, the first by id) ...
    let (filler, filler_tokens) = meeting_with_guests(nodes.base(0), "Filler", 1).await;
    let _filler = in_group_at(
        nodes.base(0),
        &filler,
        &filler_tokens[0],
        1,
        "the first meeting running",
    )
    .await;
    // ... so that the council's meeting with dial-in is placed on node 1.
    let (meeting, invitations) = meeting_with(
        nodes.base(0),
        json!({"title": "Council", "profile": "internal", "dial_in": true}),
        &["Member", "Erika Musterfrau"],
    )
    .await;
    let id = meeting["id"].as_str().expect("id").to_string();
    let number = meeting["dial_in"]["meeting_number"]
        .as_str()
        .expect("number")
        .to_string();
    let (member, caller) = (&invitations[0], &invitations[1]);
    let mut m = in_group_at(
        nodes.base(0),
        &id,
        member["token"].as_str().expect("token"),
        2,
        "the member in the council's group",
    )
    .await;
    let running = nodes.running().await;
    assert_eq!(
        running
            .iter()
            .map(|r| r.as_ref().expect("alive").1)
            .collect::<Vec<_>>(),
        [1, 1],
        "the council's meeting runs on node 1"
    );
    // Node 0's gateway takes the call: the number and PIN admit it, with a ticket ...
    let call: Value = reqwest::Client::new()
        .post(format!("{}/api/dialin/calls", nodes.base(0)))
        .bearer_auth(&gateway_token)
        .json(
            &json!({"meeting_number": number, "pin": caller["phone_pin"],
                      "caller": "+49 30 1234 5678", "source": "127.0.0.1:5070"}),
        )
        .send()
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(call["result"], "admit", "{call}");
    let ticket = call["ticket"].as_str().expect("ticket").to_string();
    // ... and its client, joining at node 0, is sent to node 1, which knows the ticket: the
    // caller is in the encrypted group with the member and they hear each other.
    let mut phone = crate::common::native::start_with(
        nodes.base(0),
        &id,
        JoinAs::DialIn(ticket.clone()),
        3,
        Some(gateway_token.clone()),
    );
    one_group(
        &mut [&mut m, &mut phone],
        "the caller in the member's group",
    )
    .await;
    hear_each_other(&mut m, &mut phone, 10, "member and caller").await;
    // The call ends at node 0: the ticket is void on every node.
    let status = reqwest::Client::new()
        .delete(format!("{}/api/dialin/calls/{ticket}", nodes.base(0)))
        .bearer_auth(&gateway_token)
        .send()
        .await
        .expect("end call")
        .status();
    assert_eq!(status, 204);
    let mut again = crate::common::native::start_with(
        nodes.base(1),
        &id,
        JoinAs::DialIn(ticket),
        4,
        Some(gateway_token.clone()),
    )
    .expect_to_stop();
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        assert!(
            Instant::now() < deadline,
            "a void ticket's join was not refused"
        );
        if let Ok(klausur_client::driver::ClientEvent::Session(
            klausur_client::session::Event::Refused { code, .. },
        )) = again.handle.events.try_recv()
        {
            break code;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused, klausur_proto::ErrorCode::NotFound);

    // Someone who can write Redis but has no PIN key cannot make a ticket: a record for an
    // invented ticket without the cluster's seal is refused; the same record sealed with the
    // PIN key (the control) admits.
    let caller_id = caller["invitation"]["id"].as_i64().expect("invitation id");
    let record = json!({"v": 1, "invitation_id": caller_id, "meeting_id": id,
                        "number_suffix": null})
    .to_string();
    let key = klausur_server::dialin::PinKey::load_or_create(
        &nodes.dir.path().join("data0").join("dialin-pin.key"),
    )
    .expect("the PIN key")
    .0;
    for (n, sealed) in [(5, false), (6, true)] {
        let invented = format!("invented-ticket-{n}-{}", "x".repeat(30));
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(invented.as_bytes()));
        let seal = if sealed {
            key.seal("cluster-ticket", &format!("{digest}:{record}"))
        } else {
            "0".repeat(64)
        };
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &nodes.redis.port().to_string(), "SET"])
            .arg(format!("klausur:ticket:{digest}"))
            .arg(format!("{seal} {record}"))
            .args(["PX", "60000"])
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "{out:?}");
        let mut ws =
            crate::common::ws::Client::connect_to_as_gateway(nodes.base(1), &gateway_token).await;
        let answer = ws.join_by_phone(&id, &invented).await;
        match (sealed, &answer) {
            (false, klausur_proto::ServerMsg::Error { code, .. }) => {
                assert_eq!(*code, klausur_proto::ErrorCode::NotFound)
            }
            (true, klausur_proto::ServerMsg::Joined { .. }) => {}
            _ => panic!(
                "a ticket record {} the seal: {answer:?}",
                if sealed { "with" } else { "without" }
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_shutdown_hands_its_meetings_on_at_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut nodes = Nodes::start(2).await;
    let (id, tokens) = meeting_with_guests(nodes.base(0), "Upgrade", 2).await;
    let join = |node: &str, i: usize, n: u64| {
        start_at(node, &id, JoinAs::Invitation(tokens[i].clone()), n).expect_to_stop()
    };
    let mut a = join(nodes.base(0), 0, 1);
    let mut b = join(nodes.base(1), 1, 2);
    one_group(&mut [&mut a, &mut b], "two in one group").await;
    let owner = nodes.owner_of_the_one_meeting().await;
    let other = 1 - owner;
    let lease = format!("klausur:lease:{id}");
    let heartbeat = format!("klausur:node:n{owner}");
    assert!(nodes.redis_has(&lease) && nodes.redis_has(&heartbeat));
    // An upgrade: SIGTERM to the node that runs the meeting.
    nodes.stop(owner);
    // It took its heartbeat and the meeting's lease with it (the meeting moves at once instead
    // of after the lease's TTL) ...
    assert!(!nodes.redis_has(&heartbeat), "the heartbeat is gone");
    assert!(!nodes.redis_has(&lease), "the lease was released");
    // ... and told the participants, who join again through the other node.
    for c in [&mut a, &mut b] {
        until(&mut [&mut *c], "told of the shutdown", |c| {
            c[0].stopped.is_some()
        })
        .await;
        assert_eq!(c.stopped.as_deref(), Some("ended: Some(ServerShutdown)"));
    }
    let mut a = join(nodes.base(other), 0, 3);
    let mut b = join(nodes.base(other), 1, 4);
    one_group(&mut [&mut a, &mut b], "the two back on the other node").await;
    hear_each_other(&mut a, &mut b, 10, "after the upgrade's move").await;
    assert_eq!(nodes.owner_of_the_one_meeting().await, other);
}

/// An upgrade during office hours (`[server] drain_seconds`, docs/operations.md): the node
/// that runs a meeting is stopped with SIGTERM and lets the meeting finish instead of
/// interrupting it. Its participants are told when the interruption would come at the latest,
/// and so is someone who joins the meeting meanwhile (through the other node, redirected to it);
/// the meeting goes on in its encrypted group with media; a new meeting whose first participant
/// arrives at the draining node is placed on the other node; once the meeting's participants
/// have left, the node stops by itself, cleanly, and its heartbeat is gone. (Without
/// `drain_seconds` SIGTERM ends the meeting at once: `an_orderly_shutdown_hands_its_meetings_on_at_once`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_lets_its_meeting_finish_and_places_new_ones_elsewhere() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut nodes = Nodes::start_with(2, "[server]\ndrain_seconds = 120\n").await;
    let (id, tokens) = meeting_with_guests(nodes.base(0), "Plenary", 3).await;
    let join = |node: &str, i: usize, n: u64| {
        start_at(node, &id, JoinAs::Invitation(tokens[i].clone()), n)
    };
    let mut a = join(nodes.base(0), 0, 1);
    let mut b = join(nodes.base(1), 1, 2);
    one_group(&mut [&mut a, &mut b], "two in one group").await;
    let owner = nodes.owner_of_the_one_meeting().await;
    let other = 1 - owner;
    assert_eq!(
        metric(nodes.base(owner), "klausur_draining").await,
        Some(0.0)
    );
    // Two more meetings, placed on the other node: it becomes the busier one, where no new
    // meeting would go while the plenary's node takes them.
    let mut offices = Vec::new();
    for n in 0..2 {
        // Placement weighs meetings, then participants as the nodes' heartbeats last published
        // them: with one meeting each, the second office goes to the node with fewer.
        nodes
            .until_published("the heartbeats show every participant", |loads| {
                loads[owner].1 == 2 && loads[other].1 == n
            })
            .await;
        let (office, office_tokens) = meeting_with_guests(nodes.base(owner), "Office", 1).await;
        let what = "an office meeting's participant in its group";
        offices
            .push(in_group_at(nodes.base(owner), &office, &office_tokens[0], 10 + n, what).await);
    }
    assert_eq!(nodes.meetings_of(&[owner, other]).await, [1, 2]);

    nodes.terminate(owner);
    until(&mut [&mut a, &mut b], "both told of the maintenance", |c| {
        c.iter().all(|x| !x.maintenance.is_empty())
    })
    .await;
    for c in [&a, &b] {
        let left = c.maintenance[0];
        assert!((60_000..=120_000).contains(&left), "{left} ms left");
    }
    assert_eq!(
        metric(nodes.base(owner), "klausur_draining").await,
        Some(1.0)
    );
    let status = get_json(nodes.base(owner), "root", "/api/status").await;
    assert_eq!(status["draining"], true, "{status}");
    assert_eq!(
        metric(nodes.base(other), "klausur_draining").await,
        Some(0.0)
    );

    // A new meeting, its first participant arriving at the draining node: placed on the other.
    let (second, second_tokens) = meeting_with_guests(nodes.base(owner), "Committee", 1).await;
    let what = "the committee's first participant in its group";
    let mut d = in_group_at(nodes.base(owner), &second, &second_tokens[0], 4, what).await;
    assert_eq!(nodes.meetings_of(&[owner, other]).await, [1, 3]);
    assert!(
        d.maintenance.is_empty(),
        "the committee's node is not being stopped"
    );

    // Someone joining the plenary through the other node is sent to the draining node, where
    // it still runs, joins its group and is told too.
    let mut c = join(nodes.base(other), 2, 3);
    one_group(
        &mut [&mut a, &mut b, &mut c],
        "three in the plenary's group",
    )
    .await;
    until(&mut [&mut c], "the latecomer told", |c| {
        !c[0].maintenance.is_empty()
    })
    .await;
    assert!(c.maintenance[0] <= a.maintenance[0], "{:?}", c.maintenance);
    hear_each_other(&mut a, &mut c, 10, "while the node drains").await;
    assert_eq!(nodes.meetings_of(&[owner, other]).await, [1, 3]);

    // The plenary ends: the node stops by itself.
    for x in [&a, &b, &c] {
        x.handle.leave();
    }
    let left_at = Instant::now();
    let status = nodes.wait_exit(owner);
    assert!(status.success(), "a clean stop: {status:?}");
    eprintln!(
        "the drained node stopped {:?} after the plenary's participants left",
        left_at.elapsed()
    );
    assert!(
        !nodes.redis_has(&format!("klausur:node:n{owner}")),
        "the heartbeat is gone"
    );
    // The committee and the offices went on on the other node.
    d.pump();
    assert_eq!(nodes.meetings_of(&[other]).await, [3]);
    assert!(offices.iter().all(|e| e.maintenance.is_empty()));
    let log = std::fs::read_to_string(&nodes.nodes[owner].log).expect("log");
    assert!(
        log.contains("drained: every meeting and call has ended"),
        "{log}"
    );
}

/// A node reaches PostgreSQL and Redis over TLS and checks both certificates against the
/// operator's CA (`sslmode=verify-full&sslrootcert=...` in the database URL,
/// `cluster.redis_ca_cert` for a `rediss://` Redis): it starts, runs a meeting placed through
/// Redis, and every connection it holds to PostgreSQL is encrypted. With another CA for either
/// it does not start, and says which connection failed and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_speaks_tls_to_postgresql_and_redis_and_checks_their_certificates() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pg = engines::cluster();
    let db_url = pg.create_database().await;
    let db_name = db_url.rsplit('/').next().expect("db name").to_string();
    let redis = redis::Redis::try_start_tls().unwrap_or_else(|e| panic!("{e}"));
    let rediss = redis.tls_url().expect("TLS port");
    let dir = tempfile::tempdir().expect("tmp");
    let other = klausur_testbed::pki::issue(dir.path(), "other").expect("another CA");
    let ca_key = dir.path().join("identity-ca.key");
    let verified = |ca: &Path| format!("{db_url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let node = |i: usize, db: &str, redis_ca: &Path| {
        if i > 0 {
            same_pin_key(dir.path(), i);
        }
        let (mut cmd, base) = node_cmd(dir.path(), i, db, &rediss, &ca_key);
        cmd.env("KLAUSUR_REDIS_CA_CERT", redis_ca);
        (cmd, base)
    };

    let (cmd, base) = node(0, &verified(&pg.tls_ca()), redis.tls_ca().expect("CA"));
    let _n0 = run_node(dir.path(), 0, cmd, base.clone());
    let global = ["--data-dir", dir.path().to_str().expect("utf-8")];
    let args = [
        &global[..],
        &[
            "--database",
            &db_url,
            "user",
            "add",
            "ada",
            "--display-name",
            "Ada",
        ],
        &["--role", "staff", "--permanent-password"],
    ]
    .concat();
    let (ok, _, err) = run(&args, Some(&format!("{PASSWORD}\n")));
    assert!(ok, "{err}");
    let (id, tokens) = meeting_with_guests(&base, "Over TLS", 1).await;
    let _guest = in_group_at(&base, &id, &tokens[0], 1, "the guest in the group").await;
    // The meeting was placed through the Redis behind the TLS port (seen on its plain port).
    let plain = redis.url();
    let owner = std::process::Command::new("redis-cli")
        .args(["-u", &plain, "--scan", "--pattern", "*lease*"])
        .output()
        .expect("redis-cli");
    assert!(
        String::from_utf8_lossy(&owner.stdout).contains(&id),
        "no lease for {id} in Redis: {owner:?}"
    );
    // Every connection the node holds to its database is encrypted.
    let (encrypted, all) = pg_connections(&db_url, &db_name).await;
    assert!(
        all > 0 && encrypted == all,
        "{encrypted} of {all} connections encrypted"
    );

    // Negative controls: another CA for the database, then for Redis.
    for (i, db, redis_ca, says) in [
        (
            1,
            verified(&other.ca),
            redis.tls_ca().expect("CA").to_path_buf(),
            "PostgreSQL",
        ),
        (2, verified(&pg.tls_ca()), other.ca.clone(), "Redis"),
    ] {
        let (cmd, _) = node(i, &db, &redis_ca);
        let out = tokio::time::timeout(WAIT, tokio::process::Command::from(cmd).output())
            .await
            .expect("ends")
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "started with another CA for {says}: {err}"
        );
        assert!(
            err.contains(says) && err.contains("certificate"),
            "node {i}, another CA for {says}: {err}"
        );
        eprintln!("refused as it should be, another CA for {says}: {err}");
    }
}

/// (encrypted, all) connections to database `name` other than this query's own.
async fn pg_connections(url: &str, name: &str) -> (i64, i64) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.expect("connect");
    let row: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_one(&mut admin)
    .await
    .expect("query");
    admin.close().await.expect("close");
    row
}
