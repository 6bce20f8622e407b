import { describe, expect, it } from 'vitest';
import { selectedTransport } from './peer';

type Stat = Record<string, unknown>;

function report(stats: Stat[]): Map<string, Stat> {
  return new Map(stats.map((s) => [String(s.id), s]));
}

const pair = (id: string, local: string, extra: Stat = {}): Stat => ({ id, type: 'candidate-pair', localCandidateId: local, remoteCandidateId: 'r', ...extra });
const local = (id: string, candidateType: string, protocol: string, relayProtocol?: string): Stat => ({
  id,
  type: 'local-candidate',
  candidateType,
  protocol,
  ...(relayProtocol ? { relayProtocol } : {}),
});

describe('selectedTransport', () => {
  it('follows the transport’s selected pair to its local candidate', () => {
    const r = report([
      { id: 't', type: 'transport', selectedCandidatePairId: 'p2' },
      pair('p1', 'l1'),
      pair('p2', 'l2'),
      local('l1', 'host', 'udp'),
      local('l2', 'host', 'tcp'),
    ]);
    expect(selectedTransport(r)).toEqual({ kind: 'tcp', relayProtocol: null, ipv6: null });
  });

  it('says relay with the protocol to the TURN server', () => {
    const r = report([{ id: 't', type: 'transport', selectedCandidatePairId: 'p' }, pair('p', 'l'), local('l', 'relay', 'udp', 'tls')]);
    expect(selectedTransport(r)).toEqual({ kind: 'relay', relayProtocol: 'tls', ipv6: null });
  });

  it('says which family the server’s address is of', () => {
    const remote = (address: string): Stat => ({ id: 'r', type: 'remote-candidate', address });
    const base = [{ id: 't', type: 'transport', selectedCandidatePairId: 'p' }, pair('p', 'l'), local('l', 'host', 'udp')];
    expect(selectedTransport(report([...base, remote('2001:db8::10')]))?.ipv6).toBe(true);
    expect(selectedTransport(report([...base, remote('203.0.113.10')]))?.ipv6).toBe(false);
    // Firefox before the `address` name: `ip`.
    expect(selectedTransport(report([...base, { id: 'r', type: 'remote-candidate', ip: 'fd00::1' }]))?.ipv6).toBe(true);
  });

  it('falls back to the nominated succeeded pair, and is null without a selected pair', () => {
    const r = report([pair('p', 'l', { nominated: true, state: 'succeeded' }), local('l', 'srflx', 'udp')]);
    expect(selectedTransport(r)).toEqual({ kind: 'udp', relayProtocol: null, ipv6: null });
    expect(selectedTransport(report([pair('p', 'l', { state: 'in-progress' }), local('l', 'host', 'udp')]))).toBeNull();
    expect(selectedTransport(report([{ id: 't', type: 'transport' }]))).toBeNull();
  });
});
