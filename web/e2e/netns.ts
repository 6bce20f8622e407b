// A network namespace for a browser on a network that blocks UDP or a bad link: a veth pair to
// the host (10.201.<n>.1 on the host side, where the servers listen; 10.201.<n>.2 inside; and,
// when asked, fd00:201:<n>::1 and ::2 for IPv6),
// nftables rules inside the namespace, and a wrapper that runs Debian's Chromium in it. Needs
// root (the tests run as root on the test machine); every name starts with `kztcp`.
//
// Bad links: the kernel here has HTB but no netem (nor tbf), so a bandwidth limit is an HTB class
// on the host side of the veth pair (the browser's downlink), and loss and jitter come from a UDP
// relay in this process (`impairedUdp`) that the namespace's media traffic is redirected through.
import { execFileSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Netns {
  name: string;
  /** The host side's address: the servers listen here. */
  hostIp: string;
  /** The namespace side's address: the browser's. */
  nsIp: string;
  /** The same two sides' IPv6 addresses (`fd00:201:<n>::1` and `::2`), configured only when
   * the namespace was created with `ipv6`. */
  hostIp6: string;
  nsIp6: string;
  /** An executable that runs Chromium inside the namespace (for `executablePath`). */
  chromium: string;
  /** Replaces the namespace's firewall rules (an nftables ruleset for `nft -f`). */
  setRules(rules: string): void;
  remove(): void;
}

function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Whether this process may create network namespaces (root with `ip` and `nft`). */
export function netnsAvailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const tool of ['ip', 'nft']) {
    try {
      run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return `needs ${tool} (scripts/setup.sh --with-browser installs nftables)`;
    }
  }
  return null;
}

/** Creates namespace `kztcp<n>` (removing a leftover of an earlier run first). */
export function createNetns(n: number, opts: { ipv6?: boolean } = {}, chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'): Netns {
  const name = `kztcp${n}`;
  const host = `kztcp${n}h`;
  const inner = `kztcp${n}b`;
  const hostIp = `10.201.${n}.1`;
  const nsIp = `10.201.${n}.2`;
  const hostIp6 = `fd00:201:${n}::1`;
  const nsIp6 = `fd00:201:${n}::2`;
  const del = () => {
    try {
      run('ip', ['netns', 'del', name]);
    } catch {
      /* not there */
    }
    try {
      run('ip', ['link', 'del', host]);
    } catch {
      /* gone with the namespace */
    }
  };
  del();
  run('ip', ['netns', 'add', name]);
  const inNs = (...args: string[]) => run('ip', ['netns', 'exec', name, ...args]);
  try {
    run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', inner]);
    run('ip', ['link', 'set', inner, 'netns', name]);
    run('ip', ['addr', 'add', `${hostIp}/24`, 'dev', host]);
    run('ip', ['link', 'set', host, 'up']);
    inNs('ip', 'addr', 'add', `${nsIp}/24`, 'dev', inner);
    if (opts.ipv6) {
      // IPv6 beside it, usable at once (no duplicate address detection on a link of two).
      run('ip', ['-6', 'addr', 'add', `${hostIp6}/64`, 'dev', host, 'nodad']);
      inNs('ip', '-6', 'addr', 'add', `${nsIp6}/64`, 'dev', inner, 'nodad');
    }
    inNs('ip', 'link', 'set', inner, 'up');
    inNs('ip', 'link', 'set', 'lo', 'up');
  } catch (e) {
    del();
    throw e;
  }
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const chromium = join(dir, 'chromium-in-netns');
  writeFileSync(chromium, `#!/bin/sh\nexec ip netns exec ${name} ${chromiumPath} "$@"\n`);
  chmodSync(chromium, 0o755);
  return {
    name,
    hostIp,
    nsIp,
    hostIp6,
    nsIp6,
    chromium,
    setRules(rules: string) {
      run('ip', ['netns', 'exec', name, 'nft', '-f', '-'], `flush ruleset\n${rules}\n`);
    },
    remove() {
      del();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The namespace's IPv4 address `from` goes away (its interface keeps its link), as when a
 * laptop leaves a Wi-Fi network. */
export function dropAddress(ns: Netns, from: string): void {
  run('ip', ['netns', 'exec', ns.name, 'ip', 'addr', 'del', `${from}/24`, 'dev', `${ns.name}b`]);
}

/** The namespace gets the IPv4 address `to` on the same link, as when the laptop joins another
 * network. */
export function addAddress(ns: Netns, to: string): void {
  run('ip', ['netns', 'exec', ns.name, 'ip', 'addr', 'add', `${to}/24`, 'dev', `${ns.name}b`]);
}

/** Rules that drop (and count) every packet in and out of the namespace that `match` matches
 * (an nftables expression), loopback aside. */
function dropping(match: string): string {
  return `
table inet kztcp {
  chain out {
    type filter hook output priority 0; policy accept;
    oif lo accept
    ${match} counter drop
  }
  chain in {
    type filter hook input priority 0; policy accept;
    iif lo accept
    ${match} counter drop
  }
}`;
}

/** Rules that drop every IPv4 packet: a network with IPv6 only. */
export const DROP_IPV4 = dropping('meta nfproto ipv4');

/** Rules that drop every UDP packet. */
export const DROP_UDP = dropping('meta l4proto udp');

/** Rules that let only TCP to `host` on `ports` out of the namespace (and the answers in); other
 * TCP connections are refused at once (a reset), everything else is dropped. */
export function onlyTcpTo(host: string, ports: number[]): string {
  return `
table inet kztcp {
  chain out {
    type filter hook output priority 0; policy drop;
    oif lo accept
    ip daddr ${host} tcp dport { ${ports.join(', ')} } accept
    meta l4proto tcp counter reject with tcp reset
    counter
  }
  chain in {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ip saddr ${host} tcp sport { ${ports.join(', ')} } accept
    counter
  }
}`;
}

/** The packet counters of the namespace's rules (to show the rules were hit). */
export function ruleCounters(ns: Netns): string {
  return run('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'ruleset']);
}

/** The host end of the namespace's veth pair: its egress is the namespace's downlink. */
const hostEnd = (ns: Netns) => `${ns.name}h`;

/** Limits the namespace's downlink (what the host sends into it) to `kbit` kbit/s with a queue of
 * `packets` packets (a mobile link's buffer, not an endless one), replacing an earlier limit. */
export function limitDownlink(ns: Netns, kbit: number, packets = 40): void {
  const dev = hostEnd(ns);
  try {
    run('tc', ['qdisc', 'del', 'dev', dev, 'root']);
  } catch {
    /* no limit yet */
  }
  run('tc', ['qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10']);
  run('tc', ['class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', `${kbit}kbit`, 'ceil', `${kbit}kbit`]);
  run('tc', ['qdisc', 'add', 'dev', dev, 'parent', '1:10', 'handle', '10:', 'pfifo', 'limit', String(packets)]);
}

/** The bytes the namespace's downlink limit sent and the packets it dropped. */
export function downlinkCounters(ns: Netns): { sentBytes: number; dropped: number } {
  const out = run('tc', ['-s', 'class', 'show', 'dev', hostEnd(ns)]);
  const m = /Sent (\d+) bytes \d+ pkt \(dropped (\d+)/.exec(out);
  return { sentBytes: Number(m?.[1] ?? 0), dropped: Number(m?.[2] ?? 0) };
}

export interface Impairment {
  /** Share of datagrams dropped, each direction, 0 to 100. */
  lossPercent: number;
  /** Every datagram is held `delayMs` plus a random part of up to `jitterMs` (so they reorder). */
  delayMs: number;
  jitterMs: number;
}

export interface ImpairedUdp {
  /** Nftables rules for the namespace that send its UDP to the server's media port through the
   * relay (`setRules`). */
  rules: string;
  /** The relay's own port (on `hostIp`), for rules of another kind. */
  port: number;
  set(impairment: Impairment): void;
  /** Datagrams relayed and dropped so far (both directions). */
  counts(): { relayed: number; dropped: number };
  /** Every mapping is made anew: the browser's datagrams reach the server from new ports (a NAT
   * that lost its mappings, as a carrier-grade NAT or a restarted home router does), and what
   * the server still sends to the old ones is lost. */
  rebind(): void;
  close(): void;
}

/**
 * A UDP relay on the host side of `ns` for the media server at `hostIp:serverPort`: the
 * namespace's datagrams to that port are redirected to it (destination NAT inside the
 * namespace, so the browser still sees the server's address), and it passes them on, each
 * direction impaired as `set` says. The server sees the relay's socket as the browser's address,
 * as it would a NAT's.
 */
export async function impairedUdp(ns: Pick<Netns, 'hostIp'>, serverPort: number): Promise<ImpairedUdp> {
  let impairment: Impairment = { lossPercent: 0, delayMs: 0, jitterMs: 0 };
  let relayed = 0;
  let dropped = 0;
  const bind = (sock: Socket) => new Promise<void>((res) => sock.bind(0, ns.hostIp, () => res()));
  const inward = createSocket('udp4');
  await bind(inward);
  const upstream = new Map<string, Socket>();
  const pass = (send: () => void) => {
    if (Math.random() * 100 < impairment.lossPercent) {
      dropped++;
      return;
    }
    relayed++;
    const wait = impairment.delayMs + Math.random() * impairment.jitterMs;
    if (wait <= 0) send();
    else setTimeout(send, wait);
  };
  // The socket towards the server for one of the browser's sockets (`from`), as a NAT's mapping.
  const open = (from: { address: string; port: number }): Socket => {
    const sock = createSocket('udp4');
    upstream.set(`${from.address}:${from.port}`, sock);
    sock.on('message', (back) => pass(() => inward.send(back, from.port, from.address)));
    sock.on('error', () => undefined);
    sock.bind(0, ns.hostIp);
    return sock;
  };
  inward.on('message', (msg, from) => {
    const sock = upstream.get(`${from.address}:${from.port}`) ?? open(from);
    pass(() => sock.send(msg, serverPort, ns.hostIp));
  });
  inward.on('error', () => undefined);
  const relayPort = inward.address().port;
  return {
    rules: `
table ip kzrelay {
  chain out {
    type nat hook output priority -100; policy accept;
    ip daddr ${ns.hostIp} udp dport ${serverPort} counter dnat to ${ns.hostIp}:${relayPort}
  }
}`,
    port: relayPort,
    set(i: Impairment) {
      impairment = { ...i };
    },
    counts: () => ({ relayed, dropped }),
    rebind() {
      for (const [key, sock] of [...upstream]) {
        sock.close();
        const [address, port] = [key.slice(0, key.lastIndexOf(':')), Number(key.slice(key.lastIndexOf(':') + 1))];
        open({ address, port });
      }
    },
    close() {
      inward.close();
      for (const s of upstream.values()) s.close();
    },
  };
}
