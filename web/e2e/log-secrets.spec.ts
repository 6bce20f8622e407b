// The scanner of the log check after the suite (log-secrets.ts, log-check.teardown.ts): it
// finds planted secrets and names, and nothing in the same log without them.
import { expect, test } from './fixtures';
import { describe, preview, scanLog, type Secret } from './log-secrets';

const PASSWORD = 'Rathaus-Fenster-blau-2026';
const TOKEN = 'kQ3vXb7_Tz0aLm9-PqR2sU5wYc8dFg1hJk4nVx6Ze0A';
const PIN = '40817263';
const NAME = 'Rita Revision';
const UMLAUT_NAME = 'Anna Außen';

const secrets: Secret[] = [
  { kind: 'password', value: PASSWORD },
  { kind: 'invitation token', value: TOKEN },
  { kind: 'phone PIN', value: PIN },
  { kind: 'display name', value: NAME },
  { kind: 'display name', value: UMLAUT_NAME },
  // Too short to search for: a name like this occurs in ordinary text.
  { kind: 'display name', value: 'Max' },
];

// A server log as the suite captures it, with nothing secret in it: timestamps, digits, ids.
const clean = [
  '2026-12-04T21:03:22.731587Z  INFO klausur_server::server: klausur started listen=127.0.0.1:40817 media=127.0.0.1:26300',
  '2026-12-04T21:03:23.140817Z DEBUG klausur_server::meeting: participant joined meeting=m-408172634 participant=p7 count=3',
  '2026-12-04T21:03:24.000001Z  INFO klausur_server::dialin: call admitted meeting=m-17 caller=…6789 Maximum wait 1408172630 ms',
  'klausur: listening on http://127.0.0.1:40817 (media on udp 127.0.0.1:26300)',
].join('\n');

test('the scanner finds a planted secret and a planted name, and nothing in the log without them', () => {
  expect(scanLog(clean, secrets)).toEqual([]);

  const planted = `${clean}\n2026-12-04T21:03:25.5Z  WARN klausur_server::api: login for ${NAME} failed pin=${PIN}`;
  const found = scanLog(planted, secrets);
  expect(found.map((f) => f.kind).sort()).toEqual(['display name', 'phone PIN']);
  for (const f of found) {
    expect(f.line).toBe(5);
    expect(f.masked).toBe('2026-12-04T21:03:25.5Z  WARN klausur_server::api: login for ‹display name› failed pin=‹phone PIN›');
  }
  // The report names file, line and kind, and shows no secret whole.
  const report = describe('server-logs/server-1-1.log', found).join('\n');
  expect(report).toContain('server-logs/server-1-1.log:5: phone PIN "40…" (8 characters');
  expect(report).toContain('display name "Rita…" (13 characters');
  expect(report).not.toContain(PIN);
  expect(report).not.toContain(NAME);
});

test('a PIN is found only as a whole run of digits; secrets shorter than 6 characters are not searched', () => {
  // Inside longer digit runs (a timestamp's fraction, an id, a duration): not the PIN.
  expect(scanLog(`t=1${PIN} id=${PIN}9 x=0.${PIN}1`, secrets)).toEqual([]);
  // A 4-digit PIN among a timestamp's digits is not found; standing alone it is.
  expect(scanLog('2026-12-04T21:03:22Z', [{ kind: 'phone PIN', value: '0322' }])).toEqual([]);
  expect(scanLog('keys 0322#', [{ kind: 'phone PIN', value: '0322' }]).map((f) => f.kind)).toEqual(['phone PIN']);
  // "Max" is skipped (too short), though it occurs in the clean log ("Maximum").
  expect(scanLog('Max', secrets)).toEqual([]);
});

test('the forms a log prints secrets in: escaped, URL-encoded, and the shapes of unseen tickets and tokens', () => {
  const kinds = (log: string) => scanLog(log, secrets).map((f) => f.kind);
  expect(kinds(`body={"password":"${PASSWORD}"}`)).toEqual(['password']);
  // Reported once, under the recorded secret's kind (not again as a link or a token's shape).
  expect(kinds(`uri=/j/${TOKEN}`)).toEqual(['invitation token']);
  expect(kinds(`q=${encodeURIComponent(UMLAUT_NAME)}`)).toEqual(['display name']);
  expect(kinds(`name="${UMLAUT_NAME}"`)).toEqual(['display name']);
  // Values no test sees: a dial-in ticket in a request path or a join message, the gateway's
  // bearer token, a session cookie.
  const unseen = 'Q'.repeat(43);
  expect(kinds(`DELETE /api/dialin/calls/${unseen} 204`)).toEqual(['dial-in ticket']);
  expect(kinds(`Join { dial_in_ticket: Some("${unseen}") }`)).toEqual(['dial-in ticket']);
  expect(kinds(`authorization: Bearer ${unseen}`)).toEqual(['gateway token']);
  expect(kinds(`cookie: klausur_session=${unseen}`)).toEqual(['session cookie']);
  expect(kinds(`uri=/j/${unseen}`)).toEqual(['invitation link']);
  // Any value shaped like klausur's tokens (32 random bytes in base64url), recorded or not.
  const stranger = `${TOKEN.slice(0, 42)}B`;
  expect(kinds(`ticket=${stranger} x`)).toEqual(['token-shaped value (43 base64url characters)']);
  // The routes themselves are no secret, nor are long identifiers, hashes and ids.
  expect(kinds('route /api/dialin/calls/{ticket} and /j/{token}; dial_in_ticket: None')).toEqual([]);
  expect(kinds('klausur_server::meeting::mls_delivery_ordering_with_retries_enabled')).toEqual([]);
  expect(kinds(`hash=${'0123456789abcdef'.repeat(4)} meeting=99s8qbieyaiu3ncv ${'a1B'.repeat(15)}`)).toEqual([]);
});

test('a preview shows at most a third of a secret, and never more than 4 characters', () => {
  expect(preview(PIN)).toBe('40…');
  expect(preview(PASSWORD)).toBe('Rath…');
  expect(preview('123456')).toBe('12…');
});
