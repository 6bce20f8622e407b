// Node test of klausur-e2ee in WebAssembly (no npm dependencies).
//
//   KLAUSUR_E2EE_WASM_PKG=target/wasm-pkg node --test crates/klausur-e2ee-wasm/tests/node/run.mjs
//   (or plain `node crates/klausur-e2ee-wasm/tests/node/run.mjs`)
//
// KLAUSUR_E2EE_WASM_PKG is the `wasm-bindgen --target nodejs` output directory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const pkgDir = process.env.KLAUSUR_E2EE_WASM_PKG;
if (!pkgDir) {
  throw new Error('set KLAUSUR_E2EE_WASM_PKG to the wasm-bindgen --target nodejs output directory');
}
const require = createRequire(import.meta.url);
const wasm = require(path.resolve(pkgDir, 'klausur_e2ee_wasm.js'));
const { WasmMember } = wasm;

const now = () => Date.now();
const enc = new TextEncoder();
const dec = new TextDecoder();

// --- RFC 9605 vectors ------------------------------------------------------------------------

test('RFC 9605 test vectors pass inside wasm', () => {
  const r = wasm.runRfc9605Vectors();
  const vectors = JSON.parse(wasm.rfc9605VectorsJson());
  assert.deepEqual(r.failures, []);
  assert.equal(r.failed, 0);
  assert.equal(r.header_passed, vectors.header.length);
  assert.equal(r.sframe_passed, vectors.sframe.length);
  assert.ok(r.header_passed > 100, `only ${r.header_passed} header vectors`);
  assert.equal(r.sframe_passed, 1);
  assert.equal(r.passed, vectors.header.length + vectors.sframe.length);
});

test('negative control: corrupted vectors fail inside wasm', () => {
  // The JSON text is edited as text: JSON.parse would round the 64-bit KIDs.
  const base = wasm.rfc9605VectorsJson();
  const flipHex = (hex, i) => {
    const b = Buffer.from(hex, 'hex');
    b[i % b.length] ^= 0x01;
    return b.toString('hex');
  };
  // Flips one byte of the n-th occurrence of `"field": "<hex>"`.
  const corrupt = (field, n = 0) => {
    let seen = 0;
    const out = base.replace(new RegExp(`"${field}": *"([0-9a-f]*)"`, 'g'), (all, hex) =>
      seen++ === n ? `"${field}": "${flipHex(hex, 3)}"` : all);
    assert.notEqual(out, base, `${field} #${n} not found`);
    return out;
  };
  for (const field of ['ct', 'pt', 'sframe_key', 'metadata', 'nonce', 'aad']) {
    const r = wasm.runRfc9605Vectors(corrupt(field));
    assert.equal(r.sframe_failed, 1, `flipped ${field} not detected`);
    assert.equal(r.failed, 1);
    assert.match(r.failures[0], /^sframe\[0\]/);
  }
  const r = wasm.runRfc9605Vectors(corrupt('encoded', 40));
  assert.equal(r.header_failed, 1);
  assert.equal(r.failed, 1);
  assert.match(r.failures[0], /^header\[40\]/);
  assert.throws(() => wasm.runRfc9605Vectors('{"not":"vectors"}'), { name: 'InvalidArgument' });
});

// --- Group scenario --------------------------------------------------------------------------

const caKey = wasm.generateSigningKey();
const caPublic = wasm.signingKeyPublic(caKey);

function member(name, { ca = caKey, trustedCa = caPublic } = {}) {
  const deviceKey = wasm.generateSigningKey();
  const t = Math.floor(now() / 1000);
  const cred = wasm.issueCredential(
    ca, `user-${name}`, name, 'staff', wasm.signingKeyPublic(deviceKey), t - 60, t + 3600);
  const m = new WasmMember(cred, deviceKey, trustedCa);
  m.name = name;
  return m;
}

function codes(members) {
  return members.map((m) => m.securityCode());
}

function frame(text, clearHeader = 'HD') {
  return enc.encode(clearHeader + text);
}

test('three members, a fourth added, one removed, tampered frames rejected', async (t) => {
  const alice = member('Alice');
  const bob = member('Bob');
  const carol = member('Carol');
  const dave = member('Dave');
  let code3;
  let beforeDaveFrame;

  await t.test('three members form a group and agree on the security code', () => {
    alice.createGroup(enc.encode('meeting-1'), now());
    assert.equal(alice.epoch(), 0);
    const { commit, welcome } = alice.add([bob.keyPackage(), carol.keyPackage()], now());
    assert.ok(commit instanceof Uint8Array && welcome instanceof Uint8Array);
    const change = alice.mergePendingCommit(now());
    assert.equal(change.type, 'epochChanged');
    assert.deepEqual(change.added.map((e) => e.displayName).sort(), ['Bob', 'Carol']);
    bob.joinFromWelcome(welcome, now());
    carol.joinFromWelcome(welcome, now());
    const members = [alice, bob, carol];
    for (const m of members) assert.equal(m.epoch(), 1);
    code3 = codes(members);
    assert.match(code3[0], /^\d{5}( \d{5}){4}$/);
    assert.deepEqual(code3, [code3[0], code3[0], code3[0]]);
    assert.equal(change.securityCode, code3[0]);
    assert.deepEqual(
      bob.roster().map((e) => [e.leafIndex, e.displayName, e.kind]),
      [[0, 'Alice', 'staff'], [1, 'Bob', 'staff'], [2, 'Carol', 'staff']]);
    assert.deepEqual(JSON.parse(carol.rosterJson()), carol.roster());
    assert.deepEqual(
      Buffer.from(bob.epochAuthenticator()), Buffer.from(carol.epochAuthenticator()));
    // Frames flow between all three.
    const f = bob.encryptFrame(1, 2, frame('bob camera'));
    for (const m of [alice, carol]) {
      const d = m.decryptFrame(f, now());
      assert.equal(d.sender, 1);
      assert.equal(d.stream, 1);
      assert.equal(d.epoch, 1);
      assert.equal(d.clearHeaderLen, 2);
      assert.equal(dec.decode(d.data), 'HDbob camera');
    }
    beforeDaveFrame = alice.encryptFrame(0, 0, frame('before dave', ''));
    // Chat: an MLS application message, decrypted by the others with its sender's leaf.
    const chat = carol.encryptApplication(enc.encode('{"type":"chat","text":"hallo"}'));
    assert.ok(chat instanceof Uint8Array);
    assert.ok(!Buffer.from(chat).includes(Buffer.from('hallo')), 'chat plaintext visible');
    const ev = alice.processMessage(chat, now());
    assert.equal(ev.type, 'application');
    assert.equal(ev.sender, 2);
    assert.equal(dec.decode(ev.data), '{"type":"chat","text":"hallo"}');
    const got = bob.decryptApplication(chat);
    assert.equal(got.sender, 2);
    assert.equal(dec.decode(got.data), '{"type":"chat","text":"hallo"}');
    // The author cannot decrypt its own message.
    assert.throws(() => carol.decryptApplication(chat), { name: 'Refused' });
  });

  await t.test('a fourth member is added; everyone sees the join and a new code', () => {
    const { commit, welcome } = alice.add([dave.keyPackage()], now());
    alice.mergePendingCommit(now());
    for (const m of [bob, carol]) {
      const ev = m.processMessage(commit, now());
      assert.equal(ev.type, 'epochChanged');
      assert.equal(ev.epoch, 2);
      assert.equal(ev.committer, 0);
      assert.deepEqual(ev.added.map((e) => [e.leafIndex, e.displayName]), [[3, 'Dave']]);
      assert.deepEqual(ev.removed, []);
    }
    dave.joinFromWelcome(welcome, now());
    const c = codes([alice, bob, carol, dave]);
    assert.deepEqual(c, [c[0], c[0], c[0], c[0]]);
    assert.notEqual(c[0], code3[0]);
    assert.equal(dave.roster().length, 4);
    const f = dave.encryptFrame(2, 1, frame('dave screen'));
    for (const m of [alice, bob, carol]) {
      const d = m.decryptFrame(f, now());
      assert.equal(d.sender, 3);
      assert.equal(d.stream, 2);
      assert.equal(dec.decode(d.data), 'HDdave screen');
    }
    // The joiner cannot read frames from before its Add.
    assert.throws(() => dave.decryptFrame(beforeDaveFrame, now()), { name: 'FrameError' });
  });

  await t.test('a removed member cannot decrypt frames sent after the commit', () => {
    const carolLeaf = carol.leafIndex();
    const before = alice.encryptFrame(0, 0, frame('still in', ''));
    assert.equal(dec.decode(carol.decryptFrame(before, now()).data), 'still in');

    const { commit, welcome } = alice.remove([carolLeaf]);
    assert.equal(welcome, null);
    const change = alice.mergePendingCommit(now());
    assert.deepEqual(change.removed.map((e) => e.displayName), ['Carol']);
    for (const m of [bob, dave]) {
      const ev = m.processMessage(commit, now());
      assert.deepEqual(ev.removed.map((e) => e.leafIndex), [carolLeaf]);
    }
    const after = alice.encryptFrame(0, 0, frame('secret after removal', ''));
    assert.equal(dec.decode(bob.decryptFrame(after, now()).data), 'secret after removal');
    assert.equal(dec.decode(dave.decryptFrame(after, now()).data), 'secret after removal');
    // Carol, even before processing the commit (a client that ignores it), has no key.
    assert.throws(() => carol.decryptFrame(after, now()), { name: 'FrameError' });
    const ev = carol.processMessage(commit, now());
    assert.deepEqual(ev, { type: 'removed', by: 0 });
    assert.equal(carol.inGroup, false);
    assert.throws(() => carol.decryptFrame(after, now()), { name: 'FrameError' });
    assert.throws(() => carol.securityCode(), { name: 'Misuse' });
    const c = codes([alice, bob, dave]);
    assert.deepEqual(c, [c[0], c[0], c[0]]);
  });

  await t.test('tampered frames are rejected, garbage never traps', () => {
    const good = bob.encryptFrame(1, 3, frame('payload bytes', 'HDR'));
    assert.equal(dec.decode(alice.decryptFrame(good, now()).data), 'HDRpayload bytes');
    for (let i = 0; i < good.length; i++) {
      const bad = Uint8Array.from(good);
      bad[i] ^= 0x01;
      assert.throws(() => alice.decryptFrame(bad, now()), { name: 'FrameError' },
        `flipped byte ${i} of ${good.length} was accepted`);
    }
    assert.throws(() => alice.decryptFrame(good.subarray(0, good.length - 2), now()),
      { name: 'FrameError' });
    assert.throws(() => alice.decryptFrame(new Uint8Array(0), now()), { name: 'FrameError' });
    for (let n = 0; n < 300; n++) {
      const junk = new Uint8Array(n % 80);
      for (let j = 0; j < junk.length; j++) junk[j] = (n * 31 + j * 17) & 0xff;
      assert.throws(() => alice.decryptFrame(junk, now()), { name: 'FrameError' });
    }
    // Garbage handshake messages are errors, not traps; the member still works afterwards.
    assert.throws(() => alice.processMessage(new Uint8Array([0, 1, 0, 1, 0]), now()),
      { name: 'PeerInput' });
    const next = bob.encryptFrame(1, 3, frame('next bytes', 'HDR'));
    assert.equal(dec.decode(alice.decryptFrame(next, now()).data), 'HDRnext bytes');
  });

  await t.test('a replayed frame is refused and counted; a late one within the window decrypts', () => {
    const f = [0, 1, 2].map((i) => bob.encryptFrame(0, 0, frame(`audio ${i}`, '')));
    const dropped = alice.replaysDropped();
    // 2 arrives before 1 (reordered): both decrypt, once.
    assert.equal(dec.decode(alice.decryptFrame(f[0], now()).data), 'audio 0');
    assert.equal(dec.decode(alice.decryptFrame(f[2], now()).data), 'audio 2');
    assert.equal(dec.decode(alice.decryptFrame(f[1], now()).data), 'audio 1');
    for (const again of f) {
      assert.throws(() => alice.decryptFrame(again, now()),
        (e) => e.name === 'FrameError' && e.replay === true && /replayed/.test(e.message));
    }
    assert.equal(alice.replaysDropped(), dropped + 3);
    // Replay windows are per receive context (the track a frame came in on).
    assert.equal(dec.decode(alice.decryptFrame(f[1], now(), 7).data), 'audio 1');
    assert.throws(() => alice.decryptFrame(f[1], now(), 7), (e) => e.replay === true);
    assert.throws(() => alice.decryptFrame(f[1], now(), -1), { name: 'InvalidArgument' });
    // Another member has its own window for the same frames.
    assert.equal(dec.decode(dave.decryptFrame(f[1], now()).data), 'audio 1');
    // A tampered frame is no replay.
    const bad = Uint8Array.from(bob.encryptFrame(0, 0, frame('x', '')));
    bad[bad.length - 2] ^= 1;
    assert.throws(() => alice.decryptFrame(bad, now()), (e) => e.name === 'FrameError' && e.replay !== true);
  });

  await t.test('a member signs its leaf claim; the creator exports the GroupInfo', () => {
    const claim = bob.signLeafClaim('p2');
    assert.ok(claim instanceof Uint8Array);
    assert.equal(claim.length, 64);
    assert.notDeepEqual(Buffer.from(claim), Buffer.from(bob.signLeafClaim('p3')));
    const info = alice.groupInfo();
    assert.ok(info instanceof Uint8Array && info.length > 100);
    const outsider = member('Olaf');
    assert.throws(() => outsider.signLeafClaim('p9'), { name: 'Misuse' });
  });
});

test('credentials from a foreign CA are refused', () => {
  const alice = member('Alice');
  const evilCa = wasm.generateSigningKey();
  const mallory = member('Mallory', { ca: evilCa, trustedCa: caPublic });
  alice.createGroup(enc.encode('meeting-2'), now());
  assert.throws(() => alice.add([mallory.keyPackage()], now()), {
    name: 'CredentialRejected',
    message: /not signed by the trusted identity CA/,
  });
  assert.equal(alice.epoch(), 0);
  assert.equal(alice.roster().length, 1);
});

test('verifyKeyPackage returns the verified claims; foreign CA refused', () => {
  const alice = member('Alice');
  const bob = member('Bob');
  // No group needed.
  const claims = alice.verifyKeyPackage(bob.keyPackage(), now());
  assert.equal(claims.userId, 'user-Bob');
  assert.equal(claims.displayName, 'Bob');
  assert.equal(claims.kind, 'staff');
  assert.match(claims.devicePublicKey, /^[0-9a-f]{64}$/);
  const mallory = member('Mallory', { ca: wasm.generateSigningKey() });
  assert.throws(() => alice.verifyKeyPackage(mallory.keyPackage(), now()), {
    name: 'CredentialRejected',
    message: /not signed by the trusted identity CA/,
  });
  assert.throws(() => alice.verifyKeyPackage(new Uint8Array([1, 2, 3]), now()), { name: 'PeerInput' });
});

test('a commit offered as chat is refused and not merged', () => {
  const x = member('Xaver');
  const y = member('Yvonne');
  x.createGroup(enc.encode('meeting-chat'), now());
  const added = x.add([y.keyPackage()], now());
  x.mergePendingCommit(now());
  y.joinFromWelcome(added.welcome, now());
  const { commit } = x.updateOwnLeaf();
  assert.throws(() => y.decryptApplication(commit), { name: 'Refused', message: /not an application message/ });
  assert.equal(y.epoch(), 1);
  assert.throws(() => y.decryptApplication(new Uint8Array([0, 1, 2])), { name: 'PeerInput' });
});

test('argument errors are JS exceptions', () => {
  assert.throws(() => new WasmMember(new Uint8Array(3), new Uint8Array(32), caPublic),
    { name: 'InvalidArgument' });
  const m = member('Eve');
  assert.throws(() => m.encryptFrame(0, 0, frame('x')), { name: 'FrameError' });
  m.createGroup(enc.encode('meeting-3'), now());
  assert.throws(() => m.encryptFrame(0.5, 0, frame('x')), { name: 'InvalidArgument' });
  assert.throws(() => m.encryptFrame(0, 99, frame('x')), { name: 'InvalidArgument' });
  assert.throws(() => m.createGroup(enc.encode('again'), now()), { name: 'Misuse' });
  assert.throws(() => m.createGroup(enc.encode('again'), NaN), { name: 'InvalidArgument' });
});

test('a continuity proof verifies for its keys and meeting only', () => {
  const old = wasm.generateSigningKey();
  const next = wasm.generateSigningKey();
  const other = wasm.generateSigningKey();
  const [oldPub, nextPub, otherPub] = [old, next, other].map((k) => wasm.signingKeyPublic(k));
  const sig = wasm.continuitySign(old, 'm1', nextPub);
  assert.equal(sig.length, 64);
  assert.equal(wasm.continuityVerify(oldPub, 'm1', nextPub, sig), true);
  // Negative controls: another signer, successor or meeting; a changed signature; malformed input.
  assert.equal(wasm.continuityVerify(otherPub, 'm1', nextPub, sig), false);
  assert.equal(wasm.continuityVerify(oldPub, 'm1', otherPub, sig), false);
  assert.equal(wasm.continuityVerify(oldPub, 'm2', nextPub, sig), false);
  const bad = sig.slice();
  bad[0] ^= 1;
  assert.equal(wasm.continuityVerify(oldPub, 'm1', nextPub, bad), false);
  assert.equal(wasm.continuityVerify(new Uint8Array(31), 'm1', nextPub, sig), false);
  assert.equal(wasm.continuityVerify(oldPub, 'm1', nextPub, sig.slice(0, 10)), false);
  assert.throws(() => wasm.continuitySign(new Uint8Array(3), 'm1', nextPub), { name: 'InvalidArgument' });
});
