import { useEffect, useRef, useState, type FormEvent, type Ref } from 'react';
import { MAX_CHAT_CHARS } from '../../signaling/protocol';
import type { ChatEntry } from '../../meeting/state';
import { useI18n } from '../../i18n';
import { LockIcon } from '../icons';

export function ChatPanel({
  messages,
  onSend,
  canSend,
  fieldRef,
}: {
  messages: ChatEntry[];
  onSend(text: string): void;
  /** Whether this browser is in the encrypted group (chat is sent only from there). */
  canSend: boolean;
  /** The message field, for the room to give it the focus. */
  fieldRef?: Ref<HTMLTextAreaElement>;
}) {
  const { t, lang } = useI18n();
  const [text, setText] = useState('');
  const listRef = useRef<HTMLOListElement>(null);
  const timeFmt = new Intl.DateTimeFormat(lang === 'de' ? 'de-DE' : 'en-GB', { hour: '2-digit', minute: '2-digit' });

  useEffect(() => {
    const el = listRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [messages.length]);

  function submit(e: FormEvent) {
    e.preventDefault();
    // Enter submits too: the same rule as the disabled button.
    if (!text.trim() || !canSend) return;
    onSend(text);
    setText('');
  }

  return (
    <div className="chat" data-testid="chat-panel">
      <p className="muted small chat-e2ee" data-testid="chat-e2ee">
        <LockIcon /> {t('chat.e2ee')}
      </p>
      {messages.length === 0 ? (
        <p className="muted small chat-empty">{t('chat.empty')}</p>
      ) : (
        <ol className="chat-list" ref={listRef} aria-live="polite">
          {messages.map((m) => (
            <li
              key={m.seq}
              className={`chat-message${m.self ? ' own' : ''}${m.delivery === 'failed' ? ' failed' : ''}`}
              data-testid="chat-message"
              data-from={m.fromName}
              data-delivery={m.delivery}
              data-mismatch={m.mismatch ? 'true' : undefined}
            >
              <div className="chat-meta">
                <strong>{m.self ? t('chat.you') : m.fromName}</strong>
                {m.mismatch && (
                  <span className="chat-warning" role="img" aria-label={t('chat.mismatch')} title={t('chat.mismatch')}>
                    ⚠
                  </span>
                )}
                <time dateTime={new Date(m.sentAtMs).toISOString()}>{timeFmt.format(new Date(m.sentAtMs))}</time>
                {m.delivery !== 'sent' && (
                  <span className="chat-delivery">{t(m.delivery === 'sending' ? 'chat.sending' : 'chat.failed')}</span>
                )}
              </div>
              <p className="chat-text">{m.text}</p>
            </li>
          ))}
        </ol>
      )}
      <form className="chat-form" onSubmit={submit}>
        <textarea
          ref={fieldRef}
          value={text}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && !e.shiftKey) {
              e.preventDefault();
              submit(e);
            }
          }}
          maxLength={MAX_CHAT_CHARS}
          rows={2}
          placeholder={t('chat.placeholder')}
          aria-label={t('chat.placeholder')}
          data-testid="chat-input"
        />
        <button type="submit" className="btn primary small" disabled={!text.trim() || !canSend} data-testid="chat-send">
          {t('chat.send')}
        </button>
      </form>
    </div>
  );
}
