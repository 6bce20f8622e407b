import { ApiError } from '../signaling/api';
import type { Translate } from '../i18n';

/**
 * The user's-language sentence for a server error code that has one (the storage that cannot
 * be written, the database that cannot be reached), instead of the server's English message.
 */
export function codeMessage(t: Translate, code: string): string | undefined {
  if (code === 'storage_unavailable') return t('common.storageUnavailable');
  if (code === 'database_unavailable') return t('common.databaseUnavailable');
  if (code === 'cluster_unavailable') return t('common.clusterUnavailable');
  return undefined;
}

/** A readable sentence for an API failure. */
export function describeError(t: Translate, e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 0) return t('common.networkError');
    const known = codeMessage(t, e.code);
    if (known) return known;
    return t('common.error', { message: e.message || e.code });
  }
  return t('common.error', { message: e instanceof Error ? e.message : String(e) });
}
