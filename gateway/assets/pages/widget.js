// The embeddable chat launcher. The server wraps this body in an arrow function that also
// defines `STRINGS` (the shell's strings per language); see the route serving /widget.js.

// Only valid while this script runs synchronously, so it is read first.
const script = document.currentScript;
if (!script || !script.src || document.getElementById('switchboard-launcher')) return;

const origin = new URL(script.src, location.href).origin;
const options = script.dataset;
const supported = Object.keys(STRINGS);

function pickLang() {
  const wanted = (options.lang || '').toLowerCase();
  if (supported.includes(wanted)) return wanted;
  for (const tag of navigator.languages || [navigator.language || '']) {
    const primary = String(tag).split(/[-_]/)[0].toLowerCase();
    if (supported.includes(primary)) return primary;
  }
  return 'en';
}

const lang = pickLang();
const strings = { ...STRINGS.en, ...STRINGS[lang] };
const side = options.position === 'left' ? 'left' : 'right';
const tokenUrl = options.tokenUrl || '';
let token = options.token || '';
let frame = null;
let loading = false;
let isOpen = false;

const dark = window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches;
const colors = dark
  ? { accent: '#2f5fd0', surface: '#181b21', text: '#e7e9ee', border: '#3a4150' }
  : { accent: '#1d4ed8', surface: '#ffffff', text: '#1a1d23', border: '#d5d9e0' };
const font = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif';

// The host page's own CSS reaches these elements (they are not in a shadow root, so that
// the ids stay reachable): reset everything, then set what we need, through CSSOM only.
function make(tag, style, attrs) {
  const node = document.createElement(tag);
  node.style.all = 'initial';
  Object.assign(node.style, { boxSizing: 'border-box', fontFamily: font }, style);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

// No stylesheet may be added under a strict CSP, so :focus-visible is emulated.
function focusRing(node, color) {
  node.addEventListener('focus', () => {
    if (node.matches(':focus-visible')) Object.assign(node.style, { outline: `3px solid ${color}`, outlineOffset: '2px' });
  });
  node.addEventListener('blur', () => Object.assign(node.style, { outline: 'none' }));
}

const launcher = make(
  'button',
  {
    position: 'fixed',
    bottom: '20px',
    [side]: '20px',
    zIndex: '2147483000',
    display: 'inline-block',
    padding: '12px 20px',
    borderRadius: '999px',
    border: '2px solid #ffffff',
    background: colors.accent,
    color: '#ffffff',
    font: `600 15px/1.2 ${font}`,
    cursor: 'pointer',
    boxShadow: '0 6px 20px rgba(0, 0, 0, 0.25)',
  },
  { id: 'switchboard-launcher', type: 'button', 'aria-expanded': 'false', 'aria-controls': 'switchboard-panel' },
);

const panel = make(
  'div',
  {
    position: 'fixed',
    zIndex: '2147483001',
    display: 'none',
    flexDirection: 'column',
    overflow: 'hidden',
    background: colors.surface,
    color: colors.text,
    border: `1px solid ${colors.border}`,
    boxShadow: '0 12px 40px rgba(0, 0, 0, 0.3)',
  },
  { id: 'switchboard-panel', role: 'dialog' },
);
panel.hidden = true;

const header = make('div', {
  display: 'flex',
  alignItems: 'center',
  justifyContent: 'space-between',
  gap: '12px',
  flex: '0 0 auto',
  padding: '10px 12px 10px 16px',
  background: colors.accent,
  color: '#ffffff',
});
const heading = make('span', { font: `600 16px/1.3 ${font}`, color: '#ffffff', overflowWrap: 'anywhere' });
const closeButton = make(
  'button',
  {
    display: 'inline-block',
    padding: '6px 12px',
    borderRadius: '6px',
    border: '1px solid #ffffff',
    background: 'transparent',
    color: '#ffffff',
    font: `600 14px/1.2 ${font}`,
    cursor: 'pointer',
  },
  { id: 'switchboard-close', type: 'button' },
);
const status = make(
  'p',
  { display: 'block', margin: '0', padding: '16px', font: `15px/1.5 ${font}`, color: colors.text },
  { id: 'switchboard-status', role: 'status' },
);
const content = make('div', { display: 'flex', flexDirection: 'column', flex: '1 1 auto', minHeight: '0' });

header.append(heading, closeButton);
content.append(status);
panel.append(header, content);
focusRing(launcher, colors.accent);
focusRing(closeButton, '#ffffff');

function applyStrings() {
  launcher.textContent = strings.open;
  heading.textContent = strings.title;
  closeButton.textContent = strings.close;
  panel.setAttribute('aria-label', strings.title);
  if (frame) frame.title = strings.title;
}

function setStatus(text) {
  status.textContent = text || '';
  status.hidden = !text;
  status.style.display = text ? 'block' : 'none';
}

function layout() {
  const full = window.innerWidth < 480;
  Object.assign(panel.style, full
    ? { top: '0', bottom: '0', left: '0', right: '0', width: '100%', height: '100%', maxWidth: 'none', maxHeight: 'none', borderRadius: '0' }
    : {
        top: 'auto',
        bottom: '84px',
        left: side === 'left' ? '20px' : 'auto',
        right: side === 'right' ? '20px' : 'auto',
        width: '380px',
        height: '600px',
        maxWidth: 'calc(100vw - 40px)',
        maxHeight: 'calc(100vh - 104px)',
        borderRadius: '12px',
      });
}

async function fetchToken() {
  if (token) return;
  if (!tokenUrl) throw new Error('no token');
  const res = await fetch(new URL(tokenUrl, location.href), {
    credentials: 'include',
    headers: { Accept: 'application/json' },
  });
  if (!res.ok) throw new Error(`token: ${res.status}`);
  const answer = await res.json();
  if (answer && answer.ui && typeof answer.ui === 'object') {
    for (const key of ['title', 'close', 'open', 'tokenError', 'loading']) {
      if (typeof answer.ui[key] === 'string' && answer.ui[key]) strings[key] = answer.ui[key];
    }
    applyStrings();
  }
  if (!answer || typeof answer.token !== 'string' || !answer.token) throw new Error('token: none');
  token = answer.token;
}

async function load() {
  if (frame || loading) return;
  loading = true;
  setStatus(strings.loading);
  try {
    await fetchToken();
  } catch {
    // Left unset so that the next opening tries again.
    setStatus(strings.tokenError);
    loading = false;
    return;
  }
  const query = new URLSearchParams({ token, embed: '1', lang });
  frame = make(
    'iframe',
    { display: 'block', flex: '1 1 auto', width: '100%', height: '100%', minHeight: '0', border: '0', background: colors.surface },
    { id: 'switchboard-frame', title: strings.title },
  );
  frame.addEventListener('load', () => setStatus(''), { once: true });
  frame.src = `${origin}/chat?${query}`;
  content.append(frame);
  loading = false;
}

function open(moveFocus = true) {
  if (!isOpen) {
    isOpen = true;
    layout();
    panel.hidden = false;
    panel.style.display = 'flex';
    launcher.setAttribute('aria-expanded', 'true');
    load();
  }
  if (moveFocus) closeButton.focus();
}

function close() {
  if (!isOpen) return;
  isOpen = false;
  panel.hidden = true;
  panel.style.display = 'none';
  launcher.setAttribute('aria-expanded', 'false');
  launcher.focus();
}

launcher.addEventListener('click', () => (isOpen ? close() : open()));
closeButton.addEventListener('click', close);
panel.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && !event.isComposing) {
    event.preventDefault();
    close();
  }
});
// Escape pressed inside the chat frame arrives as a message from the gateway's page.
window.addEventListener('message', (event) => {
  if (event.origin !== origin || !frame || event.source !== frame.contentWindow) return;
  if (event.data && event.data.type === 'switchboard:close') close();
});
window.addEventListener('resize', () => {
  if (isOpen) layout();
});

function mount() {
  applyStrings();
  setStatus('');
  document.body.append(launcher, panel);
  if (options.open === 'true') open(false);
}

if (document.body) mount();
else document.addEventListener('DOMContentLoaded', mount, { once: true });

window.SwitchboardWidget = Object.freeze({ open: () => open(), close });
