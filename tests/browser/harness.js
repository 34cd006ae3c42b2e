// Shared helpers for the browser tests: start a Switchyard server, launch Debian's Chromium with fake
// camera and microphone, join participants through the real web client, and read their WebRTC stats.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function serverBinary() {
  const bin = process.env.SWITCHYARD_BIN || path.join(ROOT, 'target', 'debug', 'switchyard');
  if (!existsSync(bin)) throw new Error(`${bin} not found: build it with cargo build --bin switchyard`);
  return bin;
}

/** Starts `switchyard` on free ports; resolves to { url, stop, stats }. */
export async function startServer(extraArgs = []) {
  const proc = spawn(serverBinary(), ['--http', '127.0.0.1:0', '--workers', '2', '--turn-port', '0', ...extraArgs], {
    stdio: ['ignore', 'pipe', process.env.SWITCHYARD_LOG ? 'inherit' : 'ignore'],
  });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('switchyard did not start')), 30000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/open (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    });
    proc.on('exit', (code) => reject(new Error(`switchyard exited with ${code}`)));
  });
  return {
    url,
    async stats() {
      const r = await fetch(`${url}/api/stats`);
      return r.json();
    },
    async rooms() {
      const r = await fetch(`${url}/api/rooms`);
      return r.json();
    },
    /** Engine transports across workers (0 when no room uses the SFU). */
    async transports() {
      const r = await fetch(`${url}/api/stats`);
      return (await r.json()).workers.reduce((n, w) => n + w.transports, 0);
    },
    stop() {
      proc.kill('SIGTERM');
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--autoplay-policy=no-user-gesture-required',
      // A page fulfilled by the test (SWITCHYARD_WEB) has no address space of its own, and Chromium
      // would then refuse its WebSocket to the loopback server.
      ...(process.env.SWITCHYARD_WEB ? ['--disable-features=LocalNetworkAccessChecks'] : []),
    ],
  });
}

/**
 * Opens the web client in its own browser context and joins `room` as `name`. `options.query` adds
 * URL options (e.g. `{ video: '320x180', fps: '15' }`); `options.viewport` the window size.
 */
export async function join(browser, url, room, name, options = {}) {
  const context = await browser.newContext({ viewport: options.viewport || { width: 1280, height: 720 } });
  await context.grantPermissions(['camera', 'microphone']);
  if (process.env.SWITCHYARD_WEB) await serveWebFrom(context, url, process.env.SWITCHYARD_WEB);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  const query = new URLSearchParams({ room, name, autojoin: '1', ...(options.query || {}) });
  await page.goto(`${url}/?${query}`);
  await page.waitForFunction(() => window.switchyard && window.switchyard.state === 'joined', null, { timeout: 20000 });
  const id = await page.evaluate(() => window.switchyard.participantId);
  return { page, context, name, id };
}

/**
 * With SWITCHYARD_WEB=control/web, pages load the web client's files from that directory instead of
 * the copy compiled into the server binary (web-client work without rebuilding the server).
 */
async function serveWebFrom(context, url, dir) {
  const types = { '/': 'text/html', '/app.js': 'text/javascript', '/style.css': 'text/css' };
  const files = { '/': 'index.html', '/app.js': 'app.js', '/style.css': 'style.css' };
  await context.route(`${url}/**`, async (route) => {
    const p = new URL(route.request().url()).pathname;
    if (!files[p]) return route.continue();
    const body = await readFile(path.resolve(ROOT, dir, files[p]));
    return route.fulfill({ status: 200, contentType: `${types[p]}; charset=utf-8`, body });
  });
}

export async function stats(p) {
  return p.page.evaluate(() => window.switchyard.stats());
}

/** Polls `fn` until it returns a truthy value or `timeout` ms pass; returns the last value. */
export async function until(fn, timeout, interval = 500) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last || Date.now() > deadline) return last;
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** True when `p` decodes video frames and receives audio from every id in `others`, rising since `base`. */
export async function receivesFrom(p, others, base = {}) {
  const s = await stats(p);
  return others.every((id) => {
    const now = s.perParticipant[id];
    const before = base[id] || { framesDecoded: 0, audioBytes: 0 };
    return now && now.framesDecoded > before.framesDecoded + 5 && now.audioBytes > before.audioBytes;
  });
}
