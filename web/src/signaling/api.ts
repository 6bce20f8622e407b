// Small client for the klausur HTTP API (same origin, JSON, cookie session + CSRF header).

export type Id = number | string;
export type UserRole = 'admin' | 'staff';
export type Profile = 'strict' | 'internal';

export interface SessionUser {
  id: Id;
  username: string;
  display_name: string;
  role: UserRole;
  must_change_password: boolean;
}

export interface Session {
  user: SessionUser;
  csrf_token: string;
}

export interface UserRecord {
  id: Id;
  username: string;
  display_name: string;
  role: UserRole;
  disabled: boolean;
  must_change_password: boolean;
}

/** Telephone dial-in of a meeting created with `dial_in: true`. */
export interface MeetingDialIn {
  /** The meeting's dial-in number, digits only ("12345678"). */
  meeting_number: string;
  /** What callers dial (the gateway's number from the server's configuration), if configured. */
  phone_number: string | null;
  /** Whether the meeting's security profile accepts calls (the strict profile never does). */
  allowed: boolean;
}

export interface Meeting {
  id: Id;
  title: string;
  starts_at: string | null;
  organiser: { id: Id; display_name: string };
  profile: Profile;
  is_moderator: boolean;
  ended: boolean;
  /** Null (or missing, from a server without dial-in) when the meeting has no dial-in number. */
  dial_in?: MeetingDialIn | null;
}

export type InvitationKind = 'guest' | 'colleague';

export interface Invitation {
  id: Id;
  name: string;
  kind: InvitationKind;
  user_id: Id | null;
  expires_at: string;
  revoked: boolean;
  last_used_at: string | null;
  /** The invitation has a personal phone PIN (the PIN itself was shown once, at creation). */
  has_phone_pin?: boolean;
}

export interface MeetingDetail extends Meeting {
  moderators: { id: Id; display_name: string }[];
  invitations: Invitation[];
}

export interface CreatedInvitation {
  invitation: Invitation;
  token: string;
  link: string;
  /** The invitee's personal phone PIN (digits), shown only now; null without dial-in. */
  phone_pin?: string | null;
}

export interface InviteInfo {
  meeting_id: Id;
  meeting_title: string;
  invitee_name: string;
  kind: InvitationKind;
  /** How to dial in by telephone (the PIN is not here: it came with the invitation). */
  dial_in?: { meeting_number: string; phone_number: string | null } | null;
}

export interface PublicMeeting {
  id: Id;
  title: string;
}

/** Who did what, in an audit record. */
export interface AuditActor {
  /** `user`, `guest`, `lobby`, `phone`, `anonymous`, `system` or `operator`. */
  kind: string;
  id?: string;
  name?: string;
}

/** One record of the server's hash-chained audit trail. */
export interface AuditRecord {
  seq: number;
  /** RFC 3339. */
  at: string;
  /** Dotted `family.event`, e.g. `lobby.admitted`. */
  kind: string;
  actor: AuditActor;
  meeting_id?: string;
  /** The client's IP address, only for events that need it. */
  source?: string;
  details: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

export interface AuditPage {
  records: AuditRecord[];
  /** Pass as `before` for the next (older) page; absent on the last page. */
  next_before?: number;
}

/** Filters of `GET /api/audit`; empty fields are left out. */
export interface AuditQuery {
  /** An exact kind (`lobby.admitted`) or a family (`lobby`). */
  kind?: string;
  meeting?: string;
  /** Free text: actor name or id, kind, meeting id, details. */
  q?: string;
  /** RFC 3339. */
  since?: string;
  /** RFC 3339 (exclusive). */
  until?: string;
  before?: number;
  /** 1 to 1000 (the server's default: 100). */
  limit?: number;
}

export interface AuditVerification {
  intact: boolean;
  records: number;
  /** The newest record as `SEQ:HASH`, to be noted and checked later. */
  head?: string;
  problems: string[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message || code || `HTTP ${status}`);
    this.name = 'ApiError';
  }
}

let csrfToken: string | null = null;

/** Remembers the CSRF token from /api/session or /api/login; sent with every POST/DELETE. */
export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && path !== '/api/login' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  if (!res.ok) {
    let code = `http_${res.status}`;
    let message = '';
    try {
      const data = (await res.json()) as { error?: { code?: string; message?: string } };
      if (data?.error?.code) code = data.error.code;
      if (data?.error?.message) message = data.error.message;
    } catch {
      /* body was not JSON */
    }
    throw new ApiError(res.status, code, message);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

const enc = encodeURIComponent;

export const api = {
  async session(): Promise<Session | null> {
    try {
      const s = await request<Session>('GET', '/api/session');
      setCsrfToken(s.csrf_token);
      return s;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        setCsrfToken(null);
        return null;
      }
      throw e;
    }
  },
  async login(username: string, password: string): Promise<Session> {
    const s = await request<Session>('POST', '/api/login', { username, password });
    setCsrfToken(s.csrf_token);
    return s;
  },
  async logout(): Promise<void> {
    await request<void>('POST', '/api/logout');
    setCsrfToken(null);
  },
  changePassword(current_password: string, new_password: string): Promise<void> {
    return request('POST', '/api/password', { current_password, new_password });
  },
  users(): Promise<UserRecord[]> {
    return request('GET', '/api/users');
  },
  createUser(u: { username: string; display_name: string; password: string; role: UserRole }): Promise<UserRecord> {
    return request('POST', '/api/users', u);
  },
  disableUser(id: Id): Promise<void> {
    return request('POST', `/api/users/${enc(String(id))}/disable`);
  },
  meetings(): Promise<Meeting[]> {
    return request('GET', '/api/meetings');
  },
  /** `dial_in: true` gives the meeting a dial-in number (calls still need a profile that allows them). */
  createMeeting(m: { title: string; starts_at: string | null; profile: Profile; dial_in?: boolean }): Promise<Meeting> {
    return request('POST', '/api/meetings', m);
  },
  meeting(id: Id): Promise<MeetingDetail> {
    return request('GET', `/api/meetings/${enc(String(id))}`);
  },
  createInvitation(
    meetingId: Id,
    inv: { name: string; kind: InvitationKind; user_id?: Id | null; expires_in_hours?: number },
  ): Promise<CreatedInvitation> {
    return request('POST', `/api/meetings/${enc(String(meetingId))}/invitations`, inv);
  },
  revokeInvitation(meetingId: Id, invitationId: Id): Promise<void> {
    return request('DELETE', `/api/meetings/${enc(String(meetingId))}/invitations/${enc(String(invitationId))}`);
  },
  addModerator(meetingId: Id, userId: Id): Promise<void> {
    return request('POST', `/api/meetings/${enc(String(meetingId))}/moderators`, { user_id: userId });
  },
  invite(token: string): Promise<InviteInfo> {
    return request('GET', `/api/invite/${enc(token)}`);
  },
  publicMeeting(id: Id): Promise<PublicMeeting> {
    return request('GET', `/api/meetings/${enc(String(id))}/public`);
  },
  /**
   * A short-lived identity credential for this device's key (hex): staff by session, an invitee
   * by `invite_token`, a lobby guest by `meeting_id` and `display_name`.
   */
  credential(body: {
    device_key: string;
    invite_token?: string;
    meeting_id?: string;
    display_name?: string;
  }): Promise<{ credential: string; ca_public_key: string; not_after_ms: number }> {
    return request('POST', '/api/identity/credential', body);
  },
  /** Audit records matching `query`, newest first (administrators only). */
  audit(query: AuditQuery = {}): Promise<AuditPage> {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined || value === null || value === '') continue;
      params.set(key, String(value));
    }
    const qs = params.toString();
    return request('GET', `/api/audit${qs ? `?${qs}` : ''}`);
  },
  /** The audit trail's hash chain checked now (administrators only). */
  auditVerify(): Promise<AuditVerification> {
    return request('GET', '/api/audit/verify');
  },
};
