// Drives a real VS Code (code-server) in headless Chromium: opens a Python file, types, waits for
// ghost text from the Mercury extension, accepts it with Tab, saves, and opens Mercury's stats.
// Usage: node ghost_text.js CONFIG.json   (keys: url, file, typeLines, profileDir, resultPath,
// screenshotDir, timeoutMs). Needs playwright-core on NODE_PATH and Debian's /usr/bin/chromium.
// Writes RESULT.json: {ghost: [lines], status, latencyStatus, stats, toggledStatus}; exits 0 when every step was reached.
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const result = { steps: [] };
const t0 = Date.now();
function step(name, detail) {
  const entry = { t: (Date.now() - t0) / 1000, name, ...(detail === undefined ? {} : { detail }) };
  result.steps.push(entry);
  console.log(JSON.stringify(entry));
}

// Ghost text as shown: the inline part on the cursor line, then any lines shown below it.
function readGhost() {
  const clean = (s) => s.replace(/\u00a0/g, ' ');
  const inline = [...document.querySelectorAll('.monaco-editor .ghost-text-decoration')];
  if (inline.length === 0) return null;
  const lines = [inline.map((e) => clean(e.textContent)).join('')];
  // Lines after the first are drawn in a view zone, one .view-line each, ordered by position.
  const below = [...document.querySelectorAll('.monaco-editor .suggest-preview-text .view-line')];
  below.sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top));
  for (const line of below) lines.push(clean(line.textContent));
  return lines;
}

// The Mercury status bar item's label, once it shows `want.icon` and matches `want.text` (a
// regular expression), else null.
function mercuryStatus(want) {
  const item = [...document.querySelectorAll('.statusbar-item')].find((e) => e.textContent.includes('Mercury'));
  if (!item || (want.icon && !item.querySelector(`.codicon-${want.icon}`))) return null;
  const label = item.getAttribute('aria-label') || item.textContent.trim();
  return !want.text || new RegExp(want.text).test(label) ? label : null;
}

async function poll(page, fn, what, timeoutMs, arg = {}) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const value = await page.evaluate(fn, arg);
    if (value) return value;
    await page.waitForTimeout(200);
  }
  throw new Error(`timed out waiting for ${what}`);
}

// Ghost text that stayed the same for half a second, so Tab accepts what was read.
async function stableGhost(page, timeoutMs) {
  let ghost = await poll(page, readGhost, 'ghost text', timeoutMs);
  for (;;) {
    await page.waitForTimeout(500);
    const again = await poll(page, readGhost, 'ghost text', timeoutMs);
    if (JSON.stringify(again) === JSON.stringify(ghost)) return ghost;
    ghost = again;
  }
}

async function runCommand(page, title) {
  await page.keyboard.press('F1');
  await page.waitForSelector('.quick-input-widget input', { timeout: 10000 });
  await page.keyboard.type(title);
  await page.waitForTimeout(500);
  await page.keyboard.press('Enter');
}

async function drive(page, timeoutMs) {
  await page.goto(config.url);
  await page.waitForSelector('.monaco-workbench', { timeout: timeoutMs });
  step('workbench loaded');

  result.status = await poll(page, mercuryStatus, 'the Mercury status bar item', timeoutMs);
  step('extension active', result.status);

  await page.keyboard.press('Control+P');
  await page.waitForSelector('.quick-input-widget input', { timeout: 10000 });
  await page.keyboard.type(config.file);
  await page.waitForTimeout(1000);
  await page.keyboard.press('Enter');
  await page.waitForSelector('.monaco-editor .view-lines', { timeout: timeoutMs });
  step('editor open');

  // The status bar turns to the sparkle icon once the language server reports a ready engine.
  result.status = await poll(page, mercuryStatus, 'the engine to be ready (status bar)', timeoutMs, { icon: 'sparkle' });
  step('engine ready', result.status);

  await page.click('.monaco-editor .view-lines');
  await page.keyboard.press('Control+End');
  for (const [i, line] of config.typeLines.entries()) {
    if (i > 0) await page.keyboard.press('Enter');
    await page.keyboard.type(line, { delay: 30 });
  }
  step('typed');
  result.ghost = await stableGhost(page, timeoutMs);
  step('ghost text shown', result.ghost);
  await page.screenshot({ path: path.join(config.screenshotDir, 'ghost.png') });

  await page.keyboard.press('Tab');
  await page.waitForFunction(() => !document.querySelector('.monaco-editor .ghost-text-decoration'), null, { timeout: 10000 });
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+S');
  await page.waitForTimeout(1500);
  step('accepted and saved');
  // The status bar polls mercury/stats every few seconds and then shows the last latency.
  result.latencyStatus = await poll(page, mercuryStatus, 'the latency in the status bar', 20000, { icon: 'sparkle', text: '\\d+ ms' });
  step('latency shown', result.latencyStatus);

  await runCommand(page, 'Mercury: Show Stats');
  result.stats = await poll(page, () => {
    const tab = [...document.querySelectorAll('.tab')].find((e) => e.textContent.includes('Mercury stats'));
    const editor = tab && document.querySelector('.editor-group-container.active .monaco-editor .view-lines');
    return editor ? editor.textContent.replace(/\u00a0/g, ' ') : null;
  }, 'the stats document', 20000);
  step('stats shown');

  // Toggle goes extension -> setting -> didChangeConfiguration -> server -> mercury/stats -> status bar.
  await runCommand(page, 'Mercury: Toggle Completions');
  result.toggledStatus = await poll(page, mercuryStatus, 'the status bar to show completions off', 20000, { icon: 'circle-slash' });
  step('toggled off', result.toggledStatus);
}

(async () => {
  const timeoutMs = config.timeoutMs || 120000;
  let context;
  try {
    context = await chromium.launchPersistentContext(config.profileDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 800 },
    });
    const page = context.pages()[0] || (await context.newPage());
    await drive(page, timeoutMs);
    result.ok = true;
  } catch (error) {
    result.error = String((error && error.stack) || error);
    step('failed', result.error);
    const page = context && context.pages()[0];
    if (page) await page.screenshot({ path: path.join(config.screenshotDir, 'failure.png') }).catch(() => {});
  } finally {
    fs.writeFileSync(config.resultPath, JSON.stringify(result, null, 2));
    if (context) await context.close().catch(() => {});
  }
  process.exit(result.ok ? 0 : 1);
})();
