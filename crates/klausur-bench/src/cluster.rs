//! Several `klausur serve` nodes of one cluster for `klausur-bench cluster`: a throwaway
//! PostgreSQL database and Redis (`klausur-testbed`), the benchmark's meetings and invitations
//! made once in the shared database, and `n` nodes sharing the identity CA's key and the
//! dial-in PIN key, each pinned to a CPU of its own. Participants join through any node and
//! follow its redirect to the node that runs their meeting (`Peer::join_klausur`).

use std::path::Path;

use anyhow::Context;
use klausur_testbed::redis::Redis;

use crate::server::{self, KlausurServer};

/// The nodes of one trial, with what they share; all stopped when dropped.
pub struct ClusterServers {
    pub nodes: Vec<KlausurServer>,
    pub tokens: Vec<String>,
    /// The meeting each token invites to.
    pub token_meetings: Vec<String>,
    _redis: Redis,
}

impl ClusterServers {
    /// Starts `cpus.len()` nodes (node `i` pinned to `cpus[i]` when given) with one media
    /// worker each, on a fresh database holding `meetings` meetings and one invitation per
    /// entry of `meeting_of`.
    pub async fn start(
        bin: &Path,
        meeting_of: Vec<usize>,
        meetings: usize,
        cpus: Vec<Option<usize>>,
    ) -> anyhow::Result<ClusterServers> {
        server::check_bin(bin)?;
        anyhow::ensure!(!cpus.is_empty(), "a cluster of no nodes");
        // The PostgreSQL cluster lives as long as the process; a database per trial.
        let database = klausur_testbed::postgres::cluster().create_database().await;
        let bin = bin.to_path_buf();
        tokio::task::spawn_blocking(move || {
            start_nodes(&bin, &database, &meeting_of, meetings, &cpus)
        })
        .await
        .context("cluster setup task")?
    }

    /// The pids of the nodes, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// Problem lines of every node's log.
    pub fn log(&self) -> String {
        self.nodes.iter().map(KlausurServer::log).collect()
    }
}

/// The nodes' lease TTL (the default) and a little more: how long a new Redis must have run
/// before the nodes place meetings.
const REDIS_SETTLE: std::time::Duration = std::time::Duration::from_millis(5_100);

fn start_nodes(
    bin: &Path,
    database: &str,
    meeting_of: &[usize],
    meetings: usize,
    cpus: &[Option<usize>],
) -> anyhow::Result<ClusterServers> {
    let redis = Redis::try_start().map_err(anyhow::Error::msg)?;
    let redis_started = std::time::Instant::now();
    let redis_url = redis.url();
    let first_dir = server::new_dir()?;
    let first_data = server::data_dir(&first_dir);
    let db_env = [("KLAUSUR_DATABASE", database)];
    let prepared = server::prepare(bin, &first_data, &db_env, meeting_of, meetings)?;
    // Every node signs with node 0's identity CA and checks PINs with its PIN key.
    let ca_key = first_data.join("identity-ca.key");
    let ca_key_s = ca_key.to_str().context("temp path")?.to_string();
    let env = [
        ("KLAUSUR_DATABASE", database),
        ("KLAUSUR_REDIS_URL", redis_url.as_str()),
        ("KLAUSUR_IDENTITY_CA_KEY_FILE", ca_key_s.as_str()),
        ("KLAUSUR_MEDIA_WORKERS", "1"),
    ];
    let mut nodes = Vec::with_capacity(cpus.len());
    let mut first_dir = Some(first_dir);
    for (i, &cpu) in cpus.iter().enumerate() {
        let dir = match first_dir.take() {
            Some(d) => d,
            None => {
                let d = server::new_dir()?;
                let data = server::data_dir(&d);
                std::fs::create_dir_all(&data)?;
                std::fs::copy(
                    first_data.join("dialin-pin.key"),
                    data.join("dialin-pin.key"),
                )
                .context("copy the dial-in PIN key of node 0")?;
                d
            }
        };
        let id = format!("n{i}");
        nodes.push(KlausurServer::launch_as(
            bin,
            dir,
            cpu,
            prepared.ids[0].clone(),
            prepared.tokens.clone(),
            &env,
            Some(&id),
        )?);
    }
    // A node places no meeting while Redis has run for less than a lease TTL (5 s by
    // default; docs/cluster.md): this Redis is new, where a city's has run long before its
    // nodes, so the trial waits that out here instead of in its first joins.
    let settled = redis_started + REDIS_SETTLE;
    std::thread::sleep(settled.saturating_duration_since(std::time::Instant::now()));
    Ok(ClusterServers {
        nodes,
        tokens: prepared.tokens,
        token_meetings: prepared.token_meetings,
        _redis: redis,
    })
}
