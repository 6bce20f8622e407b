import { describe, expect, it } from 'vitest';
import { ApiError } from '../signaling/api';
import { translate, type Translate } from '../i18n';
import { describeError } from './errors';

const t: Translate = (key, vars) => translate('de', key, vars);

describe('describeError', () => {
  it('says that the server cannot save, in the user\'s language, instead of its English message', () => {
    const e = new ApiError(503, 'storage_unavailable', 'The server cannot save changes right now');
    expect(describeError(t, e)).toBe(translate('de', 'common.storageUnavailable'));
    expect(describeError(t, e)).toContain('nichts geändert');
  });
  it('says that the server cannot reach its database, in the user\'s language', () => {
    const e = new ApiError(503, 'database_unavailable', 'The server cannot reach its database right now');
    expect(describeError(t, e)).toBe(translate('de', 'common.databaseUnavailable'));
    expect(describeError(t, e)).toContain('nichts geändert');
  });
  it('passes other server messages on, and names an unreachable server', () => {
    expect(describeError(t, new ApiError(409, 'conflict', 'username taken'))).toContain('username taken');
    expect(describeError(t, new ApiError(0, 'network', 'fetch failed'))).toBe(translate('de', 'common.networkError'));
  });
});
