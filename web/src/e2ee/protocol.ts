// Messages between the page (session.ts) and the encryption worker (worker.ts). Key material
// never appears here: the worker makes the device key and keeps it, the page only learns the
// public half to ask the identity CA for a credential.

import type { ClientMsg, MlsContinuity, ServerMsg } from '../signaling/protocol';
import type { CommitBenchFigures } from './commitBench';
import type { ParticipantLike } from './mls';
import type { CapturedFrame, ChatEvent, E2eeDiagnostics, E2eeNotice, E2eeStatus, FrameBench } from './types';

export type ToWorker =
  /**
   * First message. `testPlaintext` is honoured by test-hooks builds only. `vouched`: device keys
   * of guests this user admitted that an earlier connection's worker added (hex -> name).
   */
  | { t: 'init'; testPlaintext: boolean; meetingId: string; vouched: [string, string][] }
  /** Sign `newKey` (hex), the next device key of this tab, with this device key (continuity). */
  | { t: 'continuityProof'; req: number; newKey: string }
  /** This device follows an earlier one of the tab: send the proof with the key package. */
  | { t: 'continuity'; proof: MlsContinuity }
  /** The connection is gone: stop taking part (no ticks, no messages), keep only the device key. */
  | { t: 'retire' }
  /** `requestedAt`: local time (ms) the page asked the identity CA for it. */
  | { t: 'credential'; credential: string; caPublicKey: string; requestedAt: number }
  | { t: 'credentialFailed'; message: string }
  /** A renewed credential, answering `needCredential`. */
  | { t: 'renewedCredential'; credential: string }
  | { t: 'server'; msg: ServerMsg }
  | { t: 'participants'; selfId: string; participants: ParticipantLike[] }
  | { t: 'admitted'; participantId: string; displayName: string }
  /** Chat text to encrypt and send; `id` comes back in the `sent` or `failed` chat event. */
  | { t: 'chat'; id: number; text: string }
  | { t: 'diagnostics'; req: number }
  | { t: 'testCapture'; req: number }
  /** Test-hooks builds only: time both frame ciphers in this worker (see worker.ts). */
  | { t: 'testFrameBench'; req: number }
  /** Test-hooks builds only: time commit processing in a group of `members` (commitBench.ts). */
  | { t: 'testCommitBench'; req: number; members: number; rounds: number }
  | { t: 'close' };

export type FromWorker =
  /** The device's public signing key (hex), for POST /api/identity/credential. */
  | { t: 'deviceKey'; hex: string }
  | { t: 'send'; msg: ClientMsg }
  /** The credential expires soon: fetch a new one for the same device key (renewedCredential). */
  | { t: 'needCredential' }
  | { t: 'status'; status: E2eeStatus }
  | { t: 'notice'; notice: E2eeNotice }
  /** A decrypted chat message, or the outcome of an own one. */
  | { t: 'chat'; event: ChatEvent }
  | { t: 'diagnostics'; req: number; data: E2eeDiagnostics }
  | { t: 'testCapture'; req: number; frames: CapturedFrame[] }
  | { t: 'testFrameBench'; req: number; result: FrameBench | null }
  | { t: 'testCommitBench'; req: number; figures: CommitBenchFigures | null; error: string | null }
  /** The continuity proof asked for with `continuityProof` (null if this worker has no key). */
  | { t: 'continuityProof'; req: number; proof: MlsContinuity | null }
  /** This worker added a guest this user admitted: remember the device key for later connections. */
  | { t: 'vouched'; key: string; name: string }
  /** The worker cannot run (WebAssembly failed to load): media stays blocked. */
  | { t: 'fatal'; message: string };
