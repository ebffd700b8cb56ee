// Browser tests of the Switchboard pages (`/chat`, `/cache`, the error page) and of the
// embeddable widget (`/widget.js`), driven through a real headless Chromium.
//
// Run by a Rust test, which starts the real gateway (its upstream a mock that streams
// `upstream reply to: <last user message>` word by word) and passes everything through the
// environment:
//   SB_PLAYWRIGHT      directory of the playwright-core package (not resolvable by bare import)
//   SB_CHROMIUM        the Chromium executable
//   SB_GATEWAY         http://127.0.0.1:PORT
//   SB_TOKEN           valid chat JWT for drillquiz / browser-user
//   SB_EXPIRED_TOKEN   correctly signed but expired chat JWT
//   SB_API_KEY         service API key for the history page
//   SB_ALLOWED_ORIGIN  the only frame ancestor the gateway allows (http://drillquiz.test)
//   SB_FOREIGN_ORIGIN  an origin that must not be able to frame the chat (http://evil.test)
//   SB_ARTIFACTS       directory for screenshots (created)
//   SB_SYSTEM_ID       (optional, default drillquiz) the token's tenant: the history filter
//   SB_USER_ID         (optional) the token's user: when set, the history row must name it
//
// Output: one `ok - NAME` / `not ok - NAME: REASON` line per check, then `N passed, N failed`.
// Exit status 1 when any check failed. The scenarios run in order and depend on each other's
// data (scenario 7 reads the conversation scenario 1 created).

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

// ---------------------------------------------------------------------------------------------
// Configuration

const env = readEnv([
  'SB_PLAYWRIGHT',
  'SB_CHROMIUM',
  'SB_GATEWAY',
  'SB_TOKEN',
  'SB_EXPIRED_TOKEN',
  'SB_API_KEY',
  'SB_ALLOWED_ORIGIN',
  'SB_FOREIGN_ORIGIN',
  'SB_ARTIFACTS',
]);
const GATEWAY = env.SB_GATEWAY.replace(/\/+$/, '');
const GATEWAY_ORIGIN = new URL(GATEWAY).origin;
const ALLOWED_ORIGIN = new URL(env.SB_ALLOWED_ORIGIN).origin;
const FOREIGN_ORIGIN = new URL(env.SB_FOREIGN_ORIGIN).origin;
const SYSTEM_ID = process.env.SB_SYSTEM_ID || 'drillquiz';
const USER_ID = process.env.SB_USER_ID || '';

// Waits for conditions: generous enough for a slow 2-core CI machine, short enough that a broken
// page fails in seconds rather than hanging the Rust test.
const WAIT = 15_000;
// How long a refused frame gets to (wrongly) render before we conclude the browser blocked it.
const REFUSAL_WINDOW = 5_000;
// Hard stop for the whole run, so a wedged browser can never hang CI.
const WATCHDOG = 300_000;

// The expected UI strings. They are the spec, copied from gateway/src/routes/pages/i18n.rs
// (and switchboard_auth::chat_ui for the shell strings): a change there must change these.
const TEXT = {
  koTitle: '채팅',
  koSend: '보내기',
  koTokenMissing: '채팅 링크가 완전하지 않습니다. 토큰이 없습니다.',
  esTokenRefused: 'El enlace a este chat no es válido o ha caducado.',
  jaTokenRefused: 'このチャットのリンクは無効か、有効期限が切れています。',
  jaOpen: 'チャットを開く',
  enNoResults: 'No conversations match these filters.',
};

// What the scenarios send; the mock upstream answers `upstream reply to: <message>`.
const KO_MESSAGE = '안녕하세요 오늘 날씨 어때요';
const KO_TITLE_FRAGMENT = '안녕하세요';
const LONG_MESSAGE =
  'count one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen';
const answerTo = (message) => `upstream reply to: ${message}`;

const BROWSER_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  // The host pages (drillquiz.test, evil.test) are "public" to Chromium and the gateway is on
  // loopback, so Local Network Access (Private Network Access in older builds) would block the
  // iframe and the widget's script before any header of ours is read — and a refused frame
  // would pass scenario 5 for the wrong reason. In production both sides are public sites.
  '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests',
];

// ---------------------------------------------------------------------------------------------
// Reporting

let passed = 0;
let failed = 0;

/** Runs one check; prints its line. Returns whether it passed, so later steps can depend on it. */
async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
    return true;
  } catch (error) {
    fail(name, error);
    return false;
  }
}

function fail(name, error) {
  failed += 1;
  console.log(`not ok - ${name}: ${reason(error)}`);
}

/** One line out of an error: Playwright's messages carry a multi-line call log we don't need. */
function reason(error) {
  const message = error instanceof Error ? error.message : String(error);
  const line = message.split('\n').find((l) => l.trim()) ?? 'failed';
  const flat = line.replace(/\s+/g, ' ').trim();
  return flat.length > 1500 ? `${flat.slice(0, 1500)}…` : flat;
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function assertEqual(actual, expected, what) {
  assert(actual === expected, `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

function readEnv(names) {
  const missing = names.filter((n) => !process.env[n]);
  if (missing.length) {
    console.log(`not ok - environment: missing ${missing.join(', ')}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  return Object.fromEntries(names.map((n) => [n, process.env[n]]));
}

// ---------------------------------------------------------------------------------------------
// Browser, contexts and what every context records (for the cross-scenario checks, 9)

const require = createRequire(import.meta.url);
const { chromium } = require(env.SB_PLAYWRIGHT);

/** One per scenario: which origins its pages may reach, and what its pages did. */
const records = [];
/** Response headers of the documents scenario 10 inspects, taken while their context is open. */
const documents = { chat: null, cache: null, embed: null };
/** Data one scenario leaves for a later one. */
const state = { conversationDay: null };

let browser;

/**
 * Runs one scenario in a fresh browser context. `hosts` are the (intercepted) origins its pages
 * may contact besides the gateway; `pages` maps their paths to HTML. On a failed check the open
 * pages are screenshotted as `<slug>-failure-N.png` for whoever reads the CI log.
 */
async function scenario({ slug, title, hosts = [], pages = {}, options = {}, allowFrameAncestorsError = false }, body) {
  const record = {
    title,
    allowed: new Set([GATEWAY_ORIGIN, ...hosts]),
    allowFrameAncestorsError,
    requests: [],
    cspErrors: [],
    pageErrors: [],
  };
  records.push(record);
  const failedBefore = failed;
  let context;
  try {
    context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
    context.setDefaultTimeout(WAIT);
    context.setDefaultNavigationTimeout(WAIT);
    // Every request of every page and frame, so check 9 can prove the pages load nothing from
    // elsewhere (no CDN, no font service, no analytics).
    context.on('request', (request) => record.requests.push(request));
    // Listeners go on at page creation, i.e. before any navigation, so nothing is missed.
    context.on('page', (page) => watchPage(page, record));
    for (const origin of hosts) await serveHost(context, origin, pages);
    await body(context, record);
  } catch (error) {
    fail(`${title}: stopped`, error);
  } finally {
    if (context && failed > failedBefore) await failureScreenshots(context, slug);
    await context?.close().catch(() => {});
  }
}

function watchPage(page, record) {
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content[- ]Security[- ]Policy/i.test(message.text())) {
      record.cspErrors.push(message.text());
    }
  });
  // Uncaught exceptions of the page and of its frames.
  page.on('pageerror', (error) => record.pageErrors.push(`${page.url()}: ${reason(error)}`));
}

/**
 * The host origins (drillquiz.test, evil.test) don't exist: Playwright answers for them. Unknown
 * paths get a 404 rather than a catch-all page, so a stray request (a favicon) stays harmless.
 */
async function serveHost(context, origin, pages) {
  await context.route(`${origin}/**`, (route) => {
    const body = pages[new URL(route.request().url()).pathname];
    return body === undefined
      ? route.fulfill({ status: 404, contentType: 'text/plain', body: 'not found' })
      : route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body });
  });
}

async function failureScreenshots(context, slug) {
  let n = 0;
  for (const page of context.pages()) {
    n += 1;
    await page.screenshot({ path: artifact(`${slug}-failure-${n}.png`) }).catch(() => {});
  }
}

function artifact(name) {
  return path.join(env.SB_ARTIFACTS, name);
}

/** Named screenshots are part of the expected output, so a failure to take one is a failed check. */
async function screenshot(page, name) {
  await check(`screenshot ${name}`, () => page.screenshot({ path: artifact(name) }));
}

// ---------------------------------------------------------------------------------------------
// Page helpers

function chatUrl({ token, lang, embed = false }) {
  const query = new URLSearchParams();
  if (token !== undefined) query.set('token', token);
  if (embed) query.set('embed', '1');
  if (lang) query.set('lang', lang);
  const q = query.toString();
  return `${GATEWAY}/chat${q ? `?${q}` : ''}`;
}

function escapeAttr(value) {
  return value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

/** A third-party page that embeds the chat in an iframe, as a customer site would. */
function embedHostPage(src) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Host site</title></head>
<body>
<h1>Host site</h1>
<iframe id="chat-frame" title="Chat" src="${escapeAttr(src)}" width="400" height="600"></iframe>
</body></html>`;
}

/** A third-party page that loads the widget with its one script tag. */
function widgetHostPage() {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DrillQuiz</title></head>
<body>
<h1>DrillQuiz</h1>
<p>Practice questions for your next exam. Ask the assistant if you are stuck.</p>
<script src="${escapeAttr(`${GATEWAY}/widget.js`)}" data-token="${escapeAttr(env.SB_TOKEN)}" data-lang="ja" async></script>
</body></html>`;
}

/** The scripts set `data-ready="true"` on <body> once their first load finished. */
async function waitReady(pageOrFrame) {
  await pageOrFrame.locator('body[data-ready="true"]').waitFor({ state: 'attached', timeout: WAIT });
}

/** Whitespace differences between streamed deltas and the rendered text don't matter. */
function normalize(text) {
  return (text ?? '').replace(/\s+/g, ' ').trim();
}

/** Status and text of the newest assistant message of the chat page. */
function lastAssistant(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('#messages article.message.assistant');
    const article = all[all.length - 1];
    return {
      count: all.length,
      status: article?.dataset.status ?? null,
      text: article?.querySelector('.content')?.textContent ?? '',
    };
  });
}

/**
 * Waits until the newest assistant message has one of `statuses` and, if given, the exact
 * (whitespace-normalized) `text` or any non-empty text. On timeout the error says what the
 * message looked like instead.
 */
async function waitForLastAssistant(page, { statuses, text = null, nonEmpty = false }) {
  try {
    await page.waitForFunction(
      ({ statuses, text, nonEmpty }) => {
        const all = document.querySelectorAll('#messages article.message.assistant');
        const article = all[all.length - 1];
        if (!article || !statuses.includes(article.dataset.status)) return false;
        const content = (article.querySelector('.content')?.textContent ?? '').replace(/\s+/g, ' ').trim();
        if (nonEmpty && !content) return false;
        return text === null || content === text;
      },
      { statuses, text, nonEmpty },
      { timeout: WAIT, polling: 30 },
    );
  } catch (error) {
    throw new Error(`${reason(error)}; newest assistant message: ${JSON.stringify(await lastAssistant(page))}`);
  }
}

/**
 * Waits until `container` shows the user's message and the answer as two separate messages.
 * The user text is a substring of the answer (`upstream reply to: <it>`), so the user's message
 * is the article that has the text but not the answer's prefix.
 */
async function waitForTranscript(page, container, userText, answerText) {
  try {
    await page.waitForFunction(
      ({ container, userText, answerText }) => {
        const texts = [...document.querySelectorAll(`${container} article.message`)].map((a) =>
          a.textContent.replace(/\s+/g, ' '),
        );
        const user = texts.some((t) => t.includes(userText) && !t.includes('upstream reply to:'));
        const answer = texts.some((t) => t.includes(answerText));
        return user && answer;
      },
      { container, userText, answerText },
      { timeout: WAIT, polling: 50 },
    );
  } catch (error) {
    const shown = await page
      .locator(`${container} article.message`)
      .allTextContents()
      .catch(() => []);
    throw new Error(`${reason(error)}; messages shown: ${JSON.stringify(shown.map(normalize))}`);
  }
}

/** Resolves to `{ ok, value }` / `{ ok: false, error }`, so a promise can be started early safely. */
function settle(promise) {
  return promise.then(
    (value) => ({ ok: true, value }),
    (error) => ({ ok: false, error }),
  );
}

/** The directives of a Content-Security-Policy header, by name. */
function parseCsp(header) {
  const directives = new Map();
  for (const part of (header ?? '').split(';')) {
    const [name, ...sources] = part.trim().split(/\s+/);
    if (name) directives.set(name.toLowerCase(), sources);
  }
  return directives;
}

/** The element focus is on, looking through open shadow roots (the widget may use one). */
function deepActiveElementId(page) {
  return page.evaluate(() => {
    let element = document.activeElement;
    while (element?.shadowRoot?.activeElement) element = element.shadowRoot.activeElement;
    return element?.id ?? null;
  });
}

// ---------------------------------------------------------------------------------------------
// Scenarios 1 and 2: the chat page in Korean, streaming, reload, stop and retry

async function chatScenarios() {
  await scenario({ slug: 'chat', title: '1-2. chat page' }, async (context) => {
    const page = await context.newPage();
    try {
      await chatInKorean(page);
    } catch (error) {
      fail('1. chat in Korean: stopped', error);
    }
    try {
      await stopAndRetry(page);
    } catch (error) {
      fail('2. stop and retry: stopped', error);
    }
  });
}

async function chatInKorean(page) {
  const response = await page.goto(chatUrl({ token: env.SB_TOKEN, lang: 'ko' }));
  documents.chat = await response?.allHeaders();
  await check('1. /chat answers 200', () => assertEqual(response?.status(), 200, 'status'));
  await check('1. <html lang="ko">', async () => assertEqual(await page.getAttribute('html', 'lang'), 'ko', 'lang'));
  await check('1. send button is in Korean', async () =>
    assertEqual(normalize(await page.locator('#send').textContent()), TEXT.koSend, '#send text'),
  );
  await check('1. title is in Korean', async () => {
    const title = await page.title();
    assert(title.includes(TEXT.koTitle), `title ${JSON.stringify(title)} lacks ${TEXT.koTitle}`);
  });
  if (!(await check('1. page becomes ready', () => waitReady(page)))) return;

  // Record every state the answer goes through, from inside the page: a MutationObserver sees
  // each DOM update as it happens, which polling from Node could miss or merge.
  await page.evaluate(() => {
    const samples = [];
    const sample = () => {
      const all = document.querySelectorAll('#messages article.message.assistant');
      const article = all[all.length - 1];
      if (article) {
        samples.push({
          status: article.dataset.status ?? null,
          text: article.querySelector('.content')?.textContent ?? '',
        });
      }
    };
    const observer = new MutationObserver(sample);
    observer.observe(document.getElementById('messages'), {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
    });
    window.__sbStream = { samples, observer };
  });

  state.conversationDay = new Date().toISOString().slice(0, 10);
  const expected = answerTo(KO_MESSAGE);
  await page.locator('#composer-input').fill(KO_MESSAGE);
  await page.locator('#composer-input').press('Enter');

  const completed = await check('1. answer completes with the full text', () =>
    waitForLastAssistant(page, { statuses: ['complete'], text: expected }),
  );
  const samples = await page.evaluate(() => {
    window.__sbStream.observer.disconnect();
    return window.__sbStream.samples;
  });
  await check('1. answer streams in growing prefixes', () => {
    // Distinct non-empty texts seen while streaming, in order.
    const seen = [];
    for (const s of samples) {
      const text = normalize(s.text);
      if (s.status === 'streaming' && text && text !== seen[seen.length - 1]) seen.push(text);
    }
    for (let i = 0; i < seen.length; i += 1) {
      assert(expected.startsWith(seen[i]), `streamed text ${JSON.stringify(seen[i])} is not a prefix of the answer`);
      assert(i === 0 || seen[i].length > seen[i - 1].length, `streamed text shrank: ${JSON.stringify(seen.slice(i - 1, i + 1))}`);
    }
    assert(seen.length >= 3, `only ${seen.length} distinct streaming states seen: ${JSON.stringify(seen)}`);
  });
  await screenshot(page, 'chat-ko.png');
  if (!completed) return;

  // The open conversation lives in the URL's hash, so a reload (or a shared link) reopens it.
  const hash = await page.evaluate(() => location.hash);
  await check('1. conversation is kept in location.hash', () => assert(hash.length > 1, `hash is ${JSON.stringify(hash)}`));
  await page.reload();
  if (!(await check('1. page is ready after reload', () => waitReady(page)))) return;
  await check('1. reload keeps the hash', async () => assertEqual(await page.evaluate(() => location.hash), hash, 'hash'));
  await check('1. reload reopens the conversation without a click', () =>
    waitForTranscript(page, '#messages', KO_MESSAGE, expected),
  );

  const entry = page.locator('#conversation-list button.conversation').filter({ hasText: KO_TITLE_FRAGMENT }).first();
  if (!(await check('1. conversation list has the conversation', () => entry.waitFor({ state: 'visible' })))) return;
  await entry.click();
  await check('1. opening it from the list shows both messages', () =>
    waitForTranscript(page, '#messages', KO_MESSAGE, expected),
  );
}

async function stopAndRetry(page) {
  const expected = answerTo(LONG_MESSAGE);
  await page.locator('#new-conversation').click();
  if (
    !(await check('2. new conversation starts empty', () =>
      page.locator('#messages article.message').first().waitFor({ state: 'detached' }),
    ))
  ) {
    return;
  }
  await page.locator('#composer-input').fill(LONG_MESSAGE);
  await page.locator('#composer-input').press('Enter');
  if (
    !(await check('2. first delta arrives', () =>
      waitForLastAssistant(page, { statuses: ['streaming'], nonEmpty: true }),
    ))
  ) {
    return;
  }
  await page.locator('#stop').click();

  const article = page.locator('#messages article.message.assistant').last();
  if (!(await check('2. stopped answer is marked partial', () => waitForLastAssistant(page, { statuses: ['partial'] })))) {
    return;
  }
  await check('2. partial answer is a strict prefix of the full answer', async () => {
    const text = normalize((await lastAssistant(page)).text);
    assert(text, 'the partial answer is empty');
    assert(expected.startsWith(text), `${JSON.stringify(text)} is not a prefix of the answer`);
    assert(text.length < expected.length, 'the "partial" answer is the whole answer: stop came too late or was ignored');
  });
  await check('2. partial answer shows a note', () => article.locator('.note').waitFor({ state: 'visible' }));
  const retry = article.locator('button.retry');
  const retryShown = await check('2. partial answer offers retry', () => retry.waitFor({ state: 'visible' }));
  await screenshot(page, 'chat-partial.png');
  if (!retryShown) return;

  await retry.click();
  await check('2. retry brings the complete answer', () =>
    waitForLastAssistant(page, { statuses: ['complete'], text: expected }),
  );
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: phone size

async function phone() {
  const options = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
  await scenario({ slug: 'phone', title: '3. phone', options }, async (context) => {
    const page = await context.newPage();
    await page.goto(chatUrl({ token: env.SB_TOKEN, lang: 'en' }));
    if (!(await check('3. page becomes ready', () => waitReady(page)))) return;
    const noOverflow = async () => {
      const { scrollWidth, innerWidth } = await page.evaluate(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        innerWidth: window.innerWidth,
      }));
      assert(scrollWidth <= innerWidth, `page is ${scrollWidth}px wide in a ${innerWidth}px window`);
    };
    await check('3. no horizontal overflow', noOverflow);
    await check('3. message box visible', () => page.locator('#composer-input').waitFor({ state: 'visible' }));
    await screenshot(page, 'chat-phone.png');
    if (!(await check('3. list toggle visible', () => page.locator('#toggle-list').waitFor({ state: 'visible' })))) return;
    await page.locator('#toggle-list').click();
    await check('3. toggle shows the conversation list', async () => {
      await page.locator('#conversations').waitFor({ state: 'visible' });
      assertEqual(await page.getAttribute('#toggle-list', 'aria-expanded'), 'true', '#toggle-list aria-expanded');
    });
    await check('3. no horizontal overflow with the list open', noOverflow);
    await screenshot(page, 'chat-phone-list.png');
  });
}

// ---------------------------------------------------------------------------------------------
// Scenarios 4 and 5: the chat framed by an allowed and by a foreign site

async function embedAllowed() {
  const src = chatUrl({ token: env.SB_TOKEN, lang: 'en', embed: true });
  const pages = { '/embed.html': embedHostPage(src) };
  await scenario({ slug: 'embed-allowed', title: '4. embed, allowed origin', hosts: [ALLOWED_ORIGIN], pages }, async (context) => {
    const page = await context.newPage();
    // The framed document's response, for its headers (scenario 10).
    const framed = settle(
      page.waitForResponse((r) => r.url().startsWith(`${GATEWAY}/chat?`) && r.request().resourceType() === 'document'),
    );
    await page.goto(`${ALLOWED_ORIGIN}/embed.html`);
    const frame = page.frameLocator('#chat-frame');
    await check('4. framed chat renders', () => frame.locator('#composer-input').waitFor({ state: 'visible' }));
    await check('4. framed chat is in embed mode', () => frame.locator('body.embed').waitFor({ state: 'attached' }));
    await check('4. framed chat becomes ready', () => waitReady(frame));
    const result = await framed;
    if (result.ok) documents.embed = await result.value.allHeaders();
    await screenshot(page, 'embed-allowed.png');
  });
}

async function embedForeign() {
  const src = chatUrl({ token: env.SB_TOKEN, lang: 'en', embed: true });
  const pages = { '/embed.html': embedHostPage(src) };
  const options = { hosts: [FOREIGN_ORIGIN], pages, allowFrameAncestorsError: true };
  await scenario({ slug: 'embed-refused', title: '5. embed, foreign origin', ...options }, async (context) => {
    const page = await context.newPage();
    // Chromium reports the refusal on the console; listen before navigating.
    const logged = settle(
      page.waitForEvent('console', { predicate: (m) => m.text().includes('frame-ancestors'), timeout: REFUSAL_WINDOW }),
    );
    // The gateway must have answered the frame: a request that never got through would also
    // leave the frame empty, and prove nothing about our headers.
    const framed = settle(
      page.waitForResponse((r) => r.url().startsWith(`${GATEWAY}/chat?`) && r.request().resourceType() === 'document', {
        timeout: REFUSAL_WINDOW,
      }),
    );
    await page.goto(`${FOREIGN_ORIGIN}/embed.html`);
    await check('5. gateway answers the framed request', async () => {
      const result = await framed;
      assert(result.ok, `no response from the gateway for the frame: ${result.ok || reason(result.error)}`);
    });
    await check('5. browser refuses to render the chat', async () => {
      const rendered = await page
        .frameLocator('#chat-frame')
        .locator('#composer-input')
        .waitFor({ state: 'visible', timeout: REFUSAL_WINDOW })
        .then(
          () => true,
          () => false,
        );
      const child = page.frames().find((f) => f !== page.mainFrame());
      assert(!rendered, `the chat rendered inside ${FOREIGN_ORIGIN} (frame at ${child?.url()})`);
    });
    await check('5. console reports the frame-ancestors refusal', async () => {
      const result = await logged;
      assert(result.ok, `no console message mentioning frame-ancestors within ${REFUSAL_WINDOW} ms`);
    });
    await screenshot(page, 'embed-refused.png');
  });
}

// ---------------------------------------------------------------------------------------------
// Scenario 6: the widget on a customer page

async function widget() {
  const pages = { '/widget.html': widgetHostPage() };
  await scenario({ slug: 'widget', title: '6. widget', hosts: [ALLOWED_ORIGIN], pages }, async (context) => {
    const page = await context.newPage();
    await page.goto(`${ALLOWED_ORIGIN}/widget.html`);
    const launcher = page.locator('#switchboard-launcher');
    if (!(await check('6. launcher appears', () => launcher.waitFor({ state: 'visible' })))) return;
    await check('6. launcher speaks Japanese', async () => {
      // The open text may be the button's text or, for an icon button, its accessible name.
      const text = normalize(await launcher.textContent());
      const label = (await launcher.getAttribute('aria-label')) ?? '';
      assert(
        text.includes(TEXT.jaOpen) || label === TEXT.jaOpen,
        `launcher text ${JSON.stringify(text)}, aria-label ${JSON.stringify(label)}; expected ${TEXT.jaOpen}`,
      );
    });
    await launcher.click();
    if (!(await check('6. panel opens', () => page.locator('#switchboard-panel').waitFor({ state: 'visible' })))) return;
    const frame = page.frameLocator('#switchboard-frame');
    await check('6. panel loads the chat in Japanese', async () => {
      await frame.locator('html[lang="ja"]').waitFor({ state: 'attached' });
      await frame.locator('body.embed').waitFor({ state: 'attached' });
      await waitReady(frame);
    });
    await screenshot(page, 'widget.png');
    await page.keyboard.press('Escape');
    await check('6. Escape closes the panel', () => page.locator('#switchboard-panel').waitFor({ state: 'hidden' }));
    await check('6. focus returns to the launcher', async () => {
      try {
        await page.waitForFunction(() => {
          // Look through open shadow roots: the widget may keep its DOM in one.
          let element = document.activeElement;
          while (element?.shadowRoot?.activeElement) element = element.shadowRoot.activeElement;
          return element?.id === 'switchboard-launcher';
        }, null, { timeout: WAIT, polling: 50 });
      } catch (error) {
        throw new Error(`${reason(error)}; focus is on #${await deepActiveElementId(page)}`);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Scenario 7: the history page

async function history() {
  // The history page's language follows the browser; pin it so the no-results text is known.
  const options = { locale: 'en-US' };
  await scenario({ slug: 'cache', title: '7. history page', options }, async (context, record) => {
    const page = await context.newPage();
    const day = state.conversationDay ?? new Date().toISOString().slice(0, 10);
    const query = new URLSearchParams({ api_key: env.SB_API_KEY, system_id: SYSTEM_ID, from_date: day, to_date: day });
    const response = await page.goto(`${GATEWAY}/cache?${query}`);
    documents.cache = await response?.allHeaders();
    if (!(await check('7. page becomes ready', () => waitReady(page)))) return;

    // The key must leave the address bar at once: it would otherwise stay in history, bookmarks
    // and screenshots.
    await check('7. API key is gone from the URL', async () => {
      const href = await page.evaluate(() => location.href);
      for (const url of [page.url(), href]) {
        assert(!url.includes('api_key'), `URL still has api_key: ${url}`);
        assert(!url.includes(env.SB_API_KEY) && !url.includes(encodeURIComponent(env.SB_API_KEY)), `URL still has the key: ${url}`);
      }
    });

    const row = page.locator('#results tbody tr').filter({ hasText: KO_TITLE_FRAGMENT }).first();
    if (!(await check('7. results list the Korean conversation', () => row.waitFor({ state: 'visible' })))) return;
    if (USER_ID) {
      // No user filter was given: the tenant-wide listing must say whose conversation it is.
      await check('7. the row names its user', async () => {
        const text = normalize(await row.textContent());
        assert(text.includes(USER_ID), `row ${JSON.stringify(text)} lacks ${USER_ID}`);
      });
    }
    await row.locator('button.open').click();
    await check('7. transcript shows the question and the answer', () =>
      waitForTranscript(page, '#transcript', KO_MESSAGE, answerTo(KO_MESSAGE)),
    );
    await screenshot(page, 'cache.png');

    await page.locator('#from-date').fill('2001-01-01');
    await page.locator('#to-date').fill('2001-12-31');
    await page.locator('#search').click();
    await check('7. a range with no conversations shows no rows', async () => {
      const status = page.locator('#results-status');
      try {
        await page.waitForFunction(
          (text) => document.getElementById('results-status')?.textContent.includes(text),
          TEXT.enNoResults,
          { timeout: WAIT, polling: 50 },
        );
      } catch (error) {
        throw new Error(`${reason(error)}; #results-status says ${JSON.stringify(normalize(await status.textContent()))}`);
      }
      assertEqual(await page.locator('#results tbody tr').count(), 0, 'rows');
    });

    await check('7. every history API call sends the key in X-API-Key, never in the URL', async () => {
      const calls = record.requests.filter((r) => new URL(r.url()).pathname.startsWith('/v1/cache/'));
      assert(calls.length > 0, 'the page made no /v1/cache/ request');
      const problems = [];
      for (const request of calls) {
        const url = request.url();
        if (url.includes(env.SB_API_KEY) || url.includes('api_key')) problems.push(`key in URL: ${url}`);
        const key = (await request.allHeaders())['x-api-key'];
        if (key !== env.SB_API_KEY) problems.push(`${key ? 'wrong' : 'no'} x-api-key: ${request.method()} ${url}`);
      }
      assert(problems.length === 0, problems.join('; '));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Scenario 8: bad or missing tokens get the error page, in the right language

async function badTokens() {
  const cases = [
    { slug: 'error-es', url: chatUrl({ token: 'not-a-token', lang: 'es' }), locale: 'en-US', lang: 'es', text: TEXT.esTokenRefused, what: 'malformed token' },
    { slug: 'error-ja', url: chatUrl({ token: env.SB_EXPIRED_TOKEN, lang: 'ja' }), locale: 'en-US', lang: 'ja', text: TEXT.jaTokenRefused, what: 'expired token' },
    // No `lang`: the language comes from the browser's Accept-Language.
    { slug: 'error-ko', url: chatUrl({}), locale: 'ko-KR', lang: 'ko', text: TEXT.koTokenMissing, what: 'no token' },
  ];
  for (const c of cases) {
    await scenario({ slug: c.slug, title: `8. ${c.what}`, options: { locale: c.locale } }, async (context) => {
      const page = await context.newPage();
      const response = await page.goto(c.url);
      await check(`8. ${c.what}: 401`, () => assertEqual(response?.status(), 401, 'status'));
      await check(`8. ${c.what}: error page in ${c.lang}`, async () => {
        assertEqual(await page.getAttribute('html', 'lang'), c.lang, 'lang');
        assertEqual(normalize(await page.locator('#error-message').textContent()), c.text, '#error-message');
      });
      await screenshot(page, `${c.slug}.png`);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Scenario 9: across every scenario — same-host requests only, no CSP violation, no exception

async function crossScenarioChecks() {
  await check('9. pages only contact the gateway (and the host page)', () => {
    // A Set: a page loaded three times should not list its stray request three times.
    const offending = new Set();
    for (const record of records) {
      for (const request of record.requests) {
        const url = request.url();
        if (!/^https?:/i.test(url)) continue;
        if (!record.allowed.has(new URL(url).origin)) offending.add(`[${record.title}] ${url}`);
      }
    }
    assert(offending.size === 0, [...offending].join(', '));
  });
  await check('9. no Content Security Policy violations', () => {
    const violations = new Set(
      records.flatMap((record) =>
        record.cspErrors
          .filter((text) => !(record.allowFrameAncestorsError && text.includes('frame-ancestors')))
          .map((text) => `[${record.title}] ${text}`),
      ),
    );
    assert(violations.size === 0, [...violations].join(' | '));
  });
  await check('9. no uncaught exceptions', () => {
    const errors = records.flatMap((record) => record.pageErrors.map((text) => `[${record.title}] ${text}`));
    assert(errors.length === 0, errors.join(' | '));
  });
}

// ---------------------------------------------------------------------------------------------
// Scenario 10: security headers of the pages

async function headerChecks() {
  const headers = (recorded, which) => {
    assert(recorded, `no response recorded for ${which} (its scenario failed early)`);
    return recorded;
  };
  const strictScripts = (csp) => {
    assert(csp, 'no content-security-policy header');
    const directives = parseCsp(csp);
    const scriptSrc = directives.get('script-src') ?? directives.get('default-src') ?? [];
    assert(!scriptSrc.includes("'unsafe-inline'"), `script-src allows 'unsafe-inline': ${csp}`);
    assert(!scriptSrc.includes("'unsafe-eval'"), `script-src allows 'unsafe-eval': ${csp}`);
    return directives;
  };
  for (const which of ['chat', 'cache']) {
    await check(`10. /${which}: strict CSP and no referrer`, async () => {
      const h = headers(documents[which], `/${which}`);
      const directives = strictScripts(h['content-security-policy']);
      assertEqual(h['referrer-policy'], 'no-referrer', 'referrer-policy');
      if (which === 'cache') {
        const ancestors = directives.get('frame-ancestors') ?? [];
        assertEqual(ancestors.join(' '), "'none'", 'cache frame-ancestors');
      }
    });
  }
  await check('10. /chat embed: frame-ancestors is the allowed origin', async () => {
    const h = headers(documents.embed, '/chat?embed=1');
    const ancestors = strictScripts(h['content-security-policy']).get('frame-ancestors') ?? [];
    assert(ancestors.includes(ALLOWED_ORIGIN), `frame-ancestors ${JSON.stringify(ancestors)} lacks ${ALLOWED_ORIGIN}`);
    assert(!ancestors.includes('*') && !ancestors.includes(FOREIGN_ORIGIN), `frame-ancestors too wide: ${ancestors.join(' ')}`);
  });
}

// ---------------------------------------------------------------------------------------------

async function main() {
  mkdirSync(env.SB_ARTIFACTS, { recursive: true });
  const watchdog = setTimeout(() => {
    fail('watchdog', new Error(`the run took longer than ${WATCHDOG / 1000} s`));
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(1);
  }, WATCHDOG);
  watchdog.unref();

  try {
    browser = await chromium.launch({ executablePath: env.SB_CHROMIUM, args: BROWSER_ARGS });
  } catch (error) {
    fail('browser starts', error);
  }
  if (browser) {
    try {
      await chatScenarios();
      await phone();
      await embedAllowed();
      await embedForeign();
      await widget();
      await history();
      await badTokens();
      await crossScenarioChecks();
      await headerChecks();
    } finally {
      await browser.close().catch(() => {});
    }
  }
  clearTimeout(watchdog);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
}

await main();
