// Switchyard web client.
//
// Speaks the signaling protocol in docs/signaling.md over one WebSocket at /ws on the page's
// origin. The server picks the room's mode (docs/modes.md) and the client builds that topology:
//  - SFU: a "publish" RTCPeerConnection that we offer on (camera, microphone, screen; all sendonly)
//    and a "subscribe" RTCPeerConnection that only the server offers on (everyone else's tracks);
//  - mesh (C2C, P2P): one RTCPeerConnection per other participant, negotiated through the server's
//    peer-offer / peer-answer / peer-candidate relay. Whoever joined earlier makes the first offer.
// A `mode` message with a new epoch means the room switched: the old peer connections are closed
// and the new ones built, without reloading. No framework and no build step: this file is served
// as-is next to index.html and style.css. (Modules are strict mode already.)

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const NAME_MAX = 64;
const CHAT_MAX = 2000;
// The server answers a publish offer quickly; if it never does we must not block the queue forever.
const PUBLISH_ANSWER_TIMEOUT_MS = 15000;
const TOAST_TIMEOUT_MS = 8000;
// URL options: ?video=320x180 (camera size), ?fps=15 (camera frame rate), ?mesh=0 (act as a client
// that cannot run the mesh, which keeps rooms in the SFU).
// ?video=none joins without a camera. ?fakeAudio=1 (tests) replaces the microphone by a WebAudio tone
// whose loudness `window.switchyard.setTalking(bool)` switches, so a test decides who talks.
const URL_PARAMS = new URLSearchParams(location.search);
const CAMERA_CONSTRAINTS = cameraConstraints(URL_PARAMS);
// Without ?video=, the SFU asks the camera for 1280x720 so the browser can send all three simulcast
// layers (it drops the upper ones for small inputs); the mesh keeps CAMERA_CONSTRAINTS.
const CAMERA_SIZE_GIVEN = /^\d{2,4}x\d{2,4}$/.test(URL_PARAMS.get('video') || '');
const SIMULCAST_CAMERA = { width: 1280, height: 720 };
const FAKE_AUDIO = URL_PARAMS.get('fakeAudio') === '1';
// ?simulcast=0: send the camera to the SFU as one stream (the server then forwards it as it comes).
const SIMULCAST = URL_PARAMS.get('simulcast') !== '0';
const MESH_CAPABLE = URL_PARAMS.get('mesh') !== '0';
// `?relay=1`: browser-to-browser connections use only TURN-relayed candidates (iceTransportPolicy
// "relay"), the way a client behind a restrictive NAT ends up; tests use it to prove our TURN path.
const RELAY_ONLY = URL_PARAMS.get('relay') === '1';
// After a mode switch, how long to watch for media from everyone before giving up on timing it.
const RECOVERY_WATCH_MS = 120000;
// SFU: the camera is published as three simulcast layers, lowest first (docs/signaling.md); the
// server forwards each subscriber the one that fits its bandwidth and the size it shows the video at.
const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', maxBitrate: 1500000 },
];
// `video-size` asks for the next of these heights at or above what a tile shows (10% slack), so a
// 350-pixel tile asks for 360 and gets the 360p layer rather than the one below it.
const VIDEO_HEIGHTS = [90, 180, 270, 360, 540, 720, 1080, 1440, 2160];
const VIDEO_SIZE_DEBOUNCE_MS = 300;
// Local active-speaker detection (mesh modes, where the server sees no media).
const SPEAKER_POLL_MS = 250;
const SPEAKER_THRESHOLD = 0.01; // audioLevel (0..1, linear) below which someone counts as silent
const SPEAKER_SWITCH_RATIO = 1.5; // a challenger must be this much louder than the current speaker
const SPEAKER_HOLD_MS = 600; // least time between two changes

function cameraConstraints(params) {
  if (params.get('video') === 'none') return null;
  const c = { width: 640, height: 360 };
  const size = /^(\d{2,4})x(\d{2,4})$/.exec(params.get('video') || '');
  if (size) {
    c.width = Number(size[1]);
    c.height = Number(size[2]);
  }
  const fps = Number(params.get('fps'));
  if (Number.isInteger(fps) && fps > 0 && fps <= 60) c.frameRate = fps;
  return c;
}

// Inline icons (24x24, stroked) so nothing is fetched from anywhere else.
const SVG_OPEN =
  '<svg viewBox="0 0 24 24" width="20" height="20" fill="none" stroke="currentColor" ' +
  'stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">';
const SLASH = '<path d="M3 3l18 18"/>';
const ICON_PARTS = {
  mic: '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0"/><path d="M12 18v3"/>',
  cam: '<rect x="3" y="6" width="13" height="12" rx="2"/><path d="M16 10l5-3v10l-5-3z"/>',
  screen: '<rect x="3" y="4" width="18" height="12" rx="2"/><path d="M8 20h8"/><path d="M12 16v4"/>',
  chat: '<path d="M4 5h16v11H9l-5 4z"/>',
  leave: '<path d="M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3"/><path d="M10 17l-5-5 5-5"/><path d="M5 12h11"/>',
};
const ICONS = {
  mic: SVG_OPEN + ICON_PARTS.mic + '</svg>',
  micOff: SVG_OPEN + ICON_PARTS.mic + SLASH + '</svg>',
  cam: SVG_OPEN + ICON_PARTS.cam + '</svg>',
  camOff: SVG_OPEN + ICON_PARTS.cam + SLASH + '</svg>',
  screen: SVG_OPEN + ICON_PARTS.screen + '</svg>',
  screenOff: SVG_OPEN + ICON_PARTS.screen + SLASH + '</svg>',
  chat: SVG_OPEN + ICON_PARTS.chat + '</svg>',
  leave: SVG_OPEN + ICON_PARTS.leave + '</svg>',
};

// ---------------------------------------------------------------------------------------------
// Session state (one call at a time; reset on every join)
// ---------------------------------------------------------------------------------------------

const session = {
  state: 'idle', // 'idle' | 'joining' | 'joined' | 'left'
  connection: 'closed', // 'connecting' | 'open' | 'closed'
  ws: null,
  leaving: false, // we closed the socket on purpose: do not report "disconnected"
  room: '',
  name: '',
  token: null,
  participantId: null,
  mode: null, // as the server sends it: 'sfu' | 'p2p' | 'c2c'
  epoch: null, // the room's epoch: a new one means the topology changed
  topology: null, // what we have built: 'sfu' | 'mesh' (null before the first build)
  topologyEpoch: null,
  mediaSettled: false, // local media acquired (or given up on): publishing / offering may start
  published: false, // SFU: the publish connection was started for this topology
  serverCount: null, // participant count from the latest `mode` message
  iceServers: [],
  participants: new Map(), // id -> { id, name, audio, video, screen } (others only)
  earlier: new Set(), // ids of participants who joined before us (they offer to us in the mesh)
  peers: new Map(), // mesh: participant id -> peer (see createPeer)
  lastSwitch: null, // { from, mode, epoch, announcedAt, recoveredAt } (ms since epoch)
  switches: [],

  localStream: null,
  mediaReady: null, // Promise<MediaStream|null> started at join time
  screen: null, // { stream, track, transceiver } while sharing

  publishPc: null,
  pub: { running: false, wanted: false, pendingAnswer: null },

  subscribePc: null,
  sub: { running: false, pending: null, lastVersion: -Infinity },
  // Mappings used to label incoming media and attribute stats.
  streamToParticipant: new Map(), // msid stream id -> participant id (from subscribe-offer.streams)
  midToStream: new Map(), // mid -> msid stream id (parsed from the latest subscribe offer)
  midToParticipant: new Map(), // mid -> participant id
  trackToParticipant: new Map(), // receiver track id -> participant id (from ontrack)

  // Active speaker: a participant id (ours included) or null. From the server's `active-speaker`
  // in the SFU, from local detection (getStats audio levels) in the mesh.
  activeSpeaker: null,
  speakerLevels: new Map(), // mesh detection: participant id -> smoothed audio level
  speakerChangedAt: 0,
  // SFU: msid stream id -> the maxHeight last sent in `video-size` for it.
  videoSizes: new Map(),
  videoSizeTimer: null,
  fakeAudio: null, // ?fakeAudio=1: { ctx, gain, talking }

  chatLog: [], // received chat messages, in arrival order; the same array object forever
  chatOpen: window.matchMedia('(min-width: 900px)').matches,
  unread: 0,
};

// Tiles: the local one plus one per remote participant.
let localTile = null;
const remoteTiles = new Map(); // participant id -> tile

// ---------------------------------------------------------------------------------------------
// DOM references
// ---------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const ui = {
  joinScreen: $('join-screen'),
  joinForm: $('join-form'),
  joinStatus: $('join-status'),
  joinError: $('join-error'),
  roomInput: $('room-input'),
  nameInput: $('name-input'),
  callScreen: $('call-screen'),
  roomName: $('room-name'),
  modeBadge: $('mode-badge'),
  count: $('participant-count'),
  speaker: $('speaker-status'),
  conn: $('conn-status'),
  stage: $('stage'),
  grid: $('grid'),
  banner: $('disconnected-banner'),
  rejoin: $('rejoin-button'),
  chatPanel: $('chat-panel'),
  chatClose: $('chat-close'),
  chatLog: $('chat-log'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  micBtn: $('mic-button'),
  camBtn: $('cam-button'),
  screenBtn: $('screen-button'),
  chatBtn: $('chat-button'),
  leaveBtn: $('leave-button'),
  toasts: $('toasts'),
};

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function initials(name) {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = words.slice(0, 2).map((w) => [...w][0]);
  return (letters.join('') || '?').toUpperCase();
}

// A stable hue per participant so avatars are distinguishable.
function hueFor(id) {
  let h = 0;
  for (const ch of String(id)) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

function formatTime(ts) {
  const d = new Date(Number.isFinite(ts) ? ts : Date.now());
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function describeError(err) {
  if (!err) return 'unknown error';
  return err.message ? `${err.name || 'Error'}: ${err.message}` : String(err);
}

function reportError(context, err) {
  console.error(`[switchyard] ${context}`, err);
  showToast(`${context}: ${describeError(err)}`);
}

function participantName(id) {
  return session.participants.get(id)?.name || 'Participant';
}

// ---------------------------------------------------------------------------------------------
// Toasts
// ---------------------------------------------------------------------------------------------

/** Shows a small dismissable message. `action` adds a button: { label, run }. */
function showToast(message, { kind = 'error', timeout = TOAST_TIMEOUT_MS, action = null } = {}) {
  const toast = document.createElement('div');
  toast.className = `toast ${kind}`;
  toast.setAttribute('role', kind === 'error' ? 'alert' : 'status');

  const text = document.createElement('span');
  text.className = 'toast-text';
  text.textContent = message;
  toast.append(text);

  const dismiss = () => toast.remove();
  if (action) {
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'toast-action';
    btn.textContent = action.label;
    btn.addEventListener('click', () => {
      dismiss();
      action.run();
    });
    toast.append(btn);
  }
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'toast-close';
  close.setAttribute('aria-label', 'Dismiss');
  close.title = 'Dismiss';
  close.textContent = '✕';
  close.addEventListener('click', dismiss);
  toast.append(close);

  ui.toasts.append(toast);
  // Keep the stack short: errors can come in bursts.
  while (ui.toasts.children.length > 4) ui.toasts.firstElementChild.remove();
  if (timeout > 0) setTimeout(dismiss, timeout);
  return toast;
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

function send(msg) {
  const ws = session.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    console.warn('[switchyard] not connected; dropped', msg.type);
    return false;
  }
  ws.send(JSON.stringify(msg));
  return true;
}

function connect() {
  const ws = new WebSocket(wsUrl());
  session.ws = ws;
  setConnection('connecting');

  // Every handler checks it still belongs to the current socket: a rejoin replaces it.
  ws.addEventListener('open', () => {
    if (ws !== session.ws) return;
    setConnection('open');
    const join = { type: 'join', room: session.room, name: session.name, mesh: MESH_CAPABLE };
    if (session.token) join.token = session.token;
    send(join);
  });
  ws.addEventListener('message', (ev) => {
    if (ws === session.ws) handleRaw(ev.data);
  });
  ws.addEventListener('error', () => console.warn('[switchyard] websocket error'));
  ws.addEventListener('close', (ev) => {
    if (ws === session.ws) onSocketClosed(ev);
  });
}

function onSocketClosed(ev) {
  session.ws = null;
  setConnection('closed');
  if (session.leaving) return;
  console.warn(`[switchyard] websocket closed (code ${ev.code}${ev.reason ? `, ${ev.reason}` : ''})`);
  if (session.state === 'joining' || session.state === 'joined') {
    teardownCall();
    session.serverCount = null; // stale now
    setState('left');
    ui.banner.hidden = false;
    updateHeader();
  }
}

// ---------------------------------------------------------------------------------------------
// Incoming messages
// ---------------------------------------------------------------------------------------------

const handlers = {
  joined: onJoined,
  'participant-joined': onParticipantJoined,
  'participant-left': onParticipantLeft,
  'publish-answer': onPublishAnswer,
  'subscribe-offer': onSubscribeOffer,
  'peer-offer': onPeerMessage,
  'peer-answer': onPeerMessage,
  'peer-candidate': onPeerMessage,
  'media-state': onMediaState,
  'active-speaker': onActiveSpeaker,
  chat: onChat,
  mode: onMode,
  error: onServerError,
};

/** Parses and dispatches one frame. Nothing the server sends may throw out of here. */
function handleRaw(data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (err) {
    console.warn('[switchyard] ignoring non-JSON message', err);
    return;
  }
  if (!isObject(msg) || typeof msg.type !== 'string') {
    console.warn('[switchyard] ignoring message without a type', msg);
    return;
  }
  const handler = Object.hasOwn(handlers, msg.type) ? handlers[msg.type] : null;
  if (!handler) {
    console.warn('[switchyard] ignoring unknown message type', msg.type);
    return;
  }
  try {
    const result = handler(msg);
    if (result && typeof result.then === 'function') {
      result.catch((err) => reportError(`Handling "${msg.type}" failed`, err));
    }
  } catch (err) {
    reportError(`Handling "${msg.type}" failed`, err);
  }
}

function normalizeParticipant(p) {
  if (!isObject(p) || typeof p.id !== 'string') return null;
  return {
    id: p.id,
    name: typeof p.name === 'string' && p.name ? p.name : 'Participant',
    audio: p.audio !== false,
    video: p.video !== false,
    screen: p.screen === true,
  };
}

async function onJoined(msg) {
  if (session.state !== 'joining') {
    console.warn('[switchyard] unexpected joined in state', session.state);
    return;
  }
  session.participantId = typeof msg.participant === 'string' ? msg.participant : null;
  if (typeof msg.mode === 'string') session.mode = msg.mode;
  session.epoch = Number.isInteger(msg.epoch) ? msg.epoch : null;
  if (typeof msg.room === 'string') session.room = msg.room;
  session.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
  for (const raw of Array.isArray(msg.participants) ? msg.participants : []) {
    const p = normalizeParticipant(raw);
    if (p && p.id !== session.participantId) {
      session.earlier.add(p.id);
      addParticipant(p);
    }
  }
  if (localTile && session.participantId) localTile.el.dataset.participant = session.participantId;
  setState('joined');
  updateHeader();
  syncTopology();

  // Media may still be waiting for a permission prompt; receiving does not depend on it.
  await session.mediaReady;
  if (session.state !== 'joined') return;
  session.mediaSettled = true;
  syncTopology();
  sendMediaState();
}

function onParticipantJoined(msg) {
  const p = normalizeParticipant(msg.participant);
  if (!p) return console.warn('[switchyard] participant-joined without a participant', msg);
  if (p.id === session.participantId) return;
  const known = session.participants.has(p.id);
  addParticipant(p);
  if (!known) addSystemLine(`${p.name} joined`);
  updateHeader();
  // In the mesh we joined earlier, so we offer to them.
  syncTopology();
}

function onParticipantLeft(msg) {
  if (typeof msg.id !== 'string') return console.warn('[switchyard] participant-left without id', msg);
  const p = session.participants.get(msg.id);
  session.participants.delete(msg.id);
  session.earlier.delete(msg.id);
  closePeer(msg.id);
  removeRemoteTile(msg.id);
  if (p) addSystemLine(`${p.name} left`);
  updateHeader();
}

function onMediaState(msg) {
  const p = session.participants.get(msg.participant);
  if (!p) return; // our own echo, or someone we no longer know about
  if (typeof msg.audio === 'boolean') p.audio = msg.audio;
  if (typeof msg.video === 'boolean') p.video = msg.video;
  if (typeof msg.screen === 'boolean') p.screen = msg.screen;
  const tile = remoteTiles.get(p.id);
  if (tile) renderTile(tile);
}

function onActiveSpeaker(msg) {
  if (session.topology !== 'sfu') return; // the mesh detects it locally
  if (msg.id !== null && typeof msg.id !== 'string') return console.warn('[switchyard] malformed active-speaker', msg);
  setActiveSpeaker(msg.id);
}

function onChat(msg) {
  if (typeof msg.text !== 'string') return console.warn('[switchyard] chat without text', msg);
  const entry = {
    from: typeof msg.from === 'string' ? msg.from : null,
    name: typeof msg.name === 'string' ? msg.name : participantName(msg.from),
    text: msg.text,
    ts: Number.isFinite(msg.ts) ? msg.ts : Date.now(),
  };
  session.chatLog.push(entry);
  renderChatMessage(entry);
  if (!session.chatOpen) {
    session.unread += 1;
    updateToolbar();
  }
}

function onMode(msg) {
  const from = session.mode;
  if (typeof msg.mode === 'string') session.mode = msg.mode;
  if (Number.isInteger(msg.participants)) session.serverCount = msg.participants;
  if (Array.isArray(msg.iceServers)) session.iceServers = msg.iceServers;
  const switched = Number.isInteger(msg.epoch) && msg.epoch !== session.epoch;
  if (Number.isInteger(msg.epoch)) session.epoch = msg.epoch;
  updateHeader();
  if (!switched || session.state !== 'joined') return;
  const sw = { from, mode: session.mode, epoch: session.epoch, announcedAt: Date.now(), recoveredAt: null };
  session.lastSwitch = sw;
  session.switches.push(sw);
  console.info(`[switchyard] room switched ${from} -> ${session.mode} (epoch ${session.epoch})`);
  syncTopology();
  watchRecovery(sw);
}

function onServerError(msg) {
  const code = typeof msg.code === 'string' ? msg.code : 'error';
  const text = typeof msg.message === 'string' ? msg.message : 'unknown error';
  console.warn('[switchyard] server error', msg);

  // A rejected publish offer must not leave the renegotiation queue waiting for an answer.
  if (msg.ref === 'publish') rejectPublishAnswer(new Error(`${code}: ${text}`));
  // A size request that crossed a mode switch is of no interest to the user.
  if (msg.ref === 'video-size') return;

  // An error while joining means the join itself failed: back to the join screen.
  if (session.state === 'joining' && (msg.ref === 'join' || msg.ref === undefined)) {
    abandonCall();
    setState('idle');
    showJoinScreen();
    ui.joinError.textContent = `Could not join: ${text} (${code})`;
    return;
  }
  showToast(`${text} (${code})`);
}

// ---------------------------------------------------------------------------------------------
// Local media
// ---------------------------------------------------------------------------------------------

/** Gets the camera and microphone, falling back to whichever one works. Never rejects. */
async function acquireLocalMedia() {
  if (FAKE_AUDIO) return acquireWithFakeAudio();
  if (!navigator.mediaDevices?.getUserMedia) {
    showToast('Camera and microphone need a secure page (https or localhost); joining to watch only.');
    return null;
  }
  const attempts = CAMERA_CONSTRAINTS
    ? [
      { audio: true, video: CAMERA_CONSTRAINTS },
      { audio: true, video: false },
      { audio: false, video: CAMERA_CONSTRAINTS },
    ]
    : [{ audio: true, video: false }];
  let lastError = null;
  for (const constraints of attempts) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      lastError = err;
      // A refused permission will not change for a smaller request.
      if (err.name === 'NotAllowedError' || err.name === 'SecurityError') break;
    }
  }
  showToast(`No camera or microphone (${describeError(lastError)}); joining to watch only.`);
  return null;
}

/**
 * Test aid (?fakeAudio=1): the camera as usual, the microphone a WebAudio tone (a pitch of its own
 * per name) through a gain that `setTalking` turns up or down. Starts silent.
 */
async function acquireWithFakeAudio() {
  let stream = new MediaStream();
  if (CAMERA_CONSTRAINTS && navigator.mediaDevices?.getUserMedia) {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: false, video: CAMERA_CONSTRAINTS });
    } catch (err) {
      console.warn('[switchyard] no camera for the fake-audio page', err);
    }
  }
  try {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    osc.frequency.value = 220 + (hueFor(session.name) % 12) * 40;
    const gain = ctx.createGain();
    gain.gain.value = 0;
    const dest = ctx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    ctx.resume().catch(() => {});
    session.fakeAudio = { ctx, gain, talking: false };
    for (const t of dest.stream.getAudioTracks()) stream.addTrack(t);
  } catch (err) {
    console.warn('[switchyard] WebAudio unavailable for ?fakeAudio=1', err);
  }
  return stream.getTracks().length ? stream : null;
}

function setTalking(on) {
  const fake = session.fakeAudio;
  if (!fake) return false;
  fake.talking = !!on;
  fake.gain.gain.setValueAtTime(on ? 0.5 : 0, fake.ctx.currentTime);
  fake.ctx.resume().catch(() => {});
  return true;
}

function audioTrack() {
  return session.localStream?.getAudioTracks()[0] || null;
}

function cameraTrack() {
  return session.localStream?.getVideoTracks()[0] || null;
}

function micOn() {
  const t = audioTrack();
  return !!t && t.enabled;
}

function camOn() {
  const t = cameraTrack();
  return !!t && t.enabled;
}

function sendMediaState() {
  if (session.state !== 'joined') return;
  send({ type: 'media-state', audio: micOn(), video: camOn(), screen: !!session.screen });
}

function setLocalStream(stream) {
  session.localStream = stream;
  if (!localTile) return;
  const cam = cameraTrack();
  if (cam) localTile.tracks.set(cam.id, cam);
  renderTile(localTile);
  updateToolbar();
}

// Muting keeps the m-line and the sender: the track just sends silence / black frames.
function toggleMic() {
  const t = audioTrack();
  if (!t) return;
  t.enabled = !t.enabled;
  sendMediaState();
  renderTile(localTile);
  updateToolbar();
}

function toggleCamera() {
  const t = cameraTrack();
  if (!t) return;
  t.enabled = !t.enabled;
  sendMediaState();
  renderTile(localTile);
  updateToolbar();
}

async function startScreenShare() {
  if (session.screen || session.state !== 'joined') return;
  if (!navigator.mediaDevices?.getDisplayMedia) {
    showToast('Screen sharing is not available in this browser.');
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (err) {
    // Cancelling the picker is not an error worth shouting about.
    if (err.name !== 'NotAllowedError' && err.name !== 'AbortError') reportError('Screen share failed', err);
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (session.state !== 'joined' || session.screen || !track) {
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  track.contentHint = 'detail';
  session.screen = { stream, track, transceiver: null };
  // The browser's own "Stop sharing" button ends the track.
  track.addEventListener('ended', () => {
    if (session.screen?.track === track) stopScreenShare();
  });

  localTile.tracks.set(track.id, track);
  renderTile(localTile);
  updateToolbar();
  sendMediaState();
  if (session.topology === 'mesh') {
    // Each peer connection gets the screen as a new m-line (negotiationneeded does the rest).
    for (const peer of session.peers.values()) addScreenToPeer(peer);
  } else {
    addScreenToPublish(ensurePublishPc());
    requestPublishNegotiation();
  }
}

/** SFU: the screen as its own sendonly m-line on the publish connection. */
function addScreenToPublish(pc) {
  const share = session.screen;
  if (!share || share.transceiver) return;
  // A separate stream so the server (and the other clients) can tell it from the camera.
  share.transceiver = pc.addTransceiver(share.track, { direction: 'sendonly', streams: [share.stream] });
}

async function stopScreenShare() {
  const share = session.screen;
  if (!share) return;
  session.screen = null;
  share.stream.getTracks().forEach((t) => t.stop());
  localTile?.tracks.delete(share.track.id);
  if (localTile) renderTile(localTile);
  updateToolbar();
  sendMediaState();

  if (session.topology === 'mesh') {
    for (const peer of session.peers.values()) removeScreenFromPeer(peer);
    return;
  }
  const pc = session.publishPc;
  if (!pc || pc.signalingState === 'closed' || !share.transceiver) return;
  try {
    await share.transceiver.sender.replaceTrack(null);
    share.transceiver.direction = 'inactive';
  } catch (err) {
    console.warn('[switchyard] could not deactivate the screen transceiver', err);
  }
  requestPublishNegotiation();
}

// ---------------------------------------------------------------------------------------------
// Publish connection: we offer, the server answers. One offer in flight at a time.
// ---------------------------------------------------------------------------------------------

function newPeerConnection(mesh = false) {
  const config = { iceServers: session.iceServers };
  if (mesh && RELAY_ONLY) config.iceTransportPolicy = 'relay';
  return new RTCPeerConnection(config);
}

function ensurePublishPc() {
  if (session.publishPc) return session.publishPc;
  const pc = newPeerConnection();
  pc.addEventListener('connectionstatechange', () => {
    console.info('[switchyard] publish connection', pc.connectionState);
    if (pc.connectionState === 'failed' && pc === session.publishPc) {
      showToast('Sending media failed (publish connection).');
    }
  });
  session.publishPc = pc;
  return pc;
}

async function startPublishing(stream) {
  session.published = true;
  const tracks = stream ? stream.getTracks() : [];
  if (tracks.length === 0 && !session.screen) return;
  const epoch = session.topologyEpoch;
  await fitCamera('sfu');
  // A mode switch may have happened while the camera was being resized.
  if (session.state !== 'joined' || session.topology !== 'sfu' || session.topologyEpoch !== epoch || !session.published) return;
  const pc = ensurePublishPc();
  const camera = cameraTrack();
  for (const track of tracks) {
    const init = { direction: 'sendonly', streams: [stream] };
    // The camera goes out as three simulcast layers; the screen share (below) as one stream.
    if (track === camera && SIMULCAST) init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
    pc.addTransceiver(track, init);
  }
  addScreenToPublish(pc);
  requestPublishNegotiation();
}

/**
 * The SFU asks the camera for 1280x720 (so the browser sends all simulcast layers) unless the page
 * named a size; the mesh, which encodes once per peer, goes back to the usual size. Never throws.
 */
async function fitCamera(topology) {
  const cam = cameraTrack();
  if (!cam || CAMERA_SIZE_GIVEN || !CAMERA_CONSTRAINTS || !SIMULCAST) return;
  const want = topology === 'sfu' ? SIMULCAST_CAMERA : CAMERA_CONSTRAINTS;
  const now = cam.getSettings();
  if (now.width === want.width && now.height === want.height) return;
  try {
    await cam.applyConstraints({ ...CAMERA_CONSTRAINTS, width: want.width, height: want.height });
  } catch (err) {
    console.info('[switchyard] camera keeps its size', describeError(err));
  }
}

/**
 * Asks for a (re)negotiation. Requests made while an offer is in flight collapse into one
 * follow-up offer, which describes whatever the transceivers look like by then.
 */
function requestPublishNegotiation() {
  const pub = session.pub;
  pub.wanted = true;
  if (!pub.running && session.publishPc) runPublishQueue(pub, session.publishPc);
}

// The queue belongs to one publish connection: a mode switch replaces both and the old queue ends.
async function runPublishQueue(pub, pc) {
  pub.running = true;
  try {
    while (pub.wanted && pc === session.publishPc && session.state === 'joined') {
      pub.wanted = false;
      await negotiatePublishOnce(pc);
    }
  } finally {
    pub.running = false;
  }
}

async function negotiatePublishOnce(pc) {
  try {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    // Register for the answer before sending so a fast reply cannot be missed.
    const answer = waitForPublishAnswer();
    // The server is ICE-lite: no need to wait for our candidates before offering.
    const msg = { type: 'publish', sdp: pc.localDescription.sdp, epoch: session.topologyEpoch };
    if (!send(msg)) rejectPublishAnswer(new Error('not connected'));
    const sdp = await answer;
    if (pc !== session.publishPc || pc.signalingState !== 'have-local-offer') return;
    await pc.setRemoteDescription({ type: 'answer', sdp });
  } catch (err) {
    if (pc !== session.publishPc) return; // the call ended meanwhile
    reportError('Publishing failed', err);
    // Go back to stable so the next offer starts from a clean state.
    if (pc.signalingState === 'have-local-offer') {
      await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
    }
  }
}

function waitForPublishAnswer() {
  rejectPublishAnswer(new Error('superseded'));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => rejectPublishAnswer(new Error('no publish-answer from the server')),
      PUBLISH_ANSWER_TIMEOUT_MS);
    session.pub.pendingAnswer = { resolve, reject, timer };
  });
}

function rejectPublishAnswer(err) {
  const pending = session.pub.pendingAnswer;
  if (!pending) return;
  session.pub.pendingAnswer = null;
  clearTimeout(pending.timer);
  pending.reject(err);
}

function onPublishAnswer(msg) {
  if (session.topology !== 'sfu') return; // for a publish connection a mode switch closed
  const pending = session.pub.pendingAnswer;
  if (!pending) return console.warn('[switchyard] publish-answer without an offer in flight');
  if (typeof msg.sdp !== 'string') {
    rejectPublishAnswer(new Error('publish-answer without sdp'));
    return;
  }
  session.pub.pendingAnswer = null;
  clearTimeout(pending.timer);
  pending.resolve(msg.sdp);
}

// ---------------------------------------------------------------------------------------------
// Subscribe connection: the server offers, we answer (latest offer wins).
// ---------------------------------------------------------------------------------------------

function ensureSubscribePc() {
  if (session.subscribePc) return session.subscribePc;
  const pc = newPeerConnection();
  pc.addEventListener('track', onRemoteTrack);
  pc.addEventListener('connectionstatechange', () => {
    console.info('[switchyard] subscribe connection', pc.connectionState);
    if (pc.connectionState === 'failed' && pc === session.subscribePc) {
      showToast('Receiving media failed (subscribe connection).');
    }
  });
  session.subscribePc = pc;
  return pc;
}

function onSubscribeOffer(msg) {
  if (session.state !== 'joined') return console.warn('[switchyard] subscribe-offer before joined');
  if (session.topology !== 'sfu') return console.warn('[switchyard] subscribe-offer outside the SFU mode');
  if (typeof msg.sdp !== 'string' || !Number.isInteger(msg.version)) {
    return console.warn('[switchyard] malformed subscribe-offer', msg);
  }
  // Only the newest offer matters: an older one still queued is replaced, never answered.
  const sub = session.sub;
  sub.pending = msg;
  if (!sub.running) runSubscribeQueue(sub);
}

// Like the publish queue, one queue per subscribe connection: a mode switch starts a new one.
async function runSubscribeQueue(sub) {
  sub.running = true;
  try {
    while (sub.pending && sub === session.sub && session.state === 'joined') {
      const msg = sub.pending;
      sub.pending = null;
      if (msg.version <= sub.lastVersion) {
        console.warn('[switchyard] ignoring stale subscribe-offer', msg.version);
        continue;
      }
      try {
        await applySubscribeOffer(sub, msg);
      } catch (err) {
        if (session.state === 'joined' && sub === session.sub) reportError('Receiving media failed', err);
      }
    }
  } finally {
    sub.running = false;
  }
}

async function applySubscribeOffer(sub, msg) {
  const pc = ensureSubscribePc();
  // The mapping must be in place before setRemoteDescription, which fires `track` events.
  rememberStreams(msg.streams, msg.sdp);
  await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  if (pc !== session.subscribePc || sub !== session.sub) return;
  sub.lastVersion = msg.version;
  send({ type: 'subscribe-answer', sdp: pc.localDescription.sdp, version: msg.version, epoch: session.topologyEpoch });
  pruneInactiveReceivers(pc);
}

function rememberStreams(streams, sdp) {
  if (isObject(streams)) {
    for (const [streamId, participantId] of Object.entries(streams)) {
      if (typeof participantId === 'string') session.streamToParticipant.set(streamId, participantId);
    }
  }
  session.midToStream = parseMidStreams(sdp);
  session.midToParticipant = new Map();
  for (const [mid, streamId] of session.midToStream) {
    const pid = session.streamToParticipant.get(streamId);
    if (pid) session.midToParticipant.set(mid, pid);
  }
}

/** mid -> msid stream id for every m-section that carries an msid. */
function parseMidStreams(sdp) {
  const map = new Map();
  let mid = null;
  let stream = null;
  const flush = () => {
    if (mid !== null && stream) map.set(mid, stream);
    mid = null;
    stream = null;
  };
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) {
      flush();
    } else if (line.startsWith('a=mid:')) {
      mid = line.slice(6).trim();
    } else if (line.startsWith('a=msid:')) {
      const id = line.slice(7).trim().split(/\s+/)[0];
      if (id && id !== '-') stream = id;
    } else if (!stream && /^a=ssrc:\d+ msid:/.test(line)) {
      stream = line.split('msid:')[1].trim().split(/\s+/)[0];
    }
  }
  flush();
  return map;
}

// Listeners are attached once per track / stream even if `track` fires again for them.
const watchedTracks = new WeakSet();
const watchedStreams = new WeakSet();

function onRemoteTrack(event) {
  const { track, transceiver } = event;
  const stream = event.streams[0] || null;
  const mid = transceiver?.mid ?? null;
  const streamId = stream?.id ?? (mid !== null ? session.midToStream.get(mid) : undefined);
  // Fall back to the stream id itself: the server names streams after participants anyway.
  const pid = session.streamToParticipant.get(streamId)
    ?? (mid !== null ? session.midToParticipant.get(mid) : undefined)
    ?? streamId;
  if (!pid) {
    console.warn('[switchyard] remote track with no stream to label it', track.id);
    return;
  }
  // A transceiver can be reused for someone else: move the track rather than duplicate it.
  detachTrack(track.id);
  session.trackToParticipant.set(track.id, pid);
  if (mid !== null) session.midToParticipant.set(mid, pid);

  if (!watchedTracks.has(track)) {
    watchedTracks.add(track);
    track.addEventListener('ended', () => detachTrack(track.id));
  }
  if (stream && !watchedStreams.has(stream)) {
    watchedStreams.add(stream);
    stream.addEventListener('removetrack', (e) => detachTrack(e.track.id));
  }

  const tile = ensureRemoteTile(pid);
  tile.tracks.set(track.id, track);
  if (streamId) tile.streamOf.set(track.id, streamId);
  renderTile(tile);
}

/** Tracks whose m-line the server made inactive (or rejected) come off their tiles. */
function pruneInactiveReceivers(pc) {
  for (const t of pc.getTransceivers()) {
    const dir = t.currentDirection;
    if (t.stopped || dir === 'inactive' || dir === 'stopped') detachTrack(t.receiver.track.id);
  }
}

function detachTrack(trackId) {
  for (const tile of remoteTiles.values()) {
    tile.streamOf.delete(trackId);
    if (tile.tracks.delete(trackId)) renderTile(tile);
  }
}

// ---------------------------------------------------------------------------------------------
// Topology: build what the room's mode asks for, tear it down when the mode switches.
// ---------------------------------------------------------------------------------------------

function topologyFor(mode) {
  return mode === 'c2c' || mode === 'p2p' ? 'mesh' : 'sfu';
}

/**
 * Brings the peer connections in line with the room's mode and epoch. Idempotent: called on join,
 * when local media is ready, on every `mode` message with a new epoch and when people come and go.
 */
function syncTopology() {
  if (session.state !== 'joined') return;
  const want = topologyFor(session.mode);
  if (session.topology !== want || session.topologyEpoch !== session.epoch) {
    if (session.topology !== null) teardownTopology();
    session.topology = want;
    session.topologyEpoch = session.epoch;
  }
  // Sending (and, in the mesh, offering) waits for the camera and microphone.
  if (!session.mediaSettled) return;
  if (want === 'sfu') {
    // The server offers the subscribe connection once there is something to receive.
    if (!session.published) {
      startPublishing(session.localStream).catch((err) => reportError('Publishing failed', err));
    }
  } else {
    fitCamera('mesh');
    syncMesh();
  }
}

/** Closes every peer connection of the current topology and takes their tracks off the tiles. */
function teardownTopology() {
  rejectPublishAnswer(new Error('the room switched mode'));
  session.sub.pending = null;
  for (const pc of [session.publishPc, session.subscribePc]) closePc(pc);
  session.publishPc = null;
  session.subscribePc = null;
  session.pub = { running: false, wanted: false, pendingAnswer: null };
  session.sub = { running: false, pending: null, lastVersion: -Infinity };
  session.published = false;
  if (session.screen) session.screen.transceiver = null;
  session.streamToParticipant.clear();
  session.midToStream = new Map();
  session.midToParticipant = new Map();
  session.videoSizes.clear();
  session.speakerLevels.clear();
  setActiveSpeaker(null);
  for (const id of [...session.peers.keys()]) closePeer(id);
}

function closePc(pc) {
  if (!pc) return;
  try {
    for (const t of pc.getTransceivers()) detachTrack(t.receiver.track.id);
    pc.close();
  } catch (err) {
    console.warn('[switchyard] closing a peer connection', err);
  }
}

// ---------------------------------------------------------------------------------------------
// Mesh (C2C, P2P): one peer connection per other participant, signaling relayed by the server.
// Whoever joined earlier offers first; later renegotiations (screen share) may come from either
// side and follow the "perfect negotiation" pattern: the later joiner is the polite peer.
// ---------------------------------------------------------------------------------------------

/** Offers to everyone who joined after us and has no connection yet; closes connections to leavers. */
function syncMesh() {
  for (const id of [...session.peers.keys()]) {
    if (!session.participants.has(id)) closePeer(id);
  }
  for (const id of session.participants.keys()) {
    if (!session.earlier.has(id) && !session.peers.has(id)) createPeer(id, true);
  }
}

function sendPeer(type, to, fields) {
  return send({ type, to, ...fields, epoch: session.topologyEpoch });
}

function createPeer(id, initiator) {
  const pc = newPeerConnection(true);
  const peer = {
    id,
    pc,
    initiator,
    polite: session.earlier.has(id), // the later joiner yields when offers cross
    attached: initiator, // our media is on the connection (an answerer attaches it to the first offer)
    makingOffer: false,
    ignoreOffer: false,
    closed: false,
    screen: null, // the screen's transceiver while sharing
    chain: Promise.resolve(), // signaling for this pair, one step at a time
  };
  session.peers.set(id, peer);
  pc.addEventListener('icecandidate', (e) => {
    if (!peer.closed) sendPeer('peer-candidate', id, { candidate: e.candidate ? e.candidate.toJSON() : null });
  });
  pc.addEventListener('track', (e) => onPeerTrack(peer, e));
  pc.addEventListener('negotiationneeded', () => enqueuePeer(peer, () => negotiatePeer(peer)));
  pc.addEventListener('connectionstatechange', () => {
    console.info(`[switchyard] peer connection with ${id}`, pc.connectionState);
    if (pc.connectionState === 'failed' && !peer.closed && !peer.polite) pc.restartIce();
  });
  if (initiator) addLocalMedia(peer);
  return peer;
}

function closePeer(id) {
  const peer = session.peers.get(id);
  if (!peer) return;
  peer.closed = true;
  session.peers.delete(id);
  closePc(peer.pc);
}

function enqueuePeer(peer, step) {
  peer.chain = peer.chain.then(async () => {
    if (peer.closed) return;
    try {
      await step();
    } catch (err) {
      if (!peer.closed) console.warn(`[switchyard] signaling with ${peer.id} failed`, err);
    }
  });
}

/** The offerer's media: one m-line per local track, and receive-only ones for what we lack. */
function addLocalMedia(peer) {
  const stream = session.localStream;
  const kinds = new Set();
  for (const track of stream ? stream.getTracks() : []) {
    peer.pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
    kinds.add(track.kind);
  }
  for (const kind of ['audio', 'video']) {
    if (!kinds.has(kind)) peer.pc.addTransceiver(kind, { direction: 'recvonly' });
  }
  addScreenToPeer(peer);
}

/** The answerer's media: our tracks go on the m-lines the first offer created. */
async function attachLocalMedia(peer) {
  peer.attached = true;
  const stream = session.localStream;
  const used = new Set();
  for (const track of stream ? stream.getTracks() : []) {
    const t = peer.pc.getTransceivers().find((x) => !used.has(x) && !x.stopped && !x.sender.track
      && x.receiver.track.kind === track.kind && x.direction !== 'inactive');
    if (t) {
      used.add(t);
      await t.sender.replaceTrack(track);
      t.sender.setStreams?.(stream);
      t.direction = 'sendrecv';
    } else {
      peer.pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
    }
  }
  addScreenToPeer(peer);
}

function addScreenToPeer(peer) {
  const share = session.screen;
  if (!share || peer.screen || peer.closed) return;
  peer.screen = peer.pc.addTransceiver(share.track, { direction: 'sendonly', streams: [share.stream] });
}

function removeScreenFromPeer(peer) {
  const t = peer.screen;
  if (!t) return;
  peer.screen = null;
  t.sender.replaceTrack(null).catch(() => {});
  if (!t.stopped) t.direction = 'inactive';
}

async function negotiatePeer(peer) {
  const pc = peer.pc;
  // An answerer does not offer before it has seen the first offer (that would be glare).
  if (!peer.attached || pc.signalingState !== 'stable') return;
  try {
    peer.makingOffer = true;
    const offer = await pc.createOffer();
    if (peer.closed || pc.signalingState !== 'stable') return;
    await pc.setLocalDescription(offer);
    sendPeer('peer-offer', peer.id, { sdp: pc.localDescription.sdp });
  } finally {
    peer.makingOffer = false;
  }
}

function onPeerMessage(msg) {
  if (session.state !== 'joined' || session.topology !== 'mesh') return;
  const from = msg.from;
  if (typeof from !== 'string' || from === session.participantId) return;
  let peer = session.peers.get(from);
  if (!peer) {
    // Only an offer opens a connection (from someone who joined before us); anything else is for a
    // connection we have already closed.
    if (msg.type !== 'peer-offer' || !session.participants.has(from)) return;
    peer = createPeer(from, false);
    enqueuePeer(peer, () => session.mediaReady);
  }
  if (msg.type === 'peer-candidate') {
    enqueuePeer(peer, () => addPeerCandidate(peer, msg.candidate));
  } else if (typeof msg.sdp === 'string') {
    const type = msg.type === 'peer-offer' ? 'offer' : 'answer';
    enqueuePeer(peer, () => onPeerDescription(peer, type, msg.sdp));
  }
}

async function onPeerDescription(peer, type, sdp) {
  const pc = peer.pc;
  const collision = type === 'offer' && (peer.makingOffer || pc.signalingState !== 'stable');
  peer.ignoreOffer = !peer.polite && collision;
  if (peer.ignoreOffer) return; // ours wins; they roll back and answer it
  if (type === 'answer' && pc.signalingState !== 'have-local-offer') return;
  await pc.setRemoteDescription({ type, sdp }); // rolls our own offer back if needed
  if (type !== 'offer' || peer.closed) return;
  if (!peer.attached) await attachLocalMedia(peer);
  await pc.setLocalDescription(await pc.createAnswer());
  if (!peer.closed) sendPeer('peer-answer', peer.id, { sdp: pc.localDescription.sdp });
}

async function addPeerCandidate(peer, candidate) {
  if (candidate === null || candidate === undefined) return;
  const init = typeof candidate === 'string' ? { candidate, sdpMLineIndex: 0 } : candidate;
  try {
    await peer.pc.addIceCandidate(init);
  } catch (err) {
    if (!peer.ignoreOffer) console.warn(`[switchyard] candidate from ${peer.id} refused`, err);
  }
}

function onPeerTrack(peer, event) {
  if (peer.closed) return;
  const { track } = event;
  const stream = event.streams[0] || null;
  detachTrack(track.id);
  session.trackToParticipant.set(track.id, peer.id);
  if (!watchedTracks.has(track)) {
    watchedTracks.add(track);
    track.addEventListener('ended', () => detachTrack(track.id));
  }
  if (stream && !watchedStreams.has(stream)) {
    watchedStreams.add(stream);
    stream.addEventListener('removetrack', (e) => detachTrack(e.track.id));
  }
  const tile = ensureRemoteTile(peer.id);
  tile.tracks.set(track.id, track);
  if (stream) tile.streamOf.set(track.id, stream.id);
  renderTile(tile);
}

/**
 * After a switch, notes when video (or, from someone without a camera, audio) from every other
 * participant is decoding on the new connections: `lastSwitch.recoveredAt`.
 */
async function watchRecovery(sw) {
  const deadline = sw.announcedAt + RECOVERY_WATCH_MS;
  while (session.lastSwitch === sw && session.state === 'joined' && Date.now() < deadline) {
    const s = await collectStats();
    const everyone = [...session.participants.values()].every((p) => {
      const got = s.perParticipant[p.id];
      return got && (p.video ? got.framesDecoded > 0 : got.audioBytes > 0);
    });
    if (everyone && session.lastSwitch === sw) {
      sw.recoveredAt = Date.now();
      console.info(`[switchyard] media from everyone again ${sw.recoveredAt - sw.announcedAt} ms after the switch`);
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------------------------------------
// Participants and tiles
// ---------------------------------------------------------------------------------------------

function addParticipant(p) {
  session.participants.set(p.id, p);
  const tile = ensureRemoteTile(p.id);
  renderTile(tile);
}

function ensureRemoteTile(id) {
  let tile = remoteTiles.get(id);
  if (!tile) {
    tile = createTile(id, false);
    remoteTiles.set(id, tile);
    ui.grid.append(tile.el);
    layoutGrid();
  }
  return tile;
}

function removeRemoteTile(id) {
  const tile = remoteTiles.get(id);
  if (!tile) return;
  remoteTiles.delete(id);
  destroyTile(tile);
  layoutGrid();
}

function createVideo(className) {
  const v = document.createElement('video');
  v.className = className;
  v.autoplay = true;
  v.playsInline = true;
  // Video elements never play sound: remote audio goes through the tile's <audio>.
  v.muted = true;
  return v;
}

function createTile(id, isLocal) {
  const el = document.createElement('div');
  el.className = isLocal ? 'tile local' : 'tile';
  el.dataset.participant = id;
  el.setAttribute('role', 'group');

  const main = createVideo('main');
  const pip = createVideo('pip');
  pip.hidden = true;

  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  avatar.setAttribute('aria-hidden', 'true');

  const label = document.createElement('div');
  label.className = 'label';
  const nameEl = document.createElement('span');
  nameEl.className = 'name';
  const icons = document.createElement('span');
  icons.className = 'icons';
  label.append(icons, nameEl);

  const audio = document.createElement('audio');
  audio.autoplay = true;
  audio.hidden = true;
  audio.muted = isLocal; // never play our own microphone back

  const speaking = document.createElement('div');
  speaking.className = 'speaking-label';
  speaking.textContent = 'Speaking';
  speaking.hidden = true;

  el.append(main, pip, avatar, label, speaking, audio);
  if (!isLocal) {
    // The size a remote video is shown at is what we ask the SFU for (`video-size`).
    new ResizeObserver(scheduleVideoSizes).observe(main);
    new ResizeObserver(scheduleVideoSizes).observe(pip);
  }
  // streamOf: track id -> msid stream id, to tell a camera (shares a stream with the microphone)
  // from a screen share (a stream of its own).
  return {
    id, isLocal, el, main, pip, avatar, nameEl, icons, audio, speaking,
    tracks: new Map(), streamOf: new Map(), audioKey: '',
  };
}

function destroyTile(tile) {
  for (const media of [tile.main, tile.pip, tile.audio]) {
    media.pause();
    media.srcObject = null;
  }
  tile.el.remove();
}

/** What a tile should show: the participant's (or our own) media flags and display name. */
function tileInfo(tile) {
  if (tile.isLocal) {
    return { name: `${session.name} (you)`, audio: micOn(), video: camOn(), screen: !!session.screen };
  }
  const p = session.participants.get(tile.id);
  return p ? { name: p.name, audio: p.audio, video: p.video, screen: p.screen }
    : { name: 'Participant', audio: true, video: true, screen: false };
}

function renderTile(tile) {
  if (!tile) return;
  const info = tileInfo(tile);
  const live = [...tile.tracks.values()].filter((t) => t.readyState !== 'ended');
  const videos = live.filter((t) => t.kind === 'video');
  const audios = live.filter((t) => t.kind === 'audio');

  const { main, camera } = arrangeVideos(tile, videos, audios);
  // A camera that is switched off is not shown at all (it only sends black frames).
  const pip = camera && info.video ? camera : null;
  const showAvatar = !main || (!info.video && !info.screen);

  setVideoTrack(tile.main, showAvatar ? null : main);
  setVideoTrack(tile.pip, showAvatar ? null : pip);
  tile.pip.hidden = showAvatar || !pip;
  // Mirror only our own camera, like a mirror; screens and other people are shown as they are.
  const cam = tile.isLocal ? cameraTrack() : null;
  tile.main.classList.toggle('mirror', !!cam && main === cam);
  tile.pip.classList.toggle('mirror', !!cam && pip === cam);
  if (!tile.isLocal) setAudioTracks(tile, audios);

  tile.el.classList.toggle('video-off', showAvatar);
  tile.el.setAttribute('aria-label', info.name);
  tile.avatar.textContent = initials(info.name);
  tile.avatar.style.setProperty('--hue', hueFor(tile.id));
  tile.nameEl.textContent = info.name;
  tile.icons.innerHTML = ''; // static SVG strings only; names go through textContent
  if (!info.audio) tile.icons.append(tileIcon(ICONS.micOff, 'Microphone muted'));
  if (!info.video) tile.icons.append(tileIcon(ICONS.camOff, 'Camera off'));
  if (info.screen) tile.icons.append(tileIcon(ICONS.screen, 'Sharing screen'));
  applySpeaker(tile);
  if (!tile.isLocal) scheduleVideoSizes();
}

// ---------------------------------------------------------------------------------------------
// Active speaker: announced by the server in the SFU, detected here in the mesh
// ---------------------------------------------------------------------------------------------

function setActiveSpeaker(id) {
  if (session.activeSpeaker === id) return;
  session.activeSpeaker = id;
  session.speakerChangedAt = Date.now();
  if (localTile) applySpeaker(localTile);
  for (const tile of remoteTiles.values()) applySpeaker(tile);
  updateHeader();
}

/** The highlighted border and the "Speaking" label on the speaker's tile. */
function applySpeaker(tile) {
  const pid = tile.isLocal ? session.participantId : tile.id;
  const on = session.activeSpeaker !== null && pid === session.activeSpeaker;
  tile.el.classList.toggle('speaking', on);
  tile.speaking.hidden = !on;
}

function speakerName(id) {
  if (id === null) return '';
  return id === session.participantId ? `${session.name} (you)` : participantName(id);
}

let speakerBusy = false;

/**
 * Mesh: the loudest of our own microphone and each peer's audio (getStats `audioLevel`, smoothed)
 * becomes the speaker when it is clearly louder than the current one; silence changes nothing.
 */
async function detectSpeakerLocally() {
  if (speakerBusy || session.state !== 'joined' || session.topology !== 'mesh') return;
  speakerBusy = true;
  try {
    const levels = new Map();
    let own = null;
    for (const peer of [...session.peers.values()]) {
      if (peer.closed || peer.pc.signalingState === 'closed') continue;
      let report;
      try {
        report = await peer.pc.getStats();
      } catch {
        continue; // closed meanwhile
      }
      report.forEach((s) => {
        if ((s.kind || s.mediaType) !== 'audio' || typeof s.audioLevel !== 'number') return;
        if (s.type === 'inbound-rtp') levels.set(peer.id, Math.max(levels.get(peer.id) || 0, s.audioLevel));
        else if (s.type === 'media-source') own = Math.max(own ?? 0, s.audioLevel);
      });
    }
    if (session.topology !== 'mesh') return;
    if (own !== null && session.participantId) levels.set(session.participantId, micOn() ? own : 0);
    const smoothed = session.speakerLevels;
    for (const id of [...smoothed.keys()]) if (!levels.has(id)) smoothed.delete(id);
    for (const [id, level] of levels) smoothed.set(id, 0.5 * (smoothed.get(id) || 0) + 0.5 * level);
    setActiveSpeaker(pickSpeaker(smoothed, session.activeSpeaker, session.speakerChangedAt, Date.now()));
  } finally {
    speakerBusy = false;
  }
}

function pickSpeaker(levels, current, changedAt, now) {
  let best = null;
  let loudest = 0;
  for (const [id, level] of levels) {
    if (level > loudest) {
      best = id;
      loudest = level;
    }
  }
  if (best === null || loudest < SPEAKER_THRESHOLD || best === current) return current;
  if (current === null || !levels.has(current)) return best;
  if (now - changedAt < SPEAKER_HOLD_MS) return current;
  const currentLevel = levels.get(current) || 0;
  return currentLevel < SPEAKER_THRESHOLD || loudest > currentLevel * SPEAKER_SWITCH_RATIO ? best : current;
}

// ---------------------------------------------------------------------------------------------
// SFU: the size each remote video is shown at (`video-size`), so the server sends a layer that fits
// ---------------------------------------------------------------------------------------------

function scheduleVideoSizes() {
  if (session.topology !== 'sfu') return;
  clearTimeout(session.videoSizeTimer);
  session.videoSizeTimer = setTimeout(sendVideoSizes, VIDEO_SIZE_DEBOUNCE_MS);
}

/** The height to ask for when a video is shown `px` device pixels high. */
function heightFor(px) {
  return VIDEO_HEIGHTS.find((h) => h >= px * 0.9) ?? VIDEO_HEIGHTS[VIDEO_HEIGHTS.length - 1];
}

function sendVideoSizes() {
  session.videoSizeTimer = null;
  if (session.state !== 'joined' || session.topology !== 'sfu') return;
  const dpr = window.devicePixelRatio || 1;
  for (const tile of remoteTiles.values()) {
    const hidden = tile.el.classList.contains('video-off');
    for (const [trackId, track] of tile.tracks) {
      if (track.kind !== 'video' || track.readyState === 'ended') continue;
      const stream = tile.streamOf.get(trackId);
      if (!stream) continue;
      let shown = 0;
      for (const v of [tile.main, tile.pip]) {
        if (!hidden && !v.hidden && v.dataset.trackId === trackId) shown = Math.max(shown, v.clientHeight);
      }
      // Not shown (camera off, no room for it): the lowest layer is enough.
      const maxHeight = shown > 0 ? heightFor(shown * dpr) : VIDEO_HEIGHTS[0];
      if (session.videoSizes.get(stream) === maxHeight) continue;
      if (send({ type: 'video-size', stream, maxHeight, epoch: session.topologyEpoch })) {
        session.videoSizes.set(stream, maxHeight);
      }
    }
  }
}

/**
 * With one video track it fills the tile. With camera + screen the screen fills the tile and the
 * camera goes picture-in-picture. The camera is the video that shares a stream with the
 * participant's audio (the publisher sends camera and microphone as one stream and the screen as
 * another); failing that, the earlier track.
 */
function arrangeVideos(tile, videos, audios) {
  if (videos.length < 2) return { main: videos[0] || null, camera: null };
  const audioStreams = new Set(audios.map((t) => tile.streamOf.get(t.id)).filter(Boolean));
  const ownCamera = tile.isLocal ? cameraTrack() : null;
  const isCamera = (t) => t === ownCamera || audioStreams.has(tile.streamOf.get(t.id));
  const camera = videos.find(isCamera) || videos[0];
  const others = videos.filter((t) => t !== camera);
  return { main: others[others.length - 1], camera };
}

function tileIcon(svg, label) {
  const span = document.createElement('span');
  span.className = 'tile-icon';
  span.setAttribute('role', 'img');
  span.setAttribute('aria-label', label);
  span.title = label;
  span.innerHTML = svg;
  return span;
}

function setVideoTrack(video, track) {
  const id = track ? track.id : '';
  if (video.dataset.trackId === id) return; // avoid restarting playback (flicker)
  video.dataset.trackId = id;
  video.srcObject = track ? new MediaStream([track]) : null;
  if (track) video.play().catch(() => {}); // muted video may always autoplay; ignore races
}

function setAudioTracks(tile, tracks) {
  const key = tracks.map((t) => t.id).sort().join(',');
  if (tile.audioKey === key) return;
  tile.audioKey = key;
  tile.audio.srcObject = tracks.length ? new MediaStream(tracks) : null;
  tile.audio.muted = false;
  if (tracks.length) tile.audio.play().catch(onAutoplayBlocked);
}

// Browsers may refuse to play sound before a user gesture (e.g. with ?autojoin=1).
let audioUnlockToast = null;
function onAutoplayBlocked(err) {
  if (err?.name !== 'NotAllowedError' || audioUnlockToast?.isConnected) return;
  audioUnlockToast = showToast('The browser blocked call audio.', {
    kind: 'info',
    timeout: 0,
    action: {
      label: 'Enable audio',
      run: () => {
        for (const tile of remoteTiles.values()) {
          if (tile.audio.srcObject) tile.audio.play().catch(() => {});
        }
      },
    },
  });
}

/**
 * Picks the column count that makes 16:9 tiles as large as possible in the stage, so the grid
 * grows and shrinks with the number of participants and the window size.
 */
function layoutGrid() {
  const n = ui.grid.children.length;
  if (n === 0) return;
  const style = getComputedStyle(ui.grid);
  const gap = parseFloat(style.columnGap) || 0;
  const width = ui.stage.clientWidth - parseFloat(getComputedStyle(ui.stage).paddingLeft) * 2;
  const height = ui.stage.clientHeight - parseFloat(getComputedStyle(ui.stage).paddingTop) * 2;
  if (width <= 0 || height <= 0) return;
  let best = { cols: 1, tileWidth: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const byWidth = (width - gap * (cols - 1)) / cols;
    const byHeight = ((height - gap * (rows - 1)) / rows) * (16 / 9);
    const tileWidth = Math.min(byWidth, byHeight);
    if (tileWidth > best.tileWidth) best = { cols, tileWidth };
  }
  ui.grid.style.setProperty('--cols', String(best.cols));
  ui.grid.style.setProperty('--tile-w', `${Math.max(120, Math.floor(best.tileWidth))}px`);
}

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

function sendChat(text) {
  const body = String(text ?? '').trim();
  if (session.state !== 'joined' || body.length === 0) return false;
  if (body.length > CHAT_MAX) {
    showToast(`Messages are limited to ${CHAT_MAX} characters.`);
    return false;
  }
  // No local echo: the server sends our own message back to us like everyone else's.
  return send({ type: 'chat', text: body });
}

function renderChatMessage(entry) {
  const li = document.createElement('li');
  li.className = entry.from && entry.from === session.participantId ? 'chat-msg mine' : 'chat-msg';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = entry.name;
  const time = document.createElement('time');
  time.dateTime = new Date(entry.ts).toISOString();
  time.textContent = formatTime(entry.ts);
  meta.append(author, time);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = entry.text;
  li.append(meta, text);
  appendChatItem(li);
}

function addSystemLine(text) {
  const li = document.createElement('li');
  li.className = 'chat-system';
  li.textContent = `${text} · ${formatTime(Date.now())}`;
  appendChatItem(li);
}

function appendChatItem(li) {
  const log = ui.chatLog;
  // Follow new messages only if the reader is already at the bottom.
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function setChatOpen(open) {
  session.chatOpen = open;
  if (open) session.unread = 0;
  ui.callScreen.classList.toggle('chat-open', open);
  ui.chatPanel.hidden = !open;
  updateToolbar();
  // The stage changes size with the panel.
  requestAnimationFrame(layoutGrid);
  if (open) ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Header, toolbar, screens
// ---------------------------------------------------------------------------------------------

function setState(state) {
  session.state = state;
  document.body.dataset.state = state;
  updateToolbar();
}

function setConnection(connection) {
  session.connection = connection;
  updateHeader();
}

function updateHeader() {
  ui.roomName.textContent = session.room;
  ui.modeBadge.textContent = session.mode ? session.mode.toUpperCase() : '—';
  ui.modeBadge.dataset.mode = session.mode || '';
  const count = session.serverCount ?? (session.state === 'joined' ? session.participants.size + 1 : 0);
  ui.count.textContent = session.state === 'joined' || session.serverCount !== null
    ? `${count} participant${count === 1 ? '' : 's'}` : '';

  let status;
  if (session.connection === 'closed' && session.state === 'left' && !session.leaving) status = 'Disconnected';
  else if (session.state === 'joined') status = 'Connected';
  else if (session.connection === 'connecting' || session.state === 'joining') status = 'Connecting…';
  else status = 'Offline';
  ui.conn.textContent = status;
  ui.conn.dataset.status = status.toLowerCase().replace('…', '');
  const speaker = session.state === 'joined' ? speakerName(session.activeSpeaker) : '';
  ui.speaker.textContent = speaker ? `Speaking: ${speaker}` : '';
  ui.speaker.hidden = !speaker;
}

function setTool(btn, { icon, label, text, off = false, disabled = false, badge = 0 }) {
  btn.innerHTML = icon; // static SVG only
  const span = document.createElement('span');
  span.className = 'tool-label';
  span.textContent = text;
  btn.append(span);
  if (badge > 0) {
    const b = document.createElement('span');
    b.className = 'badge';
    b.textContent = badge > 99 ? '99+' : String(badge);
    btn.append(b);
  }
  btn.setAttribute('aria-label', badge > 0 ? `${label} (${badge} unread)` : label);
  btn.title = label;
  btn.classList.toggle('off', off);
  btn.disabled = disabled;
}

function updateToolbar() {
  const joined = session.state === 'joined';
  const mic = micOn();
  setTool(ui.micBtn, {
    icon: mic ? ICONS.mic : ICONS.micOff,
    label: mic ? 'Mute microphone' : 'Unmute microphone',
    text: mic ? 'Mute' : 'Unmute',
    off: !mic,
    disabled: !audioTrack(),
  });
  const cam = camOn();
  setTool(ui.camBtn, {
    icon: cam ? ICONS.cam : ICONS.camOff,
    label: cam ? 'Turn camera off' : 'Turn camera on',
    text: cam ? 'Stop video' : 'Start video',
    off: !cam,
    disabled: !cameraTrack(),
  });
  const sharing = !!session.screen;
  setTool(ui.screenBtn, {
    icon: sharing ? ICONS.screenOff : ICONS.screen,
    label: sharing ? 'Stop sharing screen' : 'Share screen',
    text: sharing ? 'Stop share' : 'Share',
    disabled: !joined || !navigator.mediaDevices?.getDisplayMedia,
  });
  ui.screenBtn.classList.toggle('active', sharing);
  setTool(ui.chatBtn, {
    icon: ICONS.chat,
    label: session.chatOpen ? 'Hide chat' : 'Show chat',
    text: 'Chat',
    badge: session.chatOpen ? 0 : session.unread,
  });
  ui.chatBtn.classList.toggle('active', session.chatOpen);
  setTool(ui.leaveBtn, { icon: ICONS.leave, label: 'Leave call', text: 'Leave', disabled: session.state === 'idle' });
}

function showJoinScreen(status = '') {
  ui.callScreen.hidden = true;
  ui.joinScreen.hidden = false;
  ui.joinStatus.textContent = status;
  ui.joinError.textContent = '';
  ui.nameInput.value ||= session.name;
}

function showCallScreen() {
  ui.joinScreen.hidden = true;
  ui.callScreen.hidden = false;
  ui.banner.hidden = true;
  setChatOpen(session.chatOpen);
  requestAnimationFrame(layoutGrid);
}

// ---------------------------------------------------------------------------------------------
// Joining and leaving
// ---------------------------------------------------------------------------------------------

function validateJoin(room, name) {
  if (!ROOM_RE.test(room)) return 'Room names are 1–64 letters, digits, "-", "_" or ".".';
  if (name.length < 1 || name.length > NAME_MAX) return `Names are 1–${NAME_MAX} characters.`;
  return null;
}

function join(room, name) {
  if (session.state === 'joining' || session.state === 'joined') return false;
  const problem = validateJoin(room, name);
  if (problem) {
    showJoinScreen();
    ui.joinError.textContent = problem;
    return false;
  }
  resetSession();
  session.room = room;
  session.name = name;
  setState('joining');

  localTile = createTile('local', true);
  ui.grid.append(localTile.el);
  renderTile(localTile);
  showCallScreen();
  updateHeader();

  // Ask for the camera while the socket connects; publishing waits for both.
  session.mediaReady = acquireLocalMedia().then((stream) => {
    // The call may have ended while the permission prompt was open.
    if (session.state !== 'joining' && session.state !== 'joined') {
      stream?.getTracks().forEach((t) => t.stop());
      return null;
    }
    if (stream) setLocalStream(stream);
    return stream;
  });
  connect();
  return true;
}

/** Clears everything from a previous call before a new join. */
function resetSession() {
  session.leaving = false;
  session.participantId = null;
  session.mode = null;
  session.epoch = null;
  session.topology = null;
  session.topologyEpoch = null;
  session.mediaSettled = false;
  session.published = false;
  session.serverCount = null;
  session.iceServers = [];
  session.participants.clear();
  session.earlier.clear();
  session.peers.clear();
  session.lastSwitch = null;
  session.switches = [];
  session.streamToParticipant.clear();
  session.midToStream = new Map();
  session.midToParticipant = new Map();
  session.trackToParticipant.clear();
  session.sub = { running: false, pending: null, lastVersion: -Infinity };
  session.pub = { running: false, wanted: false, pendingAnswer: null };
  session.activeSpeaker = null;
  session.speakerLevels.clear();
  session.videoSizes.clear();
  session.chatLog.length = 0; // keep the array identity: tests may hold a reference
  session.unread = 0;
  ui.chatLog.replaceChildren();
}

/** Stops media and closes every peer connection and all tiles. Leaves the socket alone. */
function teardownCall() {
  teardownTopology();
  session.topology = null;
  if (session.screen) {
    session.screen.stream.getTracks().forEach((t) => t.stop());
    session.screen = null;
  }
  session.localStream?.getTracks().forEach((t) => t.stop());
  session.localStream = null;
  session.fakeAudio?.ctx.close().catch(() => {});
  session.fakeAudio = null;
  for (const tile of remoteTiles.values()) destroyTile(tile);
  remoteTiles.clear();
  if (localTile) destroyTile(localTile);
  localTile = null;
  session.participants.clear();
  updateToolbar();
}

/** Ends the call and closes the socket without reporting a disconnect. */
function abandonCall() {
  session.leaving = true;
  const ws = session.ws;
  session.ws = null;
  teardownCall();
  // Queued frames (e.g. our `leave`) are sent before the close handshake.
  ws?.close(1000, 'leaving');
  setConnection('closed');
}

function leave() {
  // After a disconnect the call screen stays up with a banner; Leave just goes back to the form.
  if (session.state === 'left' && !ui.callScreen.hidden) showJoinScreen();
  if (session.state !== 'joining' && session.state !== 'joined') return false;
  if (session.state === 'joined') send({ type: 'leave' });
  abandonCall();
  setState('left');
  showJoinScreen(`You left ${session.room}.`);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Stats for tests and diagnostics
// ---------------------------------------------------------------------------------------------

/**
 * Sums inbound-rtp stats, overall and per sending participant: from the subscribe connection in
 * the SFU, from each participant's own peer connection in the mesh.
 */
async function collectStats() {
  const result = { framesDecoded: 0, audioBytesReceived: 0, videoBytesReceived: 0, perParticipant: {} };
  const sources = [];
  if (session.subscribePc) sources.push({ pc: session.subscribePc, owner: null });
  for (const peer of session.peers.values()) sources.push({ pc: peer.pc, owner: peer.id });
  const reports = await Promise.all(sources.map(async ({ pc, owner }) => {
    if (pc.signalingState === 'closed') return null;
    try {
      return { owner, report: await pc.getStats() };
    } catch {
      return null; // closed meanwhile
    }
  }));
  for (const r of reports) if (r) addInbound(result, r.report, r.owner);
  return result;
}

/**
 * Per sending participant, their (camera) video as we receive it: { frameHeight, frameWidth,
 * framesDecoded } from the inbound-rtp stats; with several videos (camera and screen), the one
 * with the most frames decoded.
 */
async function inboundVideo() {
  const out = {};
  const sources = [];
  if (session.subscribePc) sources.push({ pc: session.subscribePc, owner: null });
  for (const peer of session.peers.values()) sources.push({ pc: peer.pc, owner: peer.id });
  for (const { pc, owner } of sources) {
    if (pc.signalingState === 'closed') continue;
    let report;
    try {
      report = await pc.getStats();
    } catch {
      continue;
    }
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp' || (s.kind || s.mediaType) !== 'video') return;
      const pid = owner
        || (s.mid !== undefined && session.midToParticipant.get(s.mid))
        || session.trackToParticipant.get(s.trackIdentifier);
      if (!pid) return;
      const v = { frameHeight: s.frameHeight || 0, frameWidth: s.frameWidth || 0, framesDecoded: s.framesDecoded || 0 };
      if (!out[pid] || v.framesDecoded > out[pid].framesDecoded) out[pid] = v;
    });
  }
  return out;
}

function addInbound(result, report, owner) {
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const kind = s.kind || s.mediaType;
    const bytes = s.bytesReceived || 0;
    const frames = s.framesDecoded || 0;
    const pid = owner
      || (s.mid !== undefined && session.midToParticipant.get(s.mid))
      || session.trackToParticipant.get(s.trackIdentifier)
      || null;
    const per = pid ? (result.perParticipant[pid] ||= { framesDecoded: 0, audioBytes: 0, videoBytes: 0 }) : null;
    if (kind === 'video') {
      result.framesDecoded += frames;
      result.videoBytesReceived += bytes;
      if (per) {
        per.framesDecoded += frames;
        per.videoBytes += bytes;
      }
    } else if (kind === 'audio') {
      result.audioBytesReceived += bytes;
      if (per) per.audioBytes += bytes;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Test hooks: window.switchyard (getters so tests always read live values)
// ---------------------------------------------------------------------------------------------

window.switchyard = {
  get state() { return session.state; },
  get connection() { return session.connection; },
  get participantId() { return session.participantId; },
  get mode() { return session.mode; },
  get epoch() { return session.epoch; },
  /** What the client has built: 'sfu' (publish + subscribe connections) or 'mesh'. */
  get topology() { return session.topology; },
  get iceServers() { return session.iceServers; },
  /** Mesh: the participants we hold a peer connection with, and its state. */
  peers: () => Object.fromEntries([...session.peers.values()].map((p) => [p.id, p.pc.connectionState])),
  /** Per mesh peer: the candidate types of the selected pair, e.g. { p2: { local: 'relay', remote: 'relay' } }. */
  peerPaths: async () => {
    const out = {};
    for (const peer of session.peers.values()) {
      const report = await peer.pc.getStats();
      let pair = null;
      report.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
      });
      if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
      const local = pair && report.get(pair.localCandidateId);
      const remote = pair && report.get(pair.remoteCandidateId);
      out[peer.id] = { local: local ? local.candidateType : null, remote: remote ? remote.candidateType : null };
    }
    return out;
  },
  /** The latest mode switch: { from, mode, epoch, announcedAt, recoveredAt } (ms since the epoch). */
  get lastSwitch() { return session.lastSwitch; },
  get switches() { return session.switches; },
  get room() { return session.room; },
  /** Ids of the other participants currently in the room (not including ourselves). */
  participants: () => [...session.participants.keys()],
  get publishPc() { return session.publishPc; },
  get subscribePc() { return session.subscribePc; },
  get localStream() { return session.localStream; },
  remoteTiles: () => remoteTiles.size,
  stats: collectStats,
  /** Per remote participant: { frameHeight, frameWidth, framesDecoded } of the video we receive. */
  inboundVideo,
  /** The active speaker's participant id (ours included), or null. */
  activeSpeaker: () => session.activeSpeaker,
  /** ?fakeAudio=1 only: turn the synthetic microphone's tone on (talking) or off; false otherwise. */
  setTalking,
  /** SFU: msid stream id -> the maxHeight last sent in `video-size`. */
  videoSizes: () => Object.fromEntries(session.videoSizes),
  leave,
  sendChat,
  join: (room, name) => join(String(room ?? ''), String(name ?? '')),
  chatLog: session.chatLog,
};

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

function bindUi() {
  ui.joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    join(ui.roomInput.value.trim(), ui.nameInput.value.trim());
  });
  ui.micBtn.addEventListener('click', toggleMic);
  ui.camBtn.addEventListener('click', toggleCamera);
  ui.screenBtn.addEventListener('click', () => {
    const action = session.screen ? stopScreenShare() : startScreenShare();
    action.catch((err) => reportError('Screen share failed', err));
  });
  ui.chatBtn.addEventListener('click', () => setChatOpen(!session.chatOpen));
  ui.chatClose.addEventListener('click', () => setChatOpen(false));
  ui.leaveBtn.addEventListener('click', leave);
  ui.rejoin.addEventListener('click', () => join(session.room, session.name));
  ui.chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault(); // Enter in the input submits the form
    if (sendChat(ui.chatInput.value)) ui.chatInput.value = '';
  });
  new ResizeObserver(() => layoutGrid()).observe(ui.stage);
  setInterval(() => detectSpeakerLocally().catch((err) => console.warn('[switchyard] speaker detection', err)),
    SPEAKER_POLL_MS);
  // Tell the server right away when the tab goes, rather than waiting for a timeout.
  window.addEventListener('pagehide', () => {
    if (session.state === 'joined') send({ type: 'leave' });
  });
}

function guestName() {
  return `Guest ${Math.floor(1000 + Math.random() * 9000)}`;
}

function start() {
  const params = new URLSearchParams(location.search);
  ui.roomInput.value = params.get('room') || 'lobby';
  ui.nameInput.value = params.get('name') || '';
  session.token = params.get('token');
  bindUi();
  setState('idle');
  updateHeader();
  showJoinScreen();
  if (params.get('autojoin') === '1') {
    if (!ui.nameInput.value) ui.nameInput.value = guestName();
    join(ui.roomInput.value.trim(), ui.nameInput.value.trim());
  } else {
    (ui.nameInput.value ? ui.roomInput : ui.nameInput).focus();
  }
}

start();
