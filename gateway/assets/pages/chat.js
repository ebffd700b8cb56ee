// The chat page: conversation list, transcript and a streamed composer.
(() => {
  'use strict';

  const body = document.body;
  const t = readStrings();
  const lang = t.lang || document.documentElement.lang || 'en';
  // The token stays in the URL on purpose: a reload must keep working.
  const token = new URLSearchParams(location.search).get('token') || '';
  const byId = (id) => document.getElementById(id);
  const ui = {
    list: byId('conversation-list'), listStatus: byId('conversations-status'), more: byId('more-conversations'),
    main: byId('main'), messages: byId('messages'), empty: byId('empty-state'), alert: byId('alert'),
    form: byId('composer'), input: byId('composer-input'), send: byId('send'), stop: byId('stop'),
    toggle: byId('toggle-list'), fresh: byId('new-conversation'),
  };
  const when = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' });
  const narrow = window.matchMedia('(max-width: 720px)');

  // currentEntry keeps the open conversation listed even when the loaded pages do not (yet)
  // hold it; the *Seq counters let a late answer notice that the view has moved on.
  const state = {
    conversations: [], nextCursor: null, currentId: null, currentEntry: null,
    listSeq: 0, openSeq: 0, stream: null, sessionOver: false, stick: true,
  };

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function readStrings() {
    try { return JSON.parse(body.dataset.strings || '{}'); } catch { return {}; }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function timeEl(iso) {
    const date = new Date(iso);
    if (!iso || Number.isNaN(date.getTime())) return null;
    return Object.assign(el('time', null, when.format(date)), { dateTime: iso });
  }

  function describe(detail) {
    if (Array.isArray(detail)) return detail.map((d) => d && d.msg).filter(Boolean).join('; ');
    return typeof detail === 'string' ? detail : '';
  }

  async function failure(res) {
    if (res.status === 401) return new ApiError(401, t.sessionExpired);
    if (res.status === 429) return new ApiError(429, t.rateLimited);
    let detail = '';
    // Not JSON (a proxy's error page): the generic message is all we can say.
    try { detail = describe((await res.json()).detail); } catch { /* generic */ }
    return new ApiError(res.status, detail || t.networkError);
  }

  async function request(path, init = {}) {
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json', ...init.headers };
    let res;
    try {
      res = await fetch(path, { ...init, headers });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, t.networkError);
    }
    if (!res.ok) throw await failure(res);
    return res;
  }

  function messageOf(err) {
    if (err && err.status === 401) endSession();
    return (err instanceof ApiError && err.message) || t.networkError;
  }

  function showAlert(text) {
    ui.alert.textContent = text || '';
    ui.alert.hidden = !text;
  }

  function endSession() {
    state.sessionOver = true;
    showAlert(t.sessionExpired);
    ui.input.disabled = true;
    ui.send.disabled = true;
  }

  // ---- Conversation list ----

  const setListStatus = (text) => { ui.listStatus.textContent = text || ''; };

  function listItem(conv) {
    const button = el('button', 'conversation');
    button.type = 'button';
    button.dataset.id = conv.id;
    if (conv.id === state.currentId) button.setAttribute('aria-current', 'true');
    button.append(el('span', 'title', conv.title || t.untitled), timeEl(conv.updated_at) || '');
    const li = el('li');
    li.append(button);
    return li;
  }

  function renderList() {
    const active = document.activeElement;
    const focusedId = active && ui.list.contains(active) ? active.dataset.id : null;
    const items = state.conversations.slice();
    const found = items.find((c) => c.id === state.currentId);
    if (found) state.currentEntry = found;
    else if (state.currentId && state.currentEntry) items.unshift(state.currentEntry);
    ui.list.replaceChildren(...items.map(listItem));
    if (items.length) setListStatus('');
    // Rebuilding the list must not throw keyboard users back to the top of the page.
    if (focusedId) {
      const again = [...ui.list.querySelectorAll('button')].find((b) => b.dataset.id === focusedId);
      if (again) again.focus();
    }
  }

  async function loadConversations(reset) {
    const seq = ++state.listSeq;
    if (!reset || !state.conversations.length) setListStatus(t.loading);
    ui.more.disabled = true;
    try {
      const query = new URLSearchParams({ limit: '20' });
      if (!reset && state.nextCursor) query.set('cursor', state.nextCursor);
      const page = await (await request(`/v1/conversations?${query}`)).json();
      if (seq !== state.listSeq) return;
      const items = Array.isArray(page.data) ? page.data : [];
      if (reset) state.conversations = items;
      else {
        const known = new Set(state.conversations.map((c) => c.id));
        state.conversations.push(...items.filter((c) => !known.has(c.id)));
      }
      state.nextCursor = page.next_cursor || null;
      renderList();
      setListStatus(ui.list.children.length ? '' : t.noConversations);
    } catch (err) {
      if (seq === state.listSeq) setListStatus(messageOf(err));
    } finally {
      if (seq === state.listSeq) {
        ui.more.disabled = false;
        ui.more.hidden = !state.nextCursor;
      }
    }
  }

  // ---- Messages ----

  function hashId() {
    return new URLSearchParams(location.hash.slice(1)).get('c');
  }

  function setHash(id) {
    const hash = id ? `#c=${encodeURIComponent(id)}` : '';
    history.replaceState(history.state, '', location.pathname + location.search + hash);
  }

  function follow() {
    if (state.stick) ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function clearMessages(text) {
    ui.messages.replaceChildren(ui.empty);
    ui.empty.textContent = text;
    ui.empty.hidden = false;
  }

  function messageEl(role, text, status, id) {
    const article = el('article', `message ${role}`);
    article.dataset.status = status;
    if (id) article.dataset.id = id;
    article.append(el('p', 'who', role === 'user' ? t.you : t.assistant), el('div', 'content', text));
    return article;
  }

  function setNote(article, text) {
    let note = article.querySelector('.note');
    if (!text) return note && note.remove();
    if (!note) {
      note = el('p', 'note');
      article.querySelector('.content').after(note);
    }
    note.textContent = text;
  }

  function addRetry(article, prompt) {
    const button = el('button', 'retry', t.retry);
    button.type = 'button';
    button.addEventListener('click', () => {
      if (state.stream || state.sessionOver) return;
      button.remove();
      send(prompt);
    });
    article.append(button);
  }

  function renderMessages(list) {
    const shown = list.filter((m) => m.role === 'user' || m.role === 'assistant');
    clearMessages(t.empty);
    ui.empty.hidden = shown.length > 0;
    let prompt = '';
    let last = null;
    for (const m of shown) {
      const status = m.status || 'complete';
      const article = messageEl(m.role, m.content || '', status, m.id);
      if (m.role === 'user') prompt = m.content || '';
      else {
        if (status !== 'complete') setNote(article, status === 'failed' ? t.failed : t.partial);
        last = { article, status, prompt };
      }
      ui.messages.append(article);
    }
    if (last && last.status !== 'complete' && last.prompt) addRetry(last.article, last.prompt);
    state.stick = true;
    follow();
  }

  // Points the page at another conversation (or none); a running answer is stopped, which
  // the server keeps as partial.
  function switchTo(id, emptyText) {
    if (state.stream) state.stream.abort();
    state.currentId = id;
    state.currentEntry = id ? state.conversations.find((c) => c.id === id) || { id, title: null, updated_at: null } : null;
    setHash(id);
    showAlert(state.sessionOver ? t.sessionExpired : '');
    renderList();
    clearMessages(emptyText);
    ui.messages.removeAttribute('aria-busy');
    return ++state.openSeq;
  }

  async function openConversation(id) {
    const seq = switchTo(id, t.loading);
    ui.messages.setAttribute('aria-busy', 'true');
    try {
      const messages = [];
      const seen = new Set();
      let cursor = null;
      do {
        const query = new URLSearchParams({ limit: '100' });
        if (cursor) query.set('cursor', cursor);
        const path = `/v1/conversations/${encodeURIComponent(id)}/messages?${query}`;
        const page = await (await request(path)).json();
        if (seq !== state.openSeq) return;
        messages.push(...(Array.isArray(page.data) ? page.data : []));
        seen.add(cursor);
        cursor = page.next_cursor || null;
      } while (cursor && !seen.has(cursor));
      renderMessages(messages);
      if (!state.currentEntry.updated_at && messages.length) {
        state.currentEntry.updated_at = messages[messages.length - 1].created_at;
        renderList();
      }
      ui.messages.removeAttribute('aria-busy');
    } catch (err) {
      if (seq !== state.openSeq) return;
      // A conversation that cannot be read should not come back on the next reload.
      switchTo(null, t.empty);
      showAlert(messageOf(err));
    }
  }

  function startNew() {
    switchTo(null, t.empty);
    if (drawerMode()) setListOpen(false);
    ui.input.focus();
  }

  // ---- Streaming ----

  // A minimal Server-Sent Events reader (EventSource cannot POST).
  async function readEvents(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let [buffer, name, data] = ['', 'message', []];
    const line = (raw) => {
      const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (text === '') {
        if (data.length) {
          let parsed = null;
          // A malformed event is skipped rather than ending the whole answer.
          try { parsed = JSON.parse(data.join('\n')); } catch { /* skipped */ }
          if (parsed) onEvent(name, parsed);
        }
        [name, data] = ['message', []];
        return;
      }
      if (text.startsWith(':')) return;
      const colon = text.indexOf(':');
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? '' : text.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split('\n');
      buffer = lines.pop();
      lines.forEach(line);
    }
  }

  function setBusy(on) {
    if (on) body.dataset.busy = 'true';
    else delete body.dataset.busy;
    ui.send.hidden = on;
    ui.send.disabled = on || state.sessionOver;
    ui.stop.hidden = !on;
    // Screen readers wait for the whole answer instead of reading every fragment.
    if (on) ui.messages.setAttribute('aria-busy', 'true');
    else ui.messages.removeAttribute('aria-busy');
  }

  function restoreInput(text) {
    if (ui.input.disabled) return;
    ui.input.value = ui.input.value.trim() ? `${text}\n${ui.input.value}` : text;
  }

  async function send(text) {
    if (state.stream || state.sessionOver) return;
    showAlert('');
    ui.messages.querySelectorAll('.retry').forEach((b) => b.remove());
    ui.empty.hidden = true;
    const question = messageEl('user', text, 'complete');
    const answer = messageEl('assistant', '', 'streaming');
    const content = answer.querySelector('.content');
    setNote(answer, t.answering);
    ui.messages.append(question, answer);
    state.stick = true;
    follow();

    const controller = new AbortController();
    const seq = state.openSeq;
    state.stream = controller;
    setBusy(true);
    ui.input.focus();
    const payload = { message: text, lang, stream: true };
    if (state.currentId) payload.conversation_id = state.currentId;
    let [started, outcome, errorStatus, received, problem] = [false, null, 0, '', null];
    try {
      const res = await request('/v1/chat', {
        method: 'POST',
        signal: controller.signal,
        headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
        body: JSON.stringify(payload),
      });
      const handle = (name, data) => {
        if (name === 'start') {
          started = true;
          if (data.message_id) answer.dataset.id = data.message_id;
          if (data.user_message_id) question.dataset.id = data.user_message_id;
          if (data.conversation_id && data.conversation_id !== state.currentId && seq === state.openSeq) {
            state.currentId = data.conversation_id;
            state.currentEntry = { id: data.conversation_id, title: null, updated_at: new Date().toISOString() };
            setHash(state.currentId);
            renderList();
            loadConversations(true);
          }
        } else if (name === 'delta' && typeof data.delta === 'string') {
          received += data.delta;
          content.append(data.delta);
          follow();
        } else if (name === 'done') {
          outcome = 'done';
          content.textContent = typeof data.answer === 'string' ? data.answer : received;
          answer.dataset.status = 'complete';
          setNote(answer, '');
          follow();
        } else if (name === 'error') {
          outcome = 'error';
          errorStatus = Number(data.status) || 0;
        }
      };
      // A proxy or an older server may answer with the whole JSON turn instead of events.
      if ((res.headers.get('content-type') || '').includes('application/json')) {
        const whole = await res.json();
        handle('start', whole);
        handle('done', whole);
      } else await readEvents(res.body, handle);
    } catch (err) {
      problem = err;
    }

    if (!started) {
      // Nothing was stored: take the bubbles back and give the text back to the user.
      question.remove();
      answer.remove();
      if (!ui.messages.querySelector('.message')) ui.empty.hidden = false;
      restoreInput(text);
      if (!problem || problem.name !== 'AbortError') showAlert(messageOf(problem));
    } else if (outcome !== 'done') {
      const partial = (problem && problem.name === 'AbortError') || received.length > 0;
      answer.dataset.status = partial ? 'partial' : 'failed';
      setNote(answer, partial ? t.partial : t.failed);
      addRetry(answer, text);
      if (errorStatus === 401) endSession();
      else if (errorStatus === 429) showAlert(t.rateLimited);
    }
    state.stream = null;
    setBusy(false);
    // The title and order change once the answer is stored.
    if (started) loadConversations(true);
    const active = document.activeElement;
    if (!active || active === body || active === ui.stop || active === ui.send) ui.input.focus();
  }

  // ---- Drawer (small screens and embed mode) ----

  function drawerMode() {
    return body.classList.contains('embed') || narrow.matches;
  }

  function setListOpen(open, focus) {
    body.classList.toggle('list-open', open);
    ui.toggle.setAttribute('aria-expanded', String(open));
    if (open && focus) {
      const target = ui.list.querySelector('[aria-current="true"]') || ui.list.querySelector('button');
      if (target) target.focus();
    }
  }

  // ---- Wiring ----

  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = ui.input.value;
    if (!text.trim() || state.stream || state.sessionOver) return;
    ui.input.value = '';
    send(text);
  });

  ui.input.addEventListener('keydown', (event) => {
    // keyCode 229: some browsers report the IME's confirming Enter that way.
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    if (!state.stream) ui.form.requestSubmit();
  });

  ui.stop.addEventListener('click', () => state.stream && state.stream.abort());

  ui.fresh.addEventListener('click', startNew);

  ui.more.addEventListener('click', () => loadConversations(false));

  ui.list.addEventListener('click', (event) => {
    const button = event.target.closest('button.conversation');
    if (!button) return;
    if (button.dataset.id !== state.currentId || state.stream) openConversation(button.dataset.id);
    // The drawer hides the button that had focus: hand it to the transcript instead.
    if (drawerMode()) {
      setListOpen(false);
      ui.messages.focus();
    }
  });

  ui.toggle.addEventListener('click', () => {
    setListOpen(!body.classList.contains('list-open'), true);
  });

  // Clicking the dimmed conversation area closes the drawer, as on most phones.
  ui.main.addEventListener('click', () => {
    if (drawerMode() && body.classList.contains('list-open')) setListOpen(false);
  });

  narrow.addEventListener('change', () => {
    if (!drawerMode()) setListOpen(false);
  });

  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || event.isComposing) return;
    if (drawerMode() && body.classList.contains('list-open')) {
      setListOpen(false);
      ui.toggle.focus();
    } else if (body.classList.contains('embed') && window.parent !== window) {
      // Escape inside the frame never reaches the host page; the widget listens for this.
      window.parent.postMessage({ type: 'switchboard:close' }, '*');
    }
  });

  ui.messages.addEventListener('scroll', () => {
    const m = ui.messages;
    state.stick = m.scrollHeight - m.scrollTop - m.clientHeight < 48;
  }, { passive: true });

  window.addEventListener('hashchange', () => {
    const id = hashId();
    if (id && id !== state.currentId) openConversation(id);
  });

  async function init() {
    setListOpen(false);
    const hashed = hashId();
    await Promise.allSettled([loadConversations(true), hashed ? openConversation(hashed) : null]);
    // After a reload the open conversation may sit beyond the first page of the list.
    let pages = 0;
    const listed = () => state.conversations.some((c) => c.id === hashed);
    while (hashed && state.currentId === hashed && state.nextCursor && !listed() && pages++ < 5) {
      await loadConversations(false);
    }
    renderList();
    if (!ui.list.children.length && !ui.listStatus.textContent) setListStatus(t.noConversations);
    body.dataset.ready = 'true';
  }

  init();
})();
