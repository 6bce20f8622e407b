// Test-hooks builds only (imported dynamically by worker.ts under the test-hooks mode, so a
// production bundle does not contain it): what processing a commit costs the encryption worker
// in a large group (issue 21, "a commit for 100 members processes in under 50 ms in the
// browser's worker").
//
// Inside the worker's own WebAssembly module the bench builds a group of `members`: a committer,
// `members - 2` other members (added in one commit; they never commit again, so their state is
// not kept current) and the measured member, which joins last by a Welcome, as the 100th joiner
// of a meeting does. Then, `rounds` times each, the committer adds one more member, removes it
// again and updates its own leaf, and the measured member processes each commit
// (`processMessage`, what mls.ts calls for an `mls_commit`; then `roster`, which mls.ts reads
// after every epoch change, timed on its own). Every credential is issued by a CA
// key made here and verified as in a meeting. Times are `performance.now()` around the one call.

import { WasmMember, generateSigningKey, issueCredential, signingKeyPublic } from './pkg/klausur_e2ee_wasm.js';

export interface CommitBenchFigures {
  members: number;
  /** Building the group (every member's key, credential and key package; one commit). */
  setupMs: number;
  /** The measured member joins from the Welcome (the 100th joiner's step). */
  welcomeMs: number;
  welcomeBytes: number;
  /** Per round: processing a commit that adds one member / removes one / updates the committer's leaf. */
  addMs: number[];
  removeMs: number[];
  updateMs: number[];
  /** Per commit processed: reading the roster afterwards (what mls.ts does after every epoch change). */
  rosterMs: number[];
  addCommitBytes: number;
  removeCommitBytes: number;
  updateCommitBytes: number;
}

const MAX_MEMBERS = 200;
const MAX_ROUNDS = 50;

interface CommitOut {
  commit: Uint8Array;
  welcome: Uint8Array | null;
}

export function commitBench(members: number, rounds: number): CommitBenchFigures {
  const n = Math.max(3, Math.min(MAX_MEMBERS, Math.floor(members)));
  const r = Math.max(1, Math.min(MAX_ROUNDS, Math.floor(rounds)));
  const ca = generateSigningKey();
  const caPublic = signingKeyPublic(ca);
  const nowSecs = Math.floor(Date.now() / 1000);
  let next = 0;
  const make = (): WasmMember => {
    const key = generateSigningKey();
    const i = next++;
    const credential = issueCredential(
      ca,
      `bench-user-${i}`,
      `Mitglied ${i + 1}`,
      'staff',
      signingKeyPublic(key),
      nowSecs - 60,
      nowSecs + 4 * 3600,
    );
    const m = new WasmMember(credential, key, caPublic);
    key.fill(0);
    return m;
  };
  const t0 = performance.now();
  const committer = make();
  committer.createGroup(new TextEncoder().encode('commit-bench'), Date.now());
  const others: WasmMember[] = [];
  for (let i = 0; i < n - 2; i++) others.push(make());
  committer.add(
    others.map((m) => m.keyPackage()),
    Date.now(),
  );
  committer.mergePendingCommit(Date.now());
  for (const m of others) m.free();
  const measured = make();
  const join = committer.add([measured.keyPackage()], Date.now()) as CommitOut;
  committer.mergePendingCommit(Date.now());
  const setupMs = performance.now() - t0;
  if (!join.welcome) throw new Error('the add made no Welcome');
  const t = performance.now();
  measured.joinFromWelcome(join.welcome, Date.now());
  const welcomeMs = performance.now() - t;

  const timeProcess = (c: CommitOut): number => {
    const start = performance.now();
    measured.processMessage(c.commit, Date.now());
    const processed = performance.now();
    measured.roster();
    figures.rosterMs.push(performance.now() - processed);
    return processed - start;
  };
  const figures: CommitBenchFigures = {
    members: n,
    setupMs,
    welcomeMs,
    welcomeBytes: join.welcome.length,
    addMs: [],
    removeMs: [],
    updateMs: [],
    rosterMs: [],
    addCommitBytes: 0,
    removeCommitBytes: 0,
    updateCommitBytes: 0,
  };
  for (let i = 0; i < r; i++) {
    const extra = make();
    const add = committer.add([extra.keyPackage()], Date.now()) as CommitOut;
    const change = committer.mergePendingCommit(Date.now()) as { added: { leafIndex: number }[] };
    figures.addMs.push(timeProcess(add));
    figures.addCommitBytes = add.commit.length;
    extra.free();
    const leaf = change.added[0]?.leafIndex;
    if (leaf === undefined) throw new Error('the add named no leaf');
    const remove = committer.remove([leaf]) as CommitOut;
    committer.mergePendingCommit(Date.now());
    figures.removeMs.push(timeProcess(remove));
    figures.removeCommitBytes = remove.commit.length;
    const update = committer.updateOwnLeaf() as CommitOut;
    committer.mergePendingCommit(Date.now());
    figures.updateMs.push(timeProcess(update));
    figures.updateCommitBytes = update.commit.length;
  }
  committer.free();
  measured.free();
  ca.fill(0);
  return figures;
}
