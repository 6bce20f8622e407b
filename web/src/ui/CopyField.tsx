import { useState } from 'react';
import { useT } from '../i18n';
import { CopyIcon } from './icons';

async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Fallback for non-secure contexts or denied clipboard permission.
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.style.position = 'fixed';
    ta.style.opacity = '0';
    document.body.appendChild(ta);
    ta.select();
    const ok = document.execCommand('copy');
    ta.remove();
    return ok;
  }
}

/** A read-only value with a copy button; `copyValue` is what is copied, if not the value shown. */
export function CopyField({ value, copyValue, label, testId, name }: { value: string; copyValue?: string; label: string; testId?: string; name?: string }) {
  const t = useT();
  const [copied, setCopied] = useState(false);
  return (
    <div className="copy-field">
      <input
        readOnly
        value={value}
        aria-label={label}
        onFocus={(e) => e.currentTarget.select()}
        data-testid={testId}
        data-name={name}
        data-copy={copyValue}
      />
      <button
        type="button"
        className="btn secondary small"
        data-testid={testId ? `${testId}-copy` : undefined}
        onClick={async () => {
          if (await copyText(copyValue ?? value)) {
            setCopied(true);
            setTimeout(() => setCopied(false), 2000);
          }
        }}
      >
        <CopyIcon width={16} height={16} />
        <span aria-live="polite">{copied ? t('detail.copied') : t('detail.copy')}</span>
      </button>
    </div>
  );
}
