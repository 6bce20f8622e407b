// Telephone callers for the dial-in browser tests, with Debian's real SIP peers:
// - sipp (sip-tester) types the meeting number and PIN as RFC 4733 events from sip-tester's own
//   captures, stays, and hangs up with BYE;
// - baresip plays a tone file as its microphone, records what it hears, and is driven over its
//   ctrl_tcp interface (dial, DTMF, hang up).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync, openSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { recordDialKeys, recordSecret } from './log-secrets';
import { freeTcpPort, freeUdpPort } from './server';

const CAPTURES = '/usr/share/sip-tester';
/** The telephone number baresip calls from. */
const BARESIP_NUMBER = '+4930987654321';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function bindsFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const u = createSocket('udp4');
    u.on('error', () => res(false));
    u.bind(port, '127.0.0.1', () => {
      const t = createServer();
      t.on('error', () => u.close(() => res(false)));
      t.listen(port, '127.0.0.1', () => t.close(() => u.close(() => res(true))));
    });
  });
}

let nextBlock = 0;

/**
 * The first of `len` consecutive ports on 127.0.0.1 free for both UDP and TCP, below the
 * kernel's ephemeral range (32768 and up), so that no outgoing connection and no other test's
 * bind to port 0 takes one of them before the program that binds them. baresip needs this: it
 * listens on its SIP port over UDP and TCP, and over TLS one above.
 */
async function freePortBlock(len: number): Promise<number> {
  const first = 20_000;
  const span = 12_000;
  const start = process.pid % span;
  for (let tries = 0; tries < span; tries++) {
    const base = first + ((start + nextBlock) % (span - len));
    nextBlock += len + 1;
    let free = true;
    for (let p = base; p < base + len && free; p++) free = await bindsFree(p);
    if (free) return base;
  }
  throw new Error(`no ${len} free consecutive ports between ${first} and ${first + span}`);
}

function capture(key: string): string {
  const name = key === '*' ? 'star' : key === '#' ? 'pound' : key;
  return `${CAPTURES}/dtmf_2833_${name}.pcap`;
}

/**
 * The sipp scenario of a caller who types `keys`, then stays until told to hang up (a SIP INFO in
 * the call, see `SippCall.hangup`) or at most `stayMs`, and hangs up.
 */
function scenario(keys: string, stayMs: number, caller: string): string {
  const invite = `
  <send retrans="500"><![CDATA[
      INVITE sip:dialin@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Anrufer" <sip:${caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:dialin@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:${caller}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:dialin@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Anrufer" <sip:${caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:dialin@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:${caller}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <pause milliseconds="1500"/>`;
  // 800 ms from one key to the next: each capture plays for 140 ms in a thread of its own, and
  // on a loaded machine a thread that starts late must not overlap the next key's (the same key
  // twice has the same RTP timestamp in the captures, so an overlap would merge the two).
  const presses = [...keys]
    .map((k) => `  <nop><action><exec play_pcap_audio="${capture(k)}"/></action></nop>\n  <pause milliseconds="800"/>`)
    .join('\n');
  const bye = `
  <recv request="INFO" timeout="${stayMs}" ontimeout="bye"/>
  <label id="bye"/>
  <send retrans="500"><![CDATA[
      BYE sip:dialin@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Anrufer" <sip:${caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:dialin@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:${caller}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200" crlf="true"/>`;
  return `<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="klausur caller">${invite}\n${presses}${bye}\n</scenario>\n`;
}

export interface SippCall {
  /** Resolves with sipp's exit code when the call is over (0: answered, and the BYE got 200). */
  done: Promise<number | null>;
  /** sipp's traces of the call (its errors and every SIP message), for a failed assertion. */
  trace(): string;
  /** Tells the caller to hang up now (sipp sends its BYE). */
  hangup(): Promise<void>;
  kill(): void;
}

/**
 * A sipp caller to `gateway` (`host:port`) typing `keys`, staying until `hangup()` (at most
 * `stayMs`: a test that stops early must not leave the call open), then hanging up.
 */
export async function sippCall(dir: string, gateway: string, keys: string, stayMs: number, caller: string): Promise<SippCall> {
  if (!existsSync(CAPTURES)) throw new Error(`${CAPTURES} is missing: install Debian's sip-tester`);
  // Number, PIN and the caller's number must never reach the server's log (log-secrets.ts).
  recordDialKeys(keys);
  recordSecret('caller number', caller);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'scenario.xml');
  writeFileSync(file, scenario(keys, stayMs, caller));
  const sipPort = await freeUdpPort();
  const callId = `klausur-test-${process.pid}-${Date.now()}@127.0.0.1`;
  const args = [
    gateway, '-sf', file, '-m', '1', '-i', '127.0.0.1', '-p', String(sipPort), '-cid_str', callId,
    '-mi', '127.0.0.1', '-mp', String(await freeUdpPort()),
    '-timeout', `${Math.ceil(stayMs / 1000) + 60}s`, '-timeout_error', '-nostdin', '-trace_err', '-trace_msg',
  ];
  const child: ChildProcess = spawn('sipp', args, { cwd: dir, stdio: 'ignore' });
  const done = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const spawnedAt = Date.now();
  // sipp aborts the call on a request that comes while it still types (a `pause` after a key),
  // and the gateway may act on the PIN before the last key and its pause are through: the order
  // waits until sipp's scenario has reached its `recv`. The keys start 1.5 s after the call is
  // answered and take 0.8 s each; 2.5 s more for the answer and sipp's timers on a loaded
  // machine. (A test hangs up long after that in nearly every run; this only closes the race.)
  const typedBy = spawnedAt + 1500 + keys.length * 800 + 2500;
  // The hang-up order: a request in sipp's call (matched by its Call-ID) that its scenario waits for.
  const hangup = async () => {
    if (Date.now() < typedBy) await sleep(typedBy - Date.now());
    await sendHangup();
  };
  const sendHangup = () =>
    new Promise<void>((res, rej) => {
      const sock = createSocket('udp4');
      sock.bind(0, '127.0.0.1', () => {
        const { port } = sock.address();
        const info = [
          `INFO sip:caller@127.0.0.1:${sipPort} SIP/2.0`,
          `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-hangup-${Date.now()}`,
          `From: <sip:test@127.0.0.1:${port}>;tag=hangup`,
          `To: <sip:caller@127.0.0.1:${sipPort}>`,
          `Call-ID: ${callId}`,
          'CSeq: 1 INFO',
          'Max-Forwards: 70',
          'Content-Length: 0',
          '',
          '',
        ].join('\r\n');
        sock.send(info, sipPort, '127.0.0.1', (err) => {
          sock.close();
          if (err) rej(err);
          else res();
        });
      });
    });
  const trace = () =>
    readdirSync(dir)
      .filter((f) => f.endsWith('_errors.log') || f.endsWith('_messages.log'))
      .map((f) => `--- ${f}\n${readFileSync(join(dir, f), 'utf8').slice(-6000)}`)
      .join('\n');
  return { done, trace, hangup, kill: () => child.kill('SIGKILL') };
}

/** 16-bit mono WAV of a sine: `freq` Hz at `rate`, `secs` long. */
export function toneWav(path: string, freq: number, rate: number, secs: number, amplitude = 0.3): string {
  const n = rate * secs;
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) data.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * freq * i) / rate)), i * 2);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'ascii');
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVEfmt ', 8, 'ascii');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36, 'ascii');
  h.writeUInt32LE(data.length, 40);
  writeFileSync(path, Buffer.concat([h, data]));
  return path;
}

function readWav(path: string): Int16Array {
  const b = readFileSync(path);
  let i = 12;
  while (i + 8 <= b.length) {
    const id = b.toString('ascii', i, i + 4);
    const len = b.readUInt32LE(i + 4);
    if (id === 'data') {
      // A recording still open says 0 (or too much): then the data runs to the end of the file.
      const end = len === 0 || i + 8 + len > b.length ? b.length : i + 8 + len;
      const out = new Int16Array((end - i - 8) >> 1);
      for (let k = 0; k < out.length; k++) out[k] = b.readInt16LE(i + 8 + k * 2);
      return out;
    }
    i += 8 + len;
  }
  return new Int16Array(0);
}

/** Goertzel: the share of `freq` in `samples` (near 1 for a pure tone of it). */
export function toneShare(samples: Int16Array, rate: number, freq: number): number {
  if (samples.length === 0) return 0;
  const coeff = 2 * Math.cos((2 * Math.PI * freq) / rate);
  let s1 = 0;
  let s2 = 0;
  let energy = 0;
  for (const x of samples) {
    energy += x * x;
    const s = x + coeff * s1 - s2;
    s2 = s1;
    s1 = s;
  }
  if (energy <= 0) return 0;
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  return (2 * power) / samples.length / energy;
}

/** A baresip caller whose microphone is a tone. */
export class Baresip {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    private readonly ctrl: number,
  ) {}

  static async start(dir: string, toneHz: number): Promise<Baresip> {
    mkdirSync(join(dir, 'rec'), { recursive: true });
    const tone = toneWav(join(dir, 'tone.wav'), toneHz, 8000, 180);
    // SIP over UDP and TCP on `sip`, TLS on `sip + 1`.
    const sip = await freePortBlock(2);
    const ctrl = await freeTcpPort();
    const rtp = ((await freePortBlock(22)) + 1) & ~1;
    writeFileSync(
      join(dir, 'config'),
      [
        'poll_method\tepoll', `sip_listen\t127.0.0.1:${sip}`, 'net_interface\t127.0.0.1',
        `audio_source\taufile,${tone}`, 'audio_alert\taufile,/dev/null', 'audio_srate\t8000', 'audio_channels\t1',
        `rtp_ports\t${rtp}-${rtp + 20}`, 'module_path\t/usr/lib/baresip/modules', 'module\tg711.so', 'module\taufile.so',
        'module\tsndfile.so', 'module_app\taccount.so', 'module_app\tmenu.so', 'module\tctrl_tcp.so',
        `ctrl_tcp_listen\t127.0.0.1:${ctrl}`, `snd_path\t${join(dir, 'rec')}`, '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'accounts'), `<sip:${BARESIP_NUMBER}@127.0.0.1>;regint=0\n`);
    recordSecret('caller number', BARESIP_NUMBER);
    writeFileSync(join(dir, 'contacts'), '');
    const log = openSync(join(dir, 'baresip.log'), 'w');
    const child = spawn('baresip', ['-f', dir, '-v'], { stdio: ['ignore', log, log] });
    const b = new Baresip(child, dir, ctrl);
    for (let i = 0; i < 150; i++) {
      if (await b.command('reginfo', '').catch(() => false)) return b;
      await sleep(100);
    }
    throw new Error(`baresip did not start: ${b.log()}`);
  }

  log(): string {
    try {
      return readFileSync(join(this.dir, 'baresip.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** One ctrl_tcp command (netstring-framed JSON); true if baresip said ok. */
  command(command: string, params: string): Promise<boolean> {
    return new Promise((res, rej) => {
      const sock = createConnection({ host: '127.0.0.1', port: this.ctrl });
      let got = '';
      const timer = setTimeout(() => {
        sock.destroy();
        res(false);
      }, 5000);
      sock.on('error', (e) => {
        clearTimeout(timer);
        rej(e);
      });
      sock.on('connect', () => {
        const msg = JSON.stringify({ command, params, token: 't' });
        sock.write(`${Buffer.byteLength(msg)}:${msg},`);
      });
      sock.on('data', (d) => {
        got += d.toString('utf8');
        if (got.includes('"response":true')) {
          clearTimeout(timer);
          sock.end();
          res(got.includes('"ok":true'));
        }
      });
    });
  }

  /** Dials `gateway` and types `keys` (a key every 400 ms, after 3 s). */
  async call(gateway: string, keys: string): Promise<void> {
    recordDialKeys(keys);
    if (!(await this.command('dial', `sip:dialin@${gateway}`))) throw new Error(`baresip could not dial: ${this.log()}`);
    await sleep(3000);
    for (const k of keys) {
      if (!(await this.command('sndcode', k))) throw new Error(`DTMF ${k} failed: ${this.log()}`);
      await sleep(400);
    }
  }

  async hangup(): Promise<void> {
    await this.command('hangup', '').catch(() => false);
  }

  /** What baresip heard (8 kHz), once the recording stopped growing (at most 10 s). */
  async heardWhenClosed(): Promise<Int16Array> {
    let last = -1;
    for (let i = 0; i < 50; i++) {
      const n = this.heard().length;
      if (n === last && n > 0) break;
      last = n;
      await sleep(200);
    }
    return this.heard();
  }

  /** What baresip heard so far (8 kHz). */
  heard(): Int16Array {
    const rec = join(this.dir, 'rec');
    const file = readdirSync(rec).sort().find((f) => f.endsWith('-dec.wav'));
    return file ? readWav(join(rec, file)) : new Int16Array(0);
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}
