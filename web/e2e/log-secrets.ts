// What the server logs must never hold (issue 20, docs/operations.md "Logs"): passwords, tokens,
// invitation links, guest passes, session cookies, CSRF tokens, chat text, phone PINs, dial-in
// and callers' numbers, dial-in tickets; and no display names (they belong in the audit trail
// only). While the browser tests run, every worker records the secrets and names it creates or
// sees into a file of its own under the run's output directory (`recordSecret`); every server
// the suite starts writes its complete output there too (server.ts). After the suite, the
// global teardown (log-check.teardown.ts) searches every server log for every recorded value
// (`scanLog`) and for the shapes of secrets no test gets to see (`PATTERNS`).
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type BrowserContext, type Request, type Response } from '@playwright/test';

/** Under the run's output directory: one file per server with all its output. */
export const SERVER_LOGS_DIR = 'server-logs';
/** Under the run's output directory: one file per worker process with what it recorded. */
export const SECRETS_DIR = 'log-secrets';

/** The server's log filter for the suite (override with `KLAUSUR_E2E_LOG`): everything at
 * debug, klausur's modules and the libraries alike (about 100 kB of log for a meeting of three). */
export const E2E_LOG_FILTER = 'debug';

export type SecretKind =
  | 'password'
  | 'invitation token'
  | 'invitation link'
  | 'guest pass'
  | 'token'
  | 'session cookie'
  | 'CSRF token'
  | 'phone PIN'
  | 'dial-in number'
  | 'caller number'
  | 'chat text'
  | 'display name';

export interface Secret {
  kind: SecretKind;
  value: string;
}

/** Secrets made of digits only: matched as whole digit runs (see `matchers`). */
const DIGIT_KINDS: ReadonlySet<SecretKind> = new Set(['phone PIN', 'dial-in number', 'caller number']);

/**
 * Values shorter than this are not searched for (a short name such as "Max" or a short word
 * occurs in ordinary log text by accident), except phone PINs, which are searched for at any
 * length but only as a whole run of digits with no digit before or after it (so that a 4-digit
 * PIN does not match inside a timestamp or a longer number).
 */
export const MIN_SECRET_LENGTH = 6;

// ----- recording (in the workers) -----

let workerOutputDir: string | null = null;

/** The worker's output directory, for records made outside a running test (worker fixtures,
 * late browser events). */
export function useOutputDir(dir: string): void {
  workerOutputDir = dir;
}

function outputDir(): string {
  try {
    return test.info().project.outputDir;
  } catch {
    if (workerOutputDir) return workerOutputDir;
    throw new Error('recordSecret: neither in a running test nor in a worker that started a server');
  }
}

const recorded = new Set<string>();

/** Notes `value` (a secret of `kind`, or a display name) for the log check after the suite. */
export function recordSecret(kind: SecretKind, value: string | null | undefined): void {
  if (typeof value !== 'string' || value === '') return;
  const dir = join(outputDir(), SECRETS_DIR);
  const key = `${dir}\u0000${kind}\u0000${value}`;
  if (recorded.has(key)) return;
  mkdirSync(dir, { recursive: true });
  // Synchronous: a worker that dies later has still written what it saw.
  appendFileSync(join(dir, `worker-${process.pid}.jsonl`), `${JSON.stringify({ kind, value })}\n`);
  recorded.add(key);
}

/** The meeting number and PIN a caller types as `<number>#<pin>#`. */
export function recordDialKeys(keys: string): void {
  const [number, pin] = keys.split('#');
  recordSecret('dial-in number', number);
  recordSecret('phone PIN', pin);
}

/** JSON fields of API answers and signaling messages that hold a secret or a display name. */
const FIELDS: Record<string, SecretKind> = {
  password: 'password',
  current_password: 'password',
  new_password: 'password',
  csrf_token: 'CSRF token',
  token: 'token',
  invite_token: 'invitation token',
  link: 'invitation link',
  rejoin_token: 'guest pass',
  dial_in_ticket: 'token',
  phone_pin: 'phone PIN',
  meeting_number: 'dial-in number',
  display_name: 'display name',
  invitee_name: 'display name',
  // A lobby entry's name on the invitation its person used.
  invitation: 'display name',
};

/** Records the string values of `FIELDS` anywhere in a parsed JSON value. */
export function recordFields(value: unknown, depth = 0): void {
  if (depth > 12 || value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const v of value) recordFields(v, depth + 1);
    return;
  }
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v === 'string' && FIELDS[k]) recordSecret(FIELDS[k], v);
    else recordFields(v, depth + 1);
  }
}

const quietly = (f: () => void) => {
  try {
    f();
  } catch {
    // A record after the worker's output directory is gone: nothing left to check it against.
  }
};

function recordCookies(header: string | undefined, separator: RegExp): void {
  if (!header) return;
  for (const part of header.split(separator)) {
    const m = /^\s*[^=;\s]+=([^;]*)/.exec(part);
    if (m) recordSecret('session cookie', m[1]);
  }
}

/** Records, from every request a person's browser makes to the API and every answer, the
 * session cookies, CSRF tokens, request bodies' passwords and the answers' secret fields. */
export function watchContext(context: BrowserContext): void {
  const api = (url: string) => /^https?:\/\/[^/]+\/api\//.test(url);
  context.on('request', (req: Request) => {
    if (!api(req.url())) return;
    const body = req.postData();
    if (body && body.startsWith('{')) quietly(() => recordFields(JSON.parse(body)));
    req
      .allHeaders()
      .then((h) =>
        quietly(() => {
          recordSecret('CSRF token', h['x-csrf-token']);
          recordCookies(h['cookie'], /;/);
        }),
      )
      .catch(() => undefined);
  });
  context.on('response', (res: Response) => {
    if (!api(res.url())) return;
    res
      .allHeaders()
      .then(async (h) => {
        // Several Set-Cookie headers are joined by newlines.
        quietly(() => recordCookies(h['set-cookie'], /\n/));
        if ((h['content-type'] ?? '').includes('application/json')) {
          const json: unknown = await res.json();
          quietly(() => recordFields(json));
        }
      })
      .catch(() => undefined);
  });
}

/** Records the secrets and names in a signaling frame (join, joined, participants). */
export function recordFrame(payload: string): void {
  if (payload.length > 100_000 || !/"(?:rejoin_token|invite_token|invitation|display_name|dial_in_ticket|token)"/.test(payload)) return;
  quietly(() => recordFields(JSON.parse(payload)));
}

// ----- the check (after the suite) -----

/** Everything the workers of a run recorded under `outputDir`. */
export function readSecrets(outputDir: string): Secret[] {
  const dir = join(outputDir, SECRETS_DIR);
  if (!existsSync(dir)) return [];
  const seen = new Set<string>();
  const out: Secret[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.jsonl')).sort()) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      if (!line) continue;
      const s = JSON.parse(line) as Secret;
      const key = `${s.kind}\u0000${s.value}`;
      if (!seen.has(key)) {
        seen.add(key);
        out.push(s);
      }
    }
  }
  return out;
}

/** Shapes of secrets the tests never see (the in-process gateway's token, dial-in tickets), and
 * of secrets in the forms a request log would print them. */
export const PATTERNS: { kind: string; re: RegExp }[] = [
  { kind: 'dial-in ticket', re: /\/api\/dialin\/calls\/[A-Za-z0-9_-]{16,}/g },
  { kind: 'dial-in ticket', re: /dial_in_ticket[^A-Za-z0-9_-]{1,4}(?:Some\(\W?)?[A-Za-z0-9_-]{16,}/g },
  { kind: 'gateway token', re: /Bearer\s+[A-Za-z0-9._~+/-]{16,}/gi },
  { kind: 'session cookie', re: /klausur_session=[^;\s"]{6,}/g },
  { kind: 'invitation link', re: /\/j\/[A-Za-z0-9_-]{16,}/g },
  // klausur's tokens (sessions, CSRF, invitations, guest passes, dial-in tickets, the gateway's)
  // are 32 random bytes in base64url: a run of exactly 43 such characters, with a digit, an upper
  // and a lower case letter in it (which a long identifier in snake_case has not).
  {
    kind: 'token-shaped value (43 base64url characters)',
    re: /(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]{0,42}\d)(?=[A-Za-z0-9_-]{0,42}[A-Z])(?=[A-Za-z0-9_-]{0,42}[a-z])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/g,
  },
];

interface Matcher {
  kind: string;
  /** The secret itself, or the text a pattern matched; never printed whole. */
  secret: string;
  re: RegExp;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function matchers(secrets: Secret[]): Matcher[] {
  const out: Matcher[] = [];
  for (const { kind, value } of secrets) {
    const digits = value.replace(/^\+/, '');
    if (DIGIT_KINDS.has(kind) && /^\d+$/.test(digits)) {
      if (kind !== 'phone PIN' && digits.length < MIN_SECRET_LENGTH) continue;
      out.push({ kind, secret: value, re: new RegExp(`(?<!\\d)${digits}(?!\\d)`, 'g') });
      continue;
    }
    if (value.length < MIN_SECRET_LENGTH) continue;
    // As is, as a JSON or Rust string literal escapes it, and as a URL encodes it.
    const forms = new Set([value, JSON.stringify(value).slice(1, -1), encodeURIComponent(value), encodeURIComponent(value).replace(/%20/g, '+')]);
    out.push({ kind, secret: value, re: new RegExp([...forms].map(escapeRe).join('|'), 'g') });
  }
  return out;
}

export interface Finding {
  kind: string;
  /** The first few characters of what was found, then "…". */
  preview: string;
  length: number;
  /** 1-based line in the log. */
  line: number;
  /** That line, with every secret and name in it masked, cut to a readable length. */
  masked: string;
  /** How often it occurs in the log. */
  count: number;
}

/** The first few characters of a secret: never more than a third of it, at most 4. */
export function preview(secret: string): string {
  return `${[...secret].slice(0, Math.min(4, Math.floor(secret.length / 3))).join('')}…`;
}

function mask(line: string, all: Matcher[]): string {
  let out = line;
  for (const m of all) out = out.replace(new RegExp(m.re.source, m.re.flags), `‹${m.kind}›`);
  for (const p of PATTERNS) out = out.replace(new RegExp(p.re.source, p.re.flags), `‹${p.kind}›`);
  return out.length > 300 ? `${out.slice(0, 300)}…` : out;
}

/** Every recorded secret or name, and every secret's shape, that occurs in `log`. */
export function scanLog(log: string, secrets: Secret[]): Finding[] {
  const own = matchers(secrets);
  const found: Finding[] = [];
  const note = (kind: string, secret: string, re: RegExp) => {
    re.lastIndex = 0;
    const first = re.exec(log);
    if (!first) return;
    let count = 1;
    while (re.exec(log)) count++;
    const start = log.lastIndexOf('\n', first.index) + 1;
    const end = log.indexOf('\n', first.index);
    let line = 1;
    for (let i = log.indexOf('\n'); i !== -1 && i < first.index; i = log.indexOf('\n', i + 1)) line++;
    found.push({
      kind,
      preview: preview(secret),
      length: [...secret].length,
      line,
      masked: mask(log.slice(start, end === -1 ? log.length : end), own),
      count,
    });
  };
  for (const m of own) note(m.kind, m.secret, m.re);
  // A shape's match that holds a recorded secret is reported above, under the secret's kind.
  const values = secrets.map((s) => s.value).filter((v) => v.length >= MIN_SECRET_LENGTH);
  for (const p of PATTERNS) {
    const re = new RegExp(p.re.source, p.re.flags);
    const unknown = [...log.matchAll(re)].filter((m) => !values.some((v) => m[0].includes(v)));
    if (unknown.length === 0) continue;
    const text = unknown[0][0];
    note(p.kind, text, new RegExp(escapeRe(text), 'g'));
  }
  return found;
}

/** One line per finding: file, line, kind, the secret's first characters, the masked log line. */
export function describe(file: string, findings: Finding[]): string[] {
  return findings.map(
    (f) => `${file}:${f.line}: ${f.kind} "${f.preview}" (${f.length} characters, ${f.count}× in the log): ${f.masked}`,
  );
}
