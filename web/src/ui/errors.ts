import { ApiError } from '../signaling/api';
import type { Translate } from '../i18n';

/** A readable sentence for an API failure. */
export function describeError(t: Translate, e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 0) return t('common.networkError');
    if (e.code === 'storage_unavailable') return t('common.storageUnavailable');
    return t('common.error', { message: e.message || e.code });
  }
  return t('common.error', { message: e instanceof Error ? e.message : String(e) });
}
