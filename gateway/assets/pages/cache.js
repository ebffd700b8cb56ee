// The history browser: search a tenant's stored conversations with an API key.
(() => {
  'use strict';

  const KEY_STORE = 'switchboard.apiKey';
  const FILTERS = ['system_id', 'user_id', 'from_date', 'to_date'];

  // A key in the address bar would end up in history, bookmarks and screenshots: move it
  // out before anything else runs.
  const initial = new URL(location.href);
  const keyFromUrl = initial.searchParams.get('api_key');
  if (keyFromUrl !== null) {
    initial.searchParams.delete('api_key');
    history.replaceState(history.state, '', initial.pathname + initial.search + initial.hash);
  }

  const body = document.body;
  const t = readStrings();
  const lang = t.lang || document.documentElement.lang || 'en';
  const byId = (id) => document.getElementById(id);
  const ui = {
    keyForm: byId('key-form'),
    keyInput: byId('api-key'),
    forget: byId('forget-key'),
    alert: byId('alert'),
    history: byId('history'),
    filters: byId('filters'),
    fields: {
      system_id: byId('system-id'),
      user_id: byId('user-id'),
      from_date: byId('from-date'),
      to_date: byId('to-date'),
    },
    status: byId('results-status'),
    rows: document.querySelector('#results tbody'),
    more: byId('more-results'),
    transcriptStatus: byId('transcript-status'),
    transcript: byId('transcript'),
  };
  const when = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' });
  const count = new Intl.NumberFormat(lang);
  const labels = { system_id: t.systemId, user_id: t.userId, from_date: t.fromDate, to_date: t.toDate };

  const state = { key: null, nextCursor: null, total: 0, searchSeq: 0, openSeq: 0, memoryKey: null };

  class ApiError extends Error {
    constructor(status, message, fields) {
      super(message);
      this.status = status;
      this.fields = fields || [];
    }
  }

  function readStrings() {
    try {
      return JSON.parse(document.body.dataset.strings || '{}');
    } catch {
      return {};
    }
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
    const node = el('time', null, when.format(date));
    node.dateTime = iso;
    return node;
  }

  // sessionStorage throws in some sandboxed frames and private modes: fall back to memory.
  function loadKey() {
    try {
      return sessionStorage.getItem(KEY_STORE);
    } catch {
      return state.memoryKey;
    }
  }

  function saveKey(key) {
    state.key = key;
    state.memoryKey = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch {
      // Memory only, then.
    }
  }

  function showAlert(text) {
    ui.alert.textContent = text || '';
    ui.alert.hidden = !text;
  }

  function fieldName(loc) {
    const name = Array.isArray(loc) ? String(loc[loc.length - 1]) : '';
    return labels[name] ? { name, label: labels[name] } : { name, label: name };
  }

  async function failure(res) {
    let detail = null;
    try {
      detail = (await res.json()).detail;
    } catch {
      // Not JSON: only the status is known.
    }
    if (res.status === 401 || res.status === 403) return new ApiError(res.status, t.keyRefused);
    if (res.status === 429) return new ApiError(429, t.rateLimited || t.networkError);
    if (Array.isArray(detail)) {
      const fields = detail.map((d) => fieldName(d && d.loc));
      const text = detail
        .map((d, i) => (fields[i].label ? `${fields[i].label}: ${d.msg}` : d.msg))
        .filter(Boolean)
        .join('; ');
      return new ApiError(res.status, text || t.networkError, fields.map((f) => f.name));
    }
    return new ApiError(res.status, (typeof detail === 'string' && detail) || t.networkError);
  }

  async function request(path) {
    let res;
    try {
      res = await fetch(path, { headers: { 'X-API-Key': state.key, Accept: 'application/json' } });
    } catch {
      throw new ApiError(0, t.networkError);
    }
    if (!res.ok) throw await failure(res);
    return res.json();
  }

  // Returns true when the error meant the key is no good.
  function handleError(err) {
    if (err.status === 401 || err.status === 403) {
      showAlert(t.keyRefused);
      forgetKey(false);
      return true;
    }
    showAlert(err.message || t.networkError);
    for (const name of err.fields || []) {
      const input = ui.fields[name];
      if (input) input.setAttribute('aria-invalid', 'true');
    }
    const first = (err.fields || []).map((n) => ui.fields[n]).find(Boolean);
    if (first) first.focus();
    return false;
  }

  // ---- Key ----

  function showKeyForm() {
    ui.history.hidden = true;
    ui.forget.hidden = true;
    ui.keyForm.hidden = false;
    ui.keyInput.value = '';
    ui.keyInput.focus();
    body.dataset.ready = 'true';
  }

  function showHistory() {
    ui.keyForm.hidden = true;
    ui.forget.hidden = false;
    ui.history.hidden = false;
  }

  function forgetKey(clearAlert) {
    saveKey(null);
    state.searchSeq++;
    state.openSeq++;
    // What the old key could read must not stay on screen for the next person.
    ui.rows.replaceChildren();
    ui.status.textContent = '';
    ui.more.hidden = true;
    resetTranscript();
    if (clearAlert) showAlert('');
    showKeyForm();
  }

  // ---- Search ----

  function filterValues() {
    const values = {};
    for (const name of FILTERS) {
      const value = ui.fields[name].value.trim();
      if (value) values[name] = value;
    }
    return values;
  }

  function writeFiltersToUrl(values) {
    const url = new URL(location.href);
    url.searchParams.delete('api_key');
    for (const name of FILTERS) {
      if (values[name]) url.searchParams.set(name, values[name]);
      else url.searchParams.delete(name);
    }
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  }

  function row(conv) {
    const tr = el('tr');
    tr.dataset.id = conv.id;
    const open = el('button', 'open', conv.title || t.untitled);
    open.type = 'button';
    const titleCell = el('td');
    titleCell.append(open);
    const userCell = el('td', 'user', conv.user_id || '');
    if (conv.system_id) userCell.append(el('small', null, conv.system_id));
    const countCell = el('td', 'count', count.format(Number(conv.message_count) || 0));
    const timeCell = el('td', 'updated');
    const time = timeEl(conv.updated_at);
    if (time) timeCell.append(time);
    tr.append(titleCell, userCell, countCell, timeCell);
    return tr;
  }

  function resultsText() {
    if (!state.total) return t.noResults;
    return `${t.conversations}: ${count.format(state.total)}${state.nextCursor ? '+' : ''}`;
  }

  async function search(more) {
    const seq = ++state.searchSeq;
    delete body.dataset.ready;
    if (!more) {
      state.nextCursor = null;
      state.total = 0;
      ui.rows.replaceChildren();
      resetTranscript();
    }
    showAlert('');
    Object.values(ui.fields).forEach((input) => input.removeAttribute('aria-invalid'));
    ui.status.textContent = t.loading;
    ui.more.disabled = true;
    const query = new URLSearchParams({ ...filterValues(), limit: '50' });
    if (more && state.nextCursor) query.set('cursor', state.nextCursor);
    try {
      const page = await request(`/v1/cache/conversations?${query}`);
      if (seq !== state.searchSeq) return;
      const items = Array.isArray(page.data) ? page.data : [];
      ui.rows.append(...items.map(row));
      state.total += items.length;
      state.nextCursor = page.next_cursor || null;
      ui.status.textContent = resultsText();
    } catch (err) {
      if (seq !== state.searchSeq) return;
      ui.status.textContent = '';
      if (handleError(err)) return;
    } finally {
      if (seq === state.searchSeq) {
        ui.more.disabled = false;
        ui.more.hidden = !state.nextCursor;
        body.dataset.ready = 'true';
      }
    }
  }

  // ---- Transcript ----

  function resetTranscript() {
    ui.transcript.replaceChildren();
    ui.transcriptStatus.textContent = t.selectConversation;
    ui.rows.querySelectorAll('tr[aria-current]').forEach((tr) => tr.removeAttribute('aria-current'));
  }

  function messageEl(m) {
    const role = m.role === 'user' || m.role === 'assistant' ? m.role : 'system';
    const status = m.status || 'complete';
    const article = el('article', `message ${role}`);
    article.dataset.status = status;
    if (m.id) article.dataset.id = m.id;
    const who = role === 'user' ? t.you : role === 'assistant' ? t.assistant : m.role;
    article.append(el('p', 'who', who), el('div', 'content', m.content || ''));
    if (status === 'failed' || status === 'partial' || status === 'in_progress') {
      article.append(el('p', 'note', status === 'failed' ? t.failed : t.partial));
    }
    const time = timeEl(m.created_at);
    if (time) {
      time.className = 'meta';
      article.append(time);
    }
    return article;
  }

  async function openTranscript(tr) {
    const id = tr.dataset.id;
    const seq = ++state.openSeq;
    ui.rows.querySelectorAll('tr[aria-current]').forEach((r) => r.removeAttribute('aria-current'));
    tr.setAttribute('aria-current', 'true');
    ui.transcript.replaceChildren();
    ui.transcriptStatus.textContent = t.loading;
    ui.transcript.setAttribute('aria-busy', 'true');
    try {
      const messages = [];
      const seen = new Set();
      let cursor = null;
      do {
        const query = new URLSearchParams({ limit: '500' });
        if (cursor) query.set('cursor', cursor);
        const page = await request(`/v1/cache/conversations/${encodeURIComponent(id)}/messages?${query}`);
        if (seq !== state.openSeq) return;
        messages.push(...(Array.isArray(page.data) ? page.data : []));
        seen.add(cursor);
        cursor = page.next_cursor || null;
      } while (cursor && !seen.has(cursor));
      ui.transcript.replaceChildren(...messages.map(messageEl));
      const title = tr.querySelector('.open');
      ui.transcriptStatus.textContent = messages.length ? (title ? title.textContent : '') : t.empty;
      ui.transcript.scrollTop = 0;
    } catch (err) {
      if (seq !== state.openSeq) return;
      ui.transcriptStatus.textContent = '';
      tr.removeAttribute('aria-current');
      handleError(err);
    } finally {
      if (seq === state.openSeq) ui.transcript.removeAttribute('aria-busy');
    }
  }

  // ---- Wiring ----

  ui.keyForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    ui.keyInput.value = '';
    saveKey(key);
    showAlert('');
    showHistory();
    search(false);
  });

  ui.forget.addEventListener('click', () => forgetKey(true));

  ui.filters.addEventListener('submit', (event) => {
    event.preventDefault();
    writeFiltersToUrl(filterValues());
    search(false);
  });

  ui.more.addEventListener('click', () => search(true));

  ui.rows.addEventListener('click', (event) => {
    const button = event.target.closest('button.open');
    if (button) openTranscript(button.closest('tr'));
  });

  // ---- Start ----

  for (const name of FILTERS) {
    const value = initial.searchParams.get(name);
    if (value) ui.fields[name].value = value;
  }
  if (keyFromUrl) saveKey(keyFromUrl);
  state.key = loadKey();
  if (state.key) {
    showHistory();
    search(false);
  } else {
    showKeyForm();
  }
})();
