// Types shared by the page (session.ts), the encryption worker (worker.ts) and the MLS client
// logic (mls.ts). Plain data only: everything here crosses postMessage.

/** Participant kind as the identity CA signed it into a credential. */
export type CredentialKind = 'staff' | 'invited_guest' | 'guest' | 'phone_gateway';

/** The claims of a verified credential (as klausur-e2ee-wasm returns them). */
export interface CredentialInfo {
  userId: string;
  displayName: string;
  kind: CredentialKind;
  /** The device's Ed25519 public key, hex. */
  devicePublicKey: string;
  /** Validity, seconds since the Unix epoch (notAfter exclusive). */
  notBefore: number;
  notAfter: number;
}

/** A member of the group, for notices. */
export interface MemberInfo {
  leaf: number;
  userId: string;
  displayName: string;
  kind: CredentialKind;
}

export type E2eePhase =
  /** Not started, or waiting for the device credential. */
  | 'starting'
  /** The key package was sent; not (yet) a member of the meeting's group. */
  | 'waiting'
  /** A member: media is encrypted with the group's keys. */
  | 'active'
  /** Removed from the group by a member's commit; no keys any more. */
  | 'removed'
  /** Cannot take part (no credential, no WebAssembly, a bug); media stays blocked. */
  | 'failed';

/**
 * Verification flags of the participant list:
 * - `not_in_group`: the server announces a participant whose client is not in the MLS group
 *   (after a 10 s grace while it joins). It receives no keys, but the server says it is there.
 * - `not_announced`: a member of the MLS group that no server participant claims (after a
 *   10 s grace). It can decrypt everything; members remove such leaves automatically.
 * - `mismatch`: the server's name or kind for the participant claiming this leaf differs from
 *   the credential, or several participants claim the same leaf.
 */
export type VerificationFlag = 'not_in_group' | 'not_announced' | 'mismatch';

/** One member of the MLS roster, matched with the server participant claiming its leaf. */
export interface RosterView {
  leaf: number;
  /** From the credential (what the identity CA vouches for). */
  userId: string;
  displayName: string;
  kind: CredentialKind;
  self: boolean;
  /** The server participant claiming this leaf (for self: own participant id). */
  participantId: string | null;
  /** The server's display name for that participant, if any. */
  serverDisplayName: string | null;
  flags: VerificationFlag[];
}

/** A participant the server announces that is not (or not yet) in the roster. */
export interface OutsiderView {
  participantId: string;
  /** The server's word only: no credential vouches for it. */
  displayName: string;
  kind: string;
  /** The leaf it claims, if any (not in the roster, or claimed twice). */
  claimedLeaf: number | null;
  /** Empty during the 10 s grace, then `not_in_group` (or `mismatch` for a double claim). */
  flags: VerificationFlag[];
  /**
   * It waits to be added to the group and only a moderator can let it in: its key package
   * verifies, the meeting's policy does not admit it directly, and no present moderator has
   * admitted it (the one who did left). A moderator admits it with `admit`.
   */
  awaitsAdmission: boolean;
}

export type WarningCode =
  /** A commit from the delivery service failed to verify or apply; nothing changed. */
  | 'commit_rejected'
  /** A Welcome failed to verify; this client did not join. */
  | 'welcome_rejected'
  /** Own commit could not be made or applied. */
  | 'commit_failed'
  /** The group could not be created. */
  | 'create_failed'
  /** The device could not start (credential, CA key). */
  | 'start_failed'
  /** A roster / server-list discrepancy (see `VerificationFlag`). */
  | 'roster_discrepancy'
  /** A chat message from the delivery service failed to decrypt or is malformed; not shown. */
  | 'chat_rejected'
  /** This device's clock differs from the identity CA's; the CA's time is used (information). */
  | 'clock_skew'
  /** The server voided this client's last epoch (the others could not process it); it rejoins. */
  | 'group_reset';

export interface E2eeWarning {
  code: WarningCode;
  /** English detail for logs and the diagnostics view (the UI shows its own text per code). */
  detail: string;
  /** When it was raised (ms since the Unix epoch). */
  at: number;
}

/** Why a waiting joiner was not added by this client. */
export type RefusalReason =
  /** The key package or its credential does not verify (not signed by the CA, expired, ...). */
  | 'credential'
  /** Neither the meeting's policy nor a moderator admits them. */
  | 'policy'
  /** The server says this user admitted them, but this client has no record of it. */
  | 'not_admitted_by_you'
  /** This user admitted someone else by that name: the credential's name differs. */
  | 'name_mismatch'
  /** A returning guest whose proof of being the same browser does not hold. */
  | 'continuity';

export type E2eeNotice =
  /** Members joined the group (from an epoch change; names from their credentials). */
  | { type: 'joined'; epoch: number; members: MemberInfo[] }
  /** Members left or were removed (from an epoch change). */
  | { type: 'left'; epoch: number; members: MemberInfo[] }
  /** This client became a member (created the group or processed a Welcome). */
  | { type: 'self_joined'; epoch: number; created: boolean }
  /** This client was removed from the group. */
  | { type: 'self_removed'; by: MemberInfo | null }
  /** A waiting joiner this client will not add. */
  | {
      type: 'refused';
      participantId: string;
      /** Credential name if it verified, else the server's name if known. */
      displayName: string | null;
      reason: RefusalReason;
      detail: string;
    }
  | { type: 'warning'; warning: E2eeWarning };

/**
 * End-to-end encrypted chat as the worker reports it to the page. Chat text travels only as MLS
 * application messages; the page shows what the worker decrypted and under whose credential.
 */
export type ChatEvent =
  /**
   * A member's message. `from` is the MLS sender with the name its credential carries (what the
   * identity CA vouches for). `participantId` is the server's word for who sent it; `mismatch`
   * is true when that participant does not claim the sender's leaf.
   */
  | {
      type: 'received';
      from: MemberInfo;
      participantId: string;
      mismatch: boolean;
      text: string;
      /** When the server relayed it, ms since the Unix epoch. */
      sentAtMs: number;
    }
  /** The server relayed own message `id` (the page's number) to the other members. */
  | { type: 'sent'; id: number }
  /** Own message `id` was not sent; `reason` is English, for logs and a tooltip. */
  | { type: 'failed'; id: number; reason: string };

export interface E2eeStatus {
  phase: E2eePhase;
  epoch: number | null;
  /** Five groups of five digits, equal for every member of the epoch. */
  securityCode: string | null;
  ownLeaf: number | null;
  /** The participant list as the MLS group defines it, by leaf. */
  roster: RosterView[];
  /** Server participants that are not in the roster. */
  outsiders: OutsiderView[];
  /** Current discrepancies and the most recent rejections (newest last, at most 10). */
  warnings: E2eeWarning[];
}

export type TransformSide = 'send' | 'receive';
export type SendSourceName = 'microphone' | 'camera' | 'screen';

/** Options of an RTCRtpScriptTransform (what the worker receives in `rtctransform`). */
export interface TransformOptions {
  side: TransformSide;
  /** Send side: which source (also the SFrame stream id). */
  source?: SendSourceName;
  kind: 'audio' | 'video';
  /** Receive side: the transceiver's mid. */
  mid?: string;
  /** Unique per transform, for diagnostics. */
  id: number;
}

/** Counters of one transform. */
export interface TransformDiagnostics {
  id: number;
  side: TransformSide;
  kind: 'audio' | 'video';
  source: SendSourceName | null;
  mid: string | null;
  /** Send side: frames encrypted and passed on. */
  encrypted: number;
  /** Receive side: frames decrypted and passed on. */
  decrypted: number;
  /** Dropped because there was no key (not in a group, or an unknown key id). */
  droppedNoKey: number;
  /** Dropped because authentication failed, the frame was malformed, or it was a replay. */
  droppedFailed: number;
  /**
   * Of `droppedFailed`: frames the replay window refused (a counter already accepted for that
   * sender and stream, or too far behind the newest one).
   */
  droppedReplay: number;
  /** Sender leaf from the key id of the last frame (decrypted or not); null before any. */
  lastSenderLeaf: number | null;
  /** Bytes of frames that came in / went out of the transform. */
  bytesIn: number;
  bytesOut: number;
  /** Frames passed through unencrypted (test-hooks build with the plaintext switch only). */
  plaintext: number;
  /**
   * Time from the start of a frame's SFrame encryption or decryption to its result (the
   * core's calls and WebCrypto's asynchronous AES-GCM included, waiting for it too),
   * milliseconds in total.
   */
  cryptoMs: number;
  /**
   * Of `cryptoMs`: the time the worker's own thread spent on it, without waiting for
   * WebCrypto's result (which the browser computes on another thread), milliseconds in total.
   */
  cryptoBusyMs: number;
  /** Of `cryptoBusyMs`: inside the synchronous part of the `crypto.subtle` calls. */
  cryptoCallMs: number;
  /**
   * Test-hooks build only: the time of each of the last 2,000 to 4,000 frames (as `cryptoMs`),
   * microseconds, for a median and percentiles (the e2ee figures tests). Only as fine as the
   * worker's `performance.now()`: 5 µs (Chromium) or 20 µs (Firefox) when the page is
   * cross-origin isolated, as the server serves it, 100 µs / 1 ms when not.
   */
  cryptoSamplesUs?: number[];
}

export interface E2eeDiagnostics {
  phase: E2eePhase;
  epoch: number | null;
  transforms: TransformDiagnostics[];
}

/**
 * Test-hooks build only: per frame size, microseconds per frame of both frame ciphers timed in
 * the same worker, alternating (so both see the same load): the WebAssembly core's software
 * AES-GCM, and WebCrypto's (`us`: from start to result; `busyUs`: the worker thread's own
 * time). Frames are encrypted under a stream id no media uses and decrypted by this worker.
 */
export interface FrameBench {
  frames: number;
  sizes: Record<
    string,
    {
      /** `encryptUs`/`decryptUs`: frames back to back, mean; the rest: each frame timed alone. */
      wasm: { encryptUs: number; decryptUs: number; encryptMedianUs: number; encryptP90Us: number; decryptMedianUs: number; decryptP90Us: number };
      webcrypto: { encryptUs: number; encryptBusyUs: number; decryptUs: number; decryptBusyUs: number };
    }
  >;
  /**
   * 300-byte frames with the core cipher, one at a time 10 ms apart, each timed alone; `warmed*`:
   * the same, each right after an untimed frame of the same size (the caches warm); `floor*`:
   * trivial work, alone in the same way.
   */
  spaced300: {
    frames: number;
    encryptMedianUs: number;
    encryptP90Us: number;
    decryptMedianUs: number;
    decryptP90Us: number;
    warmedEncryptMedianUs: number;
    warmedEncryptP90Us: number;
    /** Trivial work on a 300-byte frame in plain JavaScript (copy, XOR, copy out), alone in the
     * same way: what anything called once per frame costs for coming alone. */
    floorMedianUs: number;
    floorP90Us: number;
  };
  /** The worker's smallest `performance.now()` step, µs, and whether it is cross-origin isolated. */
  timer: { stepUs: number; crossOriginIsolated: boolean };
}

/** Test-hooks build only: plaintext frames captured on the send side before encryption. */
export interface CapturedFrame {
  source: SendSourceName;
  /** Bytes that would stay in clear (codec header), at the start of `data`. */
  clearLen: number;
  /** The frame as the encoder produced it, standard base64. */
  data: string;
}
