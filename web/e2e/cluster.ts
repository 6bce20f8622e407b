// Several `klausur serve` nodes behind a load balancer, for the browser tests of issue 22
// (docs/cluster.md): a throwaway PostgreSQL (Debian's `postgresql`: `initdb` and `postgres`
// from /usr/lib/postgresql/*/bin, run as `nobody` when the tests run as root, on 127.0.0.1 and
// a free port), a throwaway Redis (`redis-server --save "" --appendonly no`), the nodes (each
// with its own data directory, listen and media ports, all with the same identity CA key), and
// Debian's `haproxy` in front, configured as docs/cluster.md ("A load balancer in front")
// shows: `/node/<id>/...` to that node, everything else round robin over the healthy nodes.
//
// Every process is stopped by `stop()`, and also when the test process ends in any other way
// (killed included): a reaper shell, in a process group of its own, reads a pipe from this
// process; when the pipe closes it kills the processes listed in `<dir>/pids` and the
// PostgreSQL server named in its `postmaster.pid`, and deletes the temporary directories (as
// the Rust tests' watchdogs do: crates/klausur-testbed/src/postgres.rs and redis.rs).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chownSync, copyFileSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { E2E_LOG_FILTER, recordSecret } from './log-secrets';
import { freeMediaPorts, freeTcpPort, webRoot } from './server';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The password of the accounts `addUser` creates (they need no change at the first login). */
export const CLUSTER_PASSWORD = 'Stadtrat-Linde-gruen-2026';

export interface ClusterNode {
  /** `n0`, `n1`, ... */
  id: string;
  /** The node itself, past the load balancer: `http://127.0.0.1:<port>`. */
  directURL: string;
  /** What the node announces as its URL: the load balancer's `/node/<id>`. */
  nodeURL: string;
  logPath: string;
  /** Whether its process still runs. */
  alive(): boolean;
  /** SIGKILL, as a crash: nothing is cleaned up. Resolves when the process is gone. */
  kill(): Promise<void>;
}

export interface KlausurCluster {
  /** The load balancer: the one address browsers use (every node's `public_url`). */
  baseURL: string;
  nodes: ClusterNode[];
  /** The nodes' PostgreSQL URL. */
  databaseURL: string;
  /** `klausur user add <username>` on the cluster's database, with {@link CLUSTER_PASSWORD}. */
  addUser(username: string, displayName: string, role: 'staff' | 'admin'): void;
  /** The last lines of every node's log and of the load balancer's output, for a failure. */
  tails(lines?: number): string;
  stop(): Promise<void>;
}

export interface ClusterOptions {
  nodes?: number;
  /** Where the nodes' logs go (the suite's log check reads them afterwards). */
  logDir: string;
  /** The web client bundle the nodes serve. */
  webDist?: 'dist' | 'dist-test';
}

/** The reaper's script: `$1` the cluster's directory, `$2` PostgreSQL's. */
const REAPER = `
trap '' INT HUP TERM
cat >/dev/null
if [ -f "$1/pids" ]; then
  while read -r pid; do kill -KILL "$pid" 2>/dev/null; done <"$1/pids"
fi
if [ -f "$2/data/postmaster.pid" ]; then
  pg=$(head -n 1 "$2/data/postmaster.pid")
  i=0
  while [ "$i" -lt 100 ] && kill -QUIT "$pg" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
fi
rm -rf "$1" "$2"
`;

/** The directory with PostgreSQL's server binaries (`initdb`, `postgres`), the newest first. */
function postgresBin(): string {
  const has = (d: string) => existsSync(join(d, 'initdb')) && existsSync(join(d, 'postgres'));
  const fromConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (fromConfig.status === 0 && has(fromConfig.stdout.trim())) return fromConfig.stdout.trim();
  const versions = existsSync('/usr/lib/postgresql')
    ? readdirSync('/usr/lib/postgresql')
        .map((v) => [Number(v), `/usr/lib/postgresql/${v}/bin`] as const)
        .filter(([n, d]) => Number.isFinite(n) && has(d))
        .sort((a, b) => b[0] - a[0])
    : [];
  if (versions.length === 0) throw new Error('PostgreSQL is not installed (no initdb and postgres in /usr/lib/postgresql/*/bin): run ./scripts/setup.sh --with-browser');
  return versions[0][1];
}

function which(name: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/bin', '/usr/sbin']) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} is not installed: run ./scripts/setup.sh --with-browser`);
}

/** The load balancer's configuration (the example in docs/cluster.md, with test addresses). */
export function haproxyConfig(listen: string, nodes: { id: string; address: string }[]): string {
  const routes = nodes.map((n) => `    use_backend node_${n.id} if { path_beg /node/${n.id}/ }`).join('\n');
  const pool = nodes.map((n) => `    server ${n.id} ${n.address} check`).join('\n');
  const direct = nodes
    .map(
      (n) => `backend node_${n.id}
    http-request replace-path /node/${n.id}(/.*) \\1
    server ${n.id} ${n.address} track nodes/${n.id}
`,
    )
    .join('\n');
  return `global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    timeout check 1s
    retries 2
    option redispatch 1
    option forwardfor

frontend klausur
    bind ${listen}
${routes}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    default-server inter 400ms fall 1 rise 2
${pool}

${direct}`;
}

export async function startCluster(opts: ClusterOptions): Promise<KlausurCluster> {
  const bin = process.env.KLAUSUR_BIN ?? resolve(webRoot, '../target/debug/klausur');
  if (!existsSync(bin)) throw new Error(`klausur server binary not found at ${bin}: build it with \`cargo build\` or set KLAUSUR_BIN`);
  const dist = resolve(webRoot, opts.webDist ?? 'dist');
  if (!existsSync(join(dist, 'index.html'))) throw new Error(`${dist}/index.html is missing: run \`npm run build\` in web/ first`);
  const pgBin = postgresBin();
  const redisBin = which('redis-server');
  const haproxyBin = which('haproxy');
  const count = opts.nodes ?? 3;

  const dir = mkdtempSync(join(tmpdir(), 'klausur-cluster-'));
  const pgDir = mkdtempSync(join(tmpdir(), 'klausur-cluster-pg-'));
  const pidsFile = join(dir, 'pids');
  writeFileSync(pidsFile, '');
  // Its own process group: a Ctrl-C to the test run does not take the reaper with it.
  const reaper = spawn('/bin/sh', ['-c', REAPER, 'reaper', dir, pgDir], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
  reaper.unref();
  const reaperGone = new Promise<void>((r) => reaper.on('exit', () => r()));

  const children: ChildProcess[] = [];
  const outputs: { name: string; path: string }[] = [];
  mkdirSync(opts.logDir, { recursive: true });
  /** Starts a process whose output goes (synchronously) to `logPath`; listed for the reaper. */
  const launch = (name: string, program: string, args: string[], logPath: string, env: Record<string, string> = {}) => {
    const log = openSync(logPath, 'a');
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    if (child.pid !== undefined) appendFileSync(pidsFile, `${child.pid}\n`);
    const keep = (chunk: Buffer) => writeSync(log, chunk);
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.on('close', () => closeSync(log));
    children.push(child);
    outputs.push({ name, path: logPath });
    return child;
  };
  const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
  const exitOf = (c: ChildProcess) => new Promise<void>((r) => (running(c) ? c.on('exit', () => r()) : r()));
  const tails = (lines = 30) =>
    outputs
      .map(({ name, path }) => {
        const text = existsSync(path) ? readFileSync(path, 'utf8').split('\n') : [];
        return `--- ${name} (${path}):\n${text.slice(-lines).join('\n')}`;
      })
      .join('\n');

  const stop = async () => {
    for (const c of children) if (running(c)) c.kill('SIGTERM');
    await Promise.race([Promise.all(children.map(exitOf)), sleep(5000)]);
    for (const c of children) if (running(c)) c.kill('SIGKILL');
    await Promise.race([Promise.all(children.map(exitOf)), sleep(5000)]);
    // All gone: nothing for the reaper to kill but PostgreSQL (a pid may be reused by now).
    writeFileSync(pidsFile, '');
    reaper.stdin?.end();
    await Promise.race([reaperGone, sleep(15_000)]);
  };

  try {
    // PostgreSQL refuses to run as root: as root, the cluster belongs to `nobody`.
    const asRoot = process.getuid?.() === 0;
    const runAs = (program: string, args: string[]) => (asRoot ? ['runuser', ['-u', 'nobody', '--', program, ...args]] : [program, args]) as [string, string[]];
    const pgPassword = randomBytes(16).toString('hex');
    recordSecret('password', pgPassword);
    writeFileSync(join(pgDir, 'pw'), `${pgPassword}\n`);
    if (asRoot) {
      const uid = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim());
      const gid = Number(spawnSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).stdout.trim());
      chownSync(pgDir, uid, gid);
      chownSync(join(pgDir, 'pw'), uid, gid);
    }
    const initdb = spawnSync(
      ...runAs(join(pgBin, 'initdb'), ['-D', join(pgDir, 'data'), '-U', 'klausur_test', '-E', 'UTF8', '--no-sync', '--no-instructions', '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${join(pgDir, 'pw')}`]),
      { cwd: pgDir, encoding: 'utf8', timeout: 120_000 },
    );
    if (initdb.status !== 0) throw new Error(`initdb failed (${initdb.status ?? initdb.signal}): ${initdb.stdout}${initdb.stderr}`);
    const pgPort = await freeTcpPort();
    // `exec`: the process is PostgreSQL itself (its pid also in `postmaster.pid`).
    launch(
      'postgres',
      ...runAs('/bin/sh', [
        '-c',
        `exec "$1/postgres" -D "$2/data" -k "$2" -p ${pgPort} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`,
        'postgres',
        pgBin,
        pgDir,
      ]),
      join(dir, 'postgres.log'),
    );
    const databaseURL = `postgres://klausur_test:${pgPassword}@127.0.0.1:${pgPort}/klausur`;
    // The database for the nodes; the first `createdb` that gets through also says the server
    // accepts connections.
    const pgDeadline = Date.now() + 30_000;
    for (;;) {
      const r = spawnSync(join(pgBin, 'createdb'), ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'klausur_test', 'klausur'], {
        encoding: 'utf8',
        env: { ...process.env, PGPASSWORD: pgPassword },
        timeout: 10_000,
      });
      if (r.status === 0) break;
      if (Date.now() > pgDeadline) throw new Error(`PostgreSQL did not start within 30 s: ${r.stderr}\n${tails()}`);
      await sleep(100);
    }

    const redisPort = await freeTcpPort();
    const redisURL = `redis://127.0.0.1:${redisPort}/`;
    launch(
      'redis',
      redisBin,
      ['--bind', '127.0.0.1', '--port', String(redisPort), '--save', '', '--appendonly', 'no', '--dir', dir],
      join(dir, 'redis.log'),
    );

    const lbPort = await freeTcpPort();
    const baseURL = `http://127.0.0.1:${lbPort}`;
    const caKey = join(dir, 'identity-ca.key');
    const env = {
      NO_COLOR: '1',
      KLAUSUR_LOG: process.env.KLAUSUR_E2E_LOG ?? E2E_LOG_FILTER,
      KLAUSUR_DATABASE: databaseURL,
      // Every node signs credentials with the same identity CA.
      KLAUSUR_IDENTITY_CA_KEY_FILE: caKey,
    };
    const nodes: ClusterNode[] = [];
    // One after another: the first makes the schema and the identity CA's key.
    for (let i = 0; i < count; i++) {
      const id = `n${i}`;
      const port = await freeTcpPort();
      const mediaPort = await freeMediaPorts(1);
      const dataDir = join(dir, `data-${id}`);
      // ... and the dial-in PIN key, which every other node gets a copy of.
      if (i > 0) {
        mkdirSync(dataDir);
        copyFileSync(join(dir, 'data-n0', 'dialin-pin.key'), join(dataDir, 'dialin-pin.key'));
      }
      const logPath = join(opts.logDir, `cluster-${process.pid}-${lbPort}-${id}.log`);
      const nodeURL = `${baseURL}/node/${id}`;
      const child = launch(
        id,
        bin,
        [
          'serve',
          '--data-dir', dataDir,
          '--listen', `127.0.0.1:${port}`,
          '--media-listen', `127.0.0.1:${mediaPort}`,
          '--media-workers', '1',
          '--web-root', dist,
          '--redis-url', redisURL,
          '--node-id', id,
          '--node-url', nodeURL,
          '--public-url', baseURL,
        ],
        logPath,
        env,
      );
      const directURL = `http://127.0.0.1:${port}`;
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (!running(child)) throw new Error(`node ${id} exited with ${child.exitCode ?? child.signalCode} before it was ready\n${tails()}`);
        const ok = await fetch(`${directURL}/healthz`).then((r) => r.ok, () => false);
        if (ok && readFileSync(logPath, 'utf8').includes(`node ${id} of the cluster`)) break;
        if (Date.now() > deadline) throw new Error(`node ${id} did not answer within 30 s\n${tails()}`);
        await sleep(100);
      }
      // A database shared by all: the first node may make an `admin` with a one-time password.
      const oneTime = join(dataDir, 'initial-admin-password');
      if (existsSync(oneTime)) recordSecret('password', readFileSync(oneTime, 'utf8').trim());
      nodes.push({
        id,
        directURL,
        nodeURL,
        logPath,
        alive: () => running(child),
        kill: async () => {
          child.kill('SIGKILL');
          await Promise.race([exitOf(child), sleep(5000)]);
        },
      });
    }

    const haproxyCfg = join(dir, 'haproxy.cfg');
    writeFileSync(haproxyCfg, haproxyConfig(`127.0.0.1:${lbPort}`, nodes.map((n) => ({ id: n.id, address: n.directURL.slice('http://'.length) }))));
    const check = spawnSync(haproxyBin, ['-c', '-q', '-f', haproxyCfg], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`haproxy refuses the configuration: ${check.stdout}${check.stderr}`);
    // `-db`: in the foreground, so that its pid is the process to stop.
    const lb = launch('haproxy', haproxyBin, ['-db', '-f', haproxyCfg], join(dir, 'haproxy.log'));
    // Ready when every node answers through it, by its own path and round robin.
    const lbDeadline = Date.now() + 30_000;
    for (;;) {
      if (!running(lb)) throw new Error(`haproxy exited with ${lb.exitCode ?? lb.signalCode}\n${tails()}`);
      const direct = await Promise.all(nodes.map((n) => fetch(`${n.nodeURL}/healthz`).then((r) => r.ok, () => false)));
      const shared = await Promise.all(nodes.map(() => fetch(`${baseURL}/healthz`).then((r) => r.ok, () => false)));
      if ([...direct, ...shared].every(Boolean)) break;
      if (Date.now() > lbDeadline) throw new Error(`the load balancer did not reach every node within 30 s\n${tails()}`);
      await sleep(100);
    }

    const addUser = (username: string, displayName: string, role: 'staff' | 'admin') => {
      recordSecret('display name', displayName);
      const r = spawnSync(
        bin,
        ['--data-dir', join(dir, 'cli'), '--database', databaseURL, 'user', 'add', username, '--display-name', displayName, '--role', role, '--permanent-password'],
        { input: `${CLUSTER_PASSWORD}\n`, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 60_000 },
      );
      if (r.status !== 0) throw new Error(`klausur user add ${username} failed: ${r.stdout}${r.stderr}`);
    };
    recordSecret('password', CLUSTER_PASSWORD);
    return { baseURL, nodes, databaseURL, addUser, tails, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
