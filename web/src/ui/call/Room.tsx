import { useEffect, useMemo, useRef, useState } from 'react';
import type { CallSnapshot, MeetingController } from '../../meeting/controller';
import { isModerator as selfIsModerator } from '../../meeting/state';
import { lobbyCaller, phoneBanner, phoneCallers } from '../../meeting/phone';
import type { Participant } from '../../signaling/protocol';
import type { RemoteTrack } from '../../media/peer';
import { useT, type StringKey } from '../../i18n';
import { LangSwitch } from '../Shell';
import { codeMessage } from '../errors';
import { ProfileBadge } from '../pages/MeetingsPage';
import {
  BellIcon,
  HandIcon,
  CamIcon,
  CamOffIcon,
  ChatIcon,
  CloseIcon,
  LeaveIcon,
  LockIcon,
  MicIcon,
  MicOffIcon,
  PeopleIcon,
  ScreenIcon,
  ShieldIcon,
  KeyboardIcon,
} from '../icons';
import { ScreenTile, Tile } from './Tile';
import { AudioSink } from './media';
import { arrangeOthers, gridPages, GRID_PAGE_SIZE, visibleVideos } from '../../meeting/tiles';
import { ChatPanel } from './ChatPanel';
import { PeoplePanel } from './PeoplePanel';
import { SecurityPanel } from './SecurityPanel';
import { E2eeIndicator, NoticeLine } from './E2ee';
import { ReconnectBanner } from './Reconnecting';
import { MaintenanceBanner } from './Maintenance';
import { PhoneBanner } from './Phone';
import { ShortcutsDialog } from './ShortcutsDialog';
import { setShortcutsEnabled, shortcutAction, shortcutKey, shortcutsEnabled, type ShortcutAction } from './shortcuts';

type Panel = 'chat' | 'people' | 'security' | null;

interface Toast {
  id: number;
  kind: 'lobby' | 'error' | 'contested';
  text: string;
}

/** Columns and rows for `n` tiles; on a screen held upright (a phone) the rows are the longer
 * side, so that two people are shown one above the other, not as two thin strips. */
function gridShape(n: number, upright = false): { cols: number; rows: number } {
  if (upright && n <= 3) return { cols: 1, rows: Math.max(1, n) };
  const shape = landscapeShape(n);
  return upright ? { cols: shape.rows, rows: shape.cols } : shape;
}

function landscapeShape(n: number): { cols: number; rows: number } {
  if (n <= 1) return { cols: 1, rows: 1 };
  if (n === 2) return { cols: 2, rows: 1 };
  if (n <= 4) return { cols: 2, rows: 2 };
  if (n <= 6) return { cols: 3, rows: 2 };
  if (n <= 9) return { cols: 3, rows: 3 };
  const cols = Math.ceil(Math.sqrt(n));
  return { cols, rows: Math.ceil(n / cols) };
}

/** A window clearly taller than wide: a phone or tablet held upright. */
function isUpright(): boolean {
  return window.innerHeight > window.innerWidth * 1.2;
}

export function Room({ controller, snap }: { controller: MeetingController; snap: CallSnapshot }) {
  const t = useT();
  const { room, local, remote } = snap;
  const meeting = room.meeting!;
  const [panel, setPanel] = useState<Panel>(null);
  const [page, setPage] = useState(0);
  const [upright, setUpright] = useState(isUpright);
  const [pinnedId, setPinnedId] = useState<string | null>(null);
  const stageRef = useRef<HTMLElement>(null);
  const [seenChat, setSeenChat] = useState(0);
  const [toasts, setToasts] = useState<Toast[]>([]);
  const toastSeq = useRef(0);
  const moderator = selfIsModerator(room);
  // Telephone callers: by the server's participant kind or the roster's credential kind.
  const callers = useMemo(() => phoneCallers(room.participants, snap.e2ee?.roster), [room.participants, snap.e2ee?.roster]);
  const banner = phoneBanner(callers);
  const callerById = new Map(callers.filter((c) => c.participantId !== null).map((c) => [c.participantId as string, c]));

  const pushToast = (kind: Toast['kind'], text: string, ms = 8000) => {
    const id = ++toastSeq.current;
    setToasts((list) => [...list.filter((x) => x.kind !== kind), { id, kind, text }]);
    setTimeout(() => setToasts((list) => list.filter((x) => x.id !== id)), ms);
  };

  // Someone arrived in the lobby (the sound is played by the controller).
  const lastArrivals = useRef(room.lobbyArrivals);
  useEffect(() => {
    if (room.lobbyArrivals === lastArrivals.current) return;
    lastArrivals.current = room.lobbyArrivals;
    if (!moderator) return;
    const newest = room.lobby.at(-1);
    const caller = newest ? lobbyCaller(newest) : null;
    pushToast(
      'lobby',
      caller
        ? t('phone.lobbyArrived', { name: caller.displayName })
        : newest
          ? t('room.lobbyArrivedNamed', { name: newest.display_name })
          : t('room.lobbyArrived'),
      15000,
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [room.lobbyArrivals]);

  // Someone else joined with this participant's invitation: say so until dismissed (a minute).
  const lastContested = useRef(room.invitationContested);
  useEffect(() => {
    if (room.invitationContested === lastContested.current) return;
    lastContested.current = room.invitationContested;
    pushToast('contested', t('room.invitationContested'), 60000);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [room.invitationContested]);

  // Server errors are shown unobtrusively.
  const lastError = useRef(room.lastError);
  useEffect(() => {
    if (!room.lastError || room.lastError === lastError.current) return;
    lastError.current = room.lastError;
    const message = codeMessage(t, room.lastError.code) ?? (room.lastError.message || room.lastError.code);
    pushToast('error', t('room.serverError', { message }), 6000);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [room.lastError]);

  useEffect(() => {
    if (local.deviceError) pushToast('error', t(`room.deviceError.${local.deviceError}` as StringKey), 6000);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [local.deviceError]);

  useEffect(() => {
    if (panel === 'chat') setSeenChat(room.chat.length);
  }, [panel, room.chat.length]);
  const unread = panel === 'chat' ? 0 : Math.max(0, room.chat.length - seenChat);

  const self = room.participants.find((p) => p.id === room.selfId);
  // The others in a stable order in which the current speaker is always on the grid's first page.
  const lastSpoke = useRef(new Map<string, number>());
  const order = useRef<string[]>([]);
  const otherIds = room.participants.filter((p) => p.id !== room.selfId).map((p) => p.id);
  const arranged = useMemo(() => {
    if (room.activeSpeaker) lastSpoke.current.set(room.activeSpeaker, Date.now());
    order.current = arrangeOthers(order.current, otherIds, room.activeSpeaker, GRID_PAGE_SIZE - 1, lastSpoke.current);
    return order.current;
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [otherIds.join(','), room.activeSpeaker]);
  const rank = new Map(arranged.map((id, i) => [id, i]));
  const others = room.participants.filter((p) => p.id !== room.selfId).sort((x, y) => (rank.get(x.id) ?? 0) - (rank.get(y.id) ?? 0));

  const tracks = useMemo(() => {
    const m = new Map<string, RemoteTrack>();
    for (const r of remote) m.set(`${r.participantId}/${r.source}`, r);
    return m;
  }, [remote]);

  // A screen is shown while the server forwards it and its sender says it is sharing.
  const screens = room.participants
    .filter((p) => p.id !== room.selfId && p.screen_sharing)
    .map((p) => ({ p, track: tracks.get(`${p.id}/screen`)?.track }))
    .filter((x): x is { p: Participant; track: MediaStreamTrack } => !!x.track);

  // The self view uses the local camera and our own mute state.
  const selfParticipant: Participant | null = self
    ? { ...self, audio_muted: local.audioMuted, video_muted: local.videoMuted }
    : null;

  // Someone shown large (a sign-language interpreter, the speaker of the moment): whom this
  // viewer chose, or else whom a moderator shows large to everyone (`meeting.spotlight`; not
  // oneself). On the stage beside any shared screen, everyone else in the filmstrip. Only people
  // with a camera; it ends when they leave.
  const withCamera = (id: string | null | undefined) => others.find((p) => p.id === id && !callerById.has(p.id)) ?? null;
  const chosen = withCamera(pinnedId);
  const pinned = chosen ?? withCamera(meeting.spotlight);
  const tiles = [
    ...(selfParticipant ? [{ p: selfParticipant, video: local.cameraTrack, isSelf: true }] : []),
    ...others
      .filter((p) => p !== pinned)
      .map((p) => ({
        p,
        video: tracks.get(`${p.id}/camera`)?.track ?? null,
        isSelf: false,
      })),
  ];
  // Everyone is heard, whichever page of the grid they are on.
  const audioTracks = others
    .map((p) => ({ id: p.id, track: tracks.get(`${p.id}/microphone`)?.track }))
    .filter((x): x is { id: string; track: MediaStreamTrack } => !!x.track);
  const hasStage = screens.length > 0 || (local.screenSharing && local.screenTrack) || !!pinned;
  // The grid shows a page of at most GRID_PAGE_SIZE tiles; the filmstrip beside the stage
  // scrolls instead.
  const { pages, page: shownPage } = gridPages(tiles.length, page);
  const shownTiles = hasStage ? tiles : tiles.slice(shownPage * GRID_PAGE_SIZE, (shownPage + 1) * GRID_PAGE_SIZE);
  const shape = gridShape(shownTiles.length, upright);
  const micLocked = !!self?.muted_by_moderator;
  const handUp = self?.hand_raised_at != null;
  const hands = room.participants.filter((p) => p.hand_raised_at !== null).length;

  const toggle = (p: Panel) => setPanel((cur) => (cur === p ? null : p));

  // Keyboard and screen reader users: an opened panel takes the focus (the chat its field where
  // there is a keyboard, otherwise the panel's heading), and closing it with its button or Escape
  // gives the focus back to the toolbar button that belongs to it.
  const toggleButtons = useRef<Partial<Record<NonNullable<Panel>, HTMLButtonElement | null>>>({});
  const panelTitle = useRef<HTMLHeadingElement>(null);
  const chatField = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    if (!panel) return;
    const field = panel === 'chat' && window.matchMedia('(pointer: fine)').matches ? chatField.current : null;
    (field ?? panelTitle.current)?.focus();
  }, [panel]);
  const closePanel = () => {
    const button = panel ? toggleButtons.current[panel] : null;
    setPanel(null);
    button?.focus();
  };
  const canShareScreen = typeof navigator.mediaDevices?.getDisplayMedia === 'function';

  // Keyboard shortcuts (shortcuts.ts): what a key does, announced to screen readers where the
  // change is not where the focus is.
  const [shortcutsOn, setShortcutsOn] = useState(() => shortcutsEnabled());
  const [shortcutsOpen, setShortcutsOpen] = useState(false);
  const [said, setSaid] = useState('');
  const runShortcut = (action: ShortcutAction) => {
    switch (action) {
      case 'mic':
        if (micLocked && local.audioMuted) {
          setSaid(t('room.micLocked'));
          return;
        }
        setSaid(t(local.audioMuted ? 'shortcuts.said.micOn' : 'shortcuts.said.micOff'));
        void controller.toggleMicrophone();
        return;
      case 'camera':
        setSaid(t(local.videoMuted ? 'shortcuts.said.camOn' : 'shortcuts.said.camOff'));
        void controller.toggleCamera();
        return;
      case 'hand':
        setSaid(t(handUp ? 'shortcuts.said.handDown' : 'shortcuts.said.handUp'));
        controller.raiseHand(!handUp);
        return;
      case 'help':
        setShortcutsOpen(true);
        return;
      default:
        if (panel === action) closePanel();
        else setPanel(action);
    }
  };
  const onShortcut = useRef(runShortcut);
  onShortcut.current = runShortcut;
  useEffect(() => {
    const pressed = (e: KeyboardEvent) => {
      if (shortcutsOpen || e.defaultPrevented) return;
      const action = shortcutAction(e, shortcutsOn);
      if (!action) return;
      e.preventDefault();
      onShortcut.current(action);
    };
    document.addEventListener('keydown', pressed);
    return () => document.removeEventListener('keydown', pressed);
  }, [shortcutsOn, shortcutsOpen]);
  const keyOf = (action: ShortcutAction) => (shortcutsOn ? shortcutKey(action) : undefined);

  // Tell the server which videos are on screen and how large (it forwards only those): after
  // every render, and when the window is resized or the filmstrip scrolled.
  const reportVideos = () => {
    if (stageRef.current) controller.showVideos(visibleVideos(stageRef.current, window.devicePixelRatio || 1));
  };
  useEffect(reportVideos);
  useEffect(() => {
    const resized = () => {
      setUpright(isUpright());
      reportVideos();
    };
    window.addEventListener('resize', resized);
    return () => window.removeEventListener('resize', resized);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [controller]);

  return (
    <div className={`room${panel ? ' with-panel' : ''}`} data-testid="meeting-room">
      <div className="sr-only" role="status" aria-live="polite" data-testid="shortcut-said">
        {said}
      </div>
      <ShortcutsDialog
        open={shortcutsOpen}
        onClose={() => setShortcutsOpen(false)}
        enabled={shortcutsOn}
        onEnabled={(on) => {
          setShortcutsOn(on);
          setShortcutsEnabled(on);
        }}
      />
      <header className="room-top">
        <div className="room-title">
          <h1 data-testid="room-title">{meeting.title}</h1>
          <ProfileBadge profile={meeting.profile} />
          <E2eeIndicator status={snap.e2ee} phoneCount={banner.count} onClick={() => setPanel('security')} />
          {meeting.locked && (
            <span className="badge locked-badge" data-testid="lock-indicator" title={t('room.lockedHint')}>
              <LockIcon width={14} height={14} /> {t('room.locked')}
            </span>
          )}
        </div>
        <div className="room-top-right">
          {hands > 0 && (
            <button
              type="button"
              className="badge hands-badge"
              onClick={() => setPanel('people')}
              data-testid="hands-indicator"
              title={t('hands.title', { n: hands })}
            >
              <HandIcon width={14} height={14} /> {hands}
            </button>
          )}
          <span className="count">
            {room.participants.length === 1 ? t('room.participantsOne') : t('room.participantsCount', { n: room.participants.length })}
          </span>
          <button
            type="button"
            className="header-icon-btn"
            onClick={() => setShortcutsOpen(true)}
            aria-label={t('shortcuts.open')}
            title={t('shortcuts.open')}
            aria-keyshortcuts={keyOf('help')}
            data-testid="shortcuts-button"
          >
            <KeyboardIcon width={18} height={18} />
          </button>
          <LangSwitch dark />
        </div>
      </header>
      {room.reconnecting && <ReconnectBanner controller={controller} reconnecting={room.reconnecting} />}
      {(banner.visible || room.maintenanceBy !== null) && (
        <div className="banners">
          {banner.visible && <PhoneBanner count={banner.count} onInfo={() => setPanel('security')} />}
          {room.maintenanceBy !== null && <MaintenanceBanner by={room.maintenanceBy} />}
        </div>
      )}

      <main className={`stage${hasStage ? ' has-screen' : ''}`} aria-label={meeting.title} ref={stageRef}>
        {hasStage && (
          <div className="screen-area">
            {screens.map(({ p, track }) => (
              <ScreenTile key={p.id} name={p.display_name} track={track} self={false} participantId={p.id} />
            ))}
            {local.screenSharing && local.screenTrack && screens.length === 0 && (
              <ScreenTile name="" track={local.screenTrack} self participantId={room.selfId ?? ''} />
            )}
            {pinned && (
              <Tile
                key={pinned.id}
                participant={pinned}
                video={tracks.get(`${pinned.id}/camera`)?.track ?? null}
                isSelf={false}
                speaking={room.activeSpeaker === pinned.id}
                pinned
                forEveryone={!chosen}
                onPin={chosen ? () => setPinnedId(null) : undefined}
              />
            )}
          </div>
        )}
        <div className="tiles-area">
        <div
          className={hasStage ? 'filmstrip' : 'grid'}
          style={hasStage ? undefined : { ['--cols' as string]: shape.cols, ['--rows' as string]: shape.rows }}
          data-count={shownTiles.length}
          data-upright={upright ? '' : undefined}
          data-video-clip=""
          onScroll={hasStage ? reportVideos : undefined}
        >
          {shownTiles.map(({ p, video, isSelf }) => (
            <Tile
              key={p.id}
              participant={p}
              video={video}
              isSelf={isSelf}
              speaking={room.activeSpeaker === p.id}
              compact={!!hasStage}
              phone={isSelf ? null : (callerById.get(p.id) ?? null)}
              onPin={isSelf || callerById.has(p.id) ? undefined : () => setPinnedId(p.id)}
            />
          ))}
        </div>
        {!hasStage && pages > 1 && (
          <nav className="pager" aria-label={t('room.pages')} data-testid="grid-pager">
            <button type="button" className="icon-btn" onClick={() => setPage(shownPage - 1)} disabled={shownPage === 0} data-testid="grid-prev">
              ‹<span className="sr-only">{t('room.pagePrev')}</span>
            </button>
            <span data-testid="grid-page">{t('room.pageOf', { n: shownPage + 1, m: pages })}</span>
            <button type="button" className="icon-btn" onClick={() => setPage(shownPage + 1)} disabled={shownPage === pages - 1} data-testid="grid-next">
              ›<span className="sr-only">{t('room.pageNext')}</span>
            </button>
          </nav>
        )}
        </div>
        <div className="audio-sinks" hidden>
          {audioTracks.map(({ id, track }) => (
            <AudioSink key={id} track={track} />
          ))}
        </div>
      </main>

      {panel && (
        <aside
          className="side-panel"
          aria-labelledby="panel-title"
          data-testid={`${panel}-side-panel`}
          onKeyDown={(e) => {
            if (e.key === 'Escape' && !e.defaultPrevented) {
              e.preventDefault();
              closePanel();
            }
          }}
        >
          <div className="panel-head">
            <h2 id="panel-title" tabIndex={-1} ref={panelTitle}>
              {t(panel === 'chat' ? 'chat.title' : panel === 'people' ? 'room.participants' : 'security.title')}
            </h2>
            <button type="button" className="icon-btn" onClick={closePanel} aria-label={t('common.close')} data-testid="panel-close">
              <CloseIcon width={18} height={18} />
            </button>
          </div>
          <div className="panel-body">
            {panel === 'chat' && (
              <ChatPanel
                messages={room.chat}
                onSend={(text) => controller.sendChat(text)}
                canSend={snap.e2ee?.phase === 'active'}
                fieldRef={chatField}
              />
            )}
            {panel === 'people' && (
              <PeoplePanel
                controller={controller}
                participants={room.participants}
                lobby={room.lobby}
                selfId={room.selfId}
                isModerator={moderator}
                locked={meeting.locked}
                spotlight={meeting.spotlight ?? null}
                status={snap.e2ee}
                callers={callers}
              />
            )}
            {panel === 'security' && (
              <SecurityPanel meeting={meeting} participants={room.participants} status={snap.e2ee} callers={callers} controller={controller} />
            )}
          </div>
        </aside>
      )}

      <NoticeLine notices={snap.notices} />

      <div className="toasts" aria-live="polite">
        {toasts.map((x) => (
          <div key={x.id} className={`toast ${x.kind}`} data-testid={`${x.kind}-toast`} role={x.kind === 'error' ? 'status' : 'alert'}>
            {x.kind === 'lobby' && <BellIcon width={18} height={18} />}
            <span>{x.text}</span>
            {x.kind === 'lobby' && (
              <button type="button" className="btn primary small" onClick={() => setPanel('people')}>
                {t('room.showLobby')}
              </button>
            )}
            <button type="button" className="icon-btn" aria-label={t('room.dismiss')} onClick={() => setToasts((l) => l.filter((y) => y.id !== x.id))}>
              <CloseIcon width={14} height={14} />
            </button>
          </div>
        ))}
      </div>

      <nav className="toolbar" aria-label={t('room.controls')}>
        <div className="toolbar-group">
          <ToolButton
            label={micLocked ? t('room.micLocked') : local.audioMuted ? t('room.micOff') : t('room.micOn')}
            short={t('room.mic')}
            off={local.audioMuted}
            disabled={micLocked && local.audioMuted}
            onClick={() => void controller.toggleMicrophone()}
            shortcut={keyOf('mic')}
            testId="mic-toggle"
            pressed={!local.audioMuted}
          >
            {local.audioMuted ? <MicOffIcon /> : <MicIcon />}
          </ToolButton>
          <ToolButton
            label={local.videoMuted ? t('room.camOff') : t('room.camOn')}
            short={t('room.camera')}
            off={local.videoMuted}
            onClick={() => void controller.toggleCamera()}
            shortcut={keyOf('camera')}
            testId="camera-toggle"
            pressed={!local.videoMuted}
          >
            {local.videoMuted ? <CamOffIcon /> : <CamIcon />}
          </ToolButton>
          <ToolButton
            label={handUp ? t('hands.lowerOwn') : t('hands.raise')}
            short={t('hands.short')}
            active={handUp}
            onClick={() => controller.raiseHand(!handUp)}
            shortcut={keyOf('hand')}
            testId="hand-toggle"
            pressed={handUp}
          >
            <HandIcon />
          </ToolButton>
          {/* Phones and tablets cannot share their screen: their browsers have no getDisplayMedia. */}
          {canShareScreen && (
            <ToolButton
              label={local.screenSharing ? t('room.screenStop') : t('room.screen')}
              short={local.screenSharing ? t('room.screenStop') : t('room.screen')}
              active={local.screenSharing}
              onClick={() => void controller.toggleScreenShare()}
              testId="screen-toggle"
              pressed={local.screenSharing}
            >
              <ScreenIcon />
            </ToolButton>
          )}
        </div>
        <div className="toolbar-group">
          <ToolButton
            label={t('room.chat')}
            short={t('room.chat')}
            active={panel === 'chat'}
            onClick={() => toggle('chat')}
            shortcut={keyOf('chat')}
            testId="chat-toggle"
            pressed={panel === 'chat'}
            badge={unread || undefined}
            badgeLabel={t('room.chatUnread', { n: unread })}
            buttonRef={(b) => {
              toggleButtons.current.chat = b;
            }}
          >
            <ChatIcon />
          </ToolButton>
          <ToolButton
            label={t('room.participants')}
            short={t('room.participants')}
            active={panel === 'people'}
            onClick={() => toggle('people')}
            shortcut={keyOf('people')}
            testId="people-toggle"
            pressed={panel === 'people'}
            buttonRef={(b) => {
              toggleButtons.current.people = b;
            }}
            badge={moderator && room.lobby.length ? room.lobby.length : undefined}
            badgeLabel={t('room.lobbyWaiting', { n: room.lobby.length })}
            badgeTestId="lobby-badge"
          >
            <PeopleIcon />
          </ToolButton>
          <ToolButton
            label={t('room.security')}
            short={t('room.security')}
            active={panel === 'security'}
            onClick={() => toggle('security')}
            shortcut={keyOf('security')}
            testId="security-toggle"
            pressed={panel === 'security'}
            buttonRef={(b) => {
              toggleButtons.current.security = b;
            }}
          >
            <ShieldIcon />
          </ToolButton>
        </div>
        <div className="toolbar-group">
          <button
            type="button"
            className="leave-btn"
            onClick={() => controller.leave()}
            aria-label={t('room.leave')}
            title={t('room.leave')}
            data-testid="leave-button"
          >
            <LeaveIcon />
            <span>{t('room.leave')}</span>
          </button>
        </div>
      </nav>
    </div>
  );
}

function ToolButton({
  children,
  label,
  short,
  onClick,
  off = false,
  active = false,
  disabled = false,
  pressed,
  testId,
  badge,
  badgeTestId,
  badgeLabel,
  buttonRef,
  shortcut,
}: {
  children: React.ReactNode;
  label: string;
  short: string;
  onClick(): void;
  off?: boolean;
  active?: boolean;
  disabled?: boolean;
  pressed?: boolean;
  testId: string;
  badge?: number;
  badgeTestId?: string;
  /** What the badge counts, for screen readers ("3 unread"); read after the label. */
  badgeLabel?: string;
  buttonRef?: React.Ref<HTMLButtonElement>;
  /** Its keyboard shortcut, while shortcuts are on (`aria-keyshortcuts`, and in the tooltip). */
  shortcut?: string;
}) {
  return (
    <button
      ref={buttonRef}
      type="button"
      className={`tool-btn${off ? ' off' : ''}${active ? ' active' : ''}`}
      onClick={onClick}
      disabled={disabled}
      aria-label={badge !== undefined && badgeLabel ? `${label}, ${badgeLabel}` : label}
      aria-pressed={pressed}
      aria-keyshortcuts={shortcut}
      title={shortcut ? `${label} (${shortcut})` : label}
      data-testid={testId}
    >
      <span className="tool-icon">{children}</span>
      <span className="tool-label">{short}</span>
      {/* After the label, so that what is seen reads as the start of the name ("Chat 3"). */}
      {badge !== undefined && ' '}
      {badge !== undefined && (
        <span className="tool-badge" data-testid={badgeTestId}>
          {badge}
        </span>
      )}
    </button>
  );
}
