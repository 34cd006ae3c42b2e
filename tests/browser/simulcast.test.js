// Simulcast, bandwidth adaptation and the active speaker in real headless Chromium.
//
// A publisher sends its 1280x720 camera as three simulcast layers through the SFU; two subscribers
// receive it. Capping one subscriber's downlink in the engine (the admin API's send-cap, a test aid)
// must move that subscriber to a lower layer while its video keeps decoding and the other one keeps
// the high layer; lifting the cap must bring the high layer back. Then whoever talks (a synthetic
// microphone per page, ?fakeAudio=1) must become the active speaker on every page, in the SFU (the
// server detects it from the audio-level header extension) and in a P2P mesh (each page detects it).
//
// The machine may have two cores shared with other work: every wait polls a condition with a
// generous deadline, and nothing asserts on speed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, launchBrowser, startServer, stats, until } from './harness.js';

const LOOPBACK = ['--allowed-candidate-net', '127.0.0.0/8'];

const inbound = (p) => p.page.evaluate(() => window.switchyard.inboundVideo());
const speakerOf = (p) => p.page.evaluate(() => window.switchyard.activeSpeaker());
const highlighted = (p) => p.page.evaluate(() => [...document.querySelectorAll('.tile.speaking')].map((t) => t.dataset.participant));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The video `p` receives from `from`: { frameHeight, frameWidth, framesDecoded } (zeros when none). */
async function videoFrom(p, from) {
  const v = (await inbound(p))[from];
  return v || { frameHeight: 0, frameWidth: 0, framesDecoded: 0 };
}

/**
 * Waits until `p` receives `from`'s video at a height for which `ok(height)` holds on `polls`
 * consecutive polls (one a second), with frames being decoded throughout; returns the last sample or
 * null after `timeout` ms.
 */
async function settlesAt(p, from, ok, timeout, polls = 3) {
  const deadline = Date.now() + timeout;
  let streak = 0;
  let prev = await videoFrom(p, from);
  while (Date.now() < deadline) {
    await sleep(1000);
    const v = await videoFrom(p, from);
    streak = v.framesDecoded > prev.framesDecoded && ok(v.frameHeight) ? streak + 1 : 0;
    prev = v;
    if (streak >= polls) return v;
  }
  return null;
}

/** What a publisher sends per simulcast layer, for the log: `q:320x180 h:640x360 f:1280x720 (cpu)`. */
function layersSent(p) {
  return p.page.evaluate(async () => {
    const r = await window.switchyard.publishPc.getStats();
    const out = [];
    r.forEach((s) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      const why = s.qualityLimitationReason && s.qualityLimitationReason !== 'none' ? ` (${s.qualityLimitationReason})` : '';
      out.push(`${s.rid || '-'}:${s.frameWidth || 0}x${s.frameHeight || 0}${why}`);
    });
    return out.sort().join(' ');
  });
}

/** Frames `p` decodes from `from` over `ms` milliseconds. */
async function framesOver(p, from, ms) {
  const a = await videoFrom(p, from);
  await sleep(ms);
  const b = await videoFrom(p, from);
  return b.framesDecoded - a.framesDecoded;
}

async function sendCap(server, room, id, kbps) {
  const r = await fetch(`${server.url}/api/rooms/${room}/participants/${id}/send-cap`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ kbps }),
  });
  const body = await r.text();
  assert.equal(r.status, 200, `send-cap ${kbps} kbps for ${id}: ${r.status} ${body}`);
  return JSON.parse(body);
}

/** Engine figures summed over workers: { counters, drops }. */
async function engine(server) {
  const s = await server.stats();
  const drops = {};
  for (const w of s.workers) for (const [k, v] of Object.entries(w.drops || {})) drops[k] = (drops[k] || 0) + v;
  return { counters: s.totals, drops };
}

test('a capped subscriber gets a lower simulcast layer and the high one back when the cap goes', { timeout: 480000 }, async () => {
  const server = await startServer(['--sfu-only']);
  const browser = await launchBrowser();
  try {
    const room = 'layers';
    const publisher = await join(browser, server.url, room, 'Publisher', { query: { video: '1280x720', fps: '30' } });
    // Subscribers send audio only (less for two cores to encode) and have a tall window, so the
    // publisher's tile is shown about 720 pixels high and they ask for the full-size layer.
    const tall = { width: 1600, height: 2600 };
    const a = await join(browser, server.url, room, 'Ada', { query: { video: 'none' }, viewport: tall });
    const b = await join(browser, server.url, room, 'Grace', { query: { video: 'none' }, viewport: tall });
    const mode = await a.page.evaluate(() => window.switchyard.mode);
    assert.equal(mode, 'sfu');

    // The publisher offered three layers.
    const offered = await publisher.page.evaluate(() => window.switchyard.publishPc.localDescription.sdp);
    assert.match(offered, /a=simulcast:send q;h;f/, 'the camera is offered as three simulcast layers, lowest first');

    // Both decode, at the same (highest available) layer; wait for the browser's and the server's
    // bandwidth estimates to ramp up.
    const nonzero = (h) => h > 0;
    for (const p of [a, b]) {
      const v = await settlesAt(p, publisher.id, nonzero, 90000);
      assert.ok(v, `${p.name} decodes the publisher's video: ${JSON.stringify(await inbound(p))}`);
    }
    // Settled when both receive the highest height seen so far, it is above the lowest layer and
    // it has not grown for 10 s (the estimates climb a layer at a time).
    let high = 0;
    let since = Date.now();
    await until(async () => {
      const [va, vb] = [await videoFrom(a, publisher.id), await videoFrom(b, publisher.id)];
      const top = Math.max(va.frameHeight, vb.frameHeight);
      if (top > high) {
        high = top;
        since = Date.now();
      }
      return va.frameHeight === high && vb.frameHeight === high && high >= 270 && Date.now() - since >= 10000;
    }, 150000, 2000);
    const start = [await videoFrom(a, publisher.id), await videoFrom(b, publisher.id)];
    console.log(`uncapped: Ada ${start[0].frameWidth}x${start[0].frameHeight}, Grace ${start[1].frameWidth}x${start[1].frameHeight}; publisher sends ${await layersSent(publisher)}`);
    assert.ok(start[0].frameHeight >= 270 && start[1].frameHeight === start[0].frameHeight,
      `both subscribers receive a layer above the lowest: ${JSON.stringify(start)}`);
    high = start[0].frameHeight;
    const before = await engine(server);

    // Cap Grace's downlink: she drops to a lower layer and keeps decoding; Ada keeps the high one.
    const capped = await sendCap(server, room, b.id, 400);
    assert.equal(capped.kbps, 400);
    const low = await settlesAt(b, publisher.id, (h) => h > 0 && h < high, 90000);
    assert.ok(low, `Grace moves below ${high}p under a 400 kbit/s cap: ${JSON.stringify(await videoFrom(b, publisher.id))}`);
    // The first lower height can be a step on the way (the middle layer, still too big for the cap):
    // wait until her height has stayed put for 6 s below the high one, then count frames.
    let settled = low.frameHeight;
    let steadySince = Date.now();
    const steady = await until(async () => {
      const v = await videoFrom(b, publisher.id);
      if (v.frameHeight !== settled) {
        settled = v.frameHeight;
        steadySince = Date.now();
      }
      return settled > 0 && settled < high && Date.now() - steadySince >= 6000;
    }, 90000, 1000);
    assert.ok(steady, `Grace settles on one layer below ${high}p under the cap (last height ${settled})`);
    console.log(`capped: Grace ${low.frameWidth}x${low.frameHeight} first, settled at height ${settled}`);
    const lowFrames = await framesOver(b, publisher.id, 5000);
    assert.ok(lowFrames > 5, `Grace keeps decoding on the lower layer (${lowFrames} frames in 5 s)`);
    const stillLow = await videoFrom(b, publisher.id);
    assert.ok(stillLow.frameHeight < high, `Grace stays below ${high}p while capped: ${JSON.stringify(stillLow)}`);
    const ada = await settlesAt(a, publisher.id, (h) => h >= high, 30000);
    assert.ok(ada, `Ada keeps ${high}p: ${JSON.stringify(await videoFrom(a, publisher.id))}`);
    const during = await engine(server);
    const policed = (during.drops.send_cap || 0) - (before.drops.send_cap || 0);
    console.log(`engine while capped: ${policed} packets dropped by the cap, ${during.counters.layer_switches} layer switches`);
    assert.ok(policed > 0, `the engine polices Grace's downlink: ${JSON.stringify(during.drops)}`);

    // Lift the cap: Grace returns to the high layer.
    await sendCap(server, room, b.id, 0);
    const back = await settlesAt(b, publisher.id, (h) => h >= high, 120000);
    assert.ok(back, `Grace is back at ${high}p after the cap is lifted: ${JSON.stringify(await videoFrom(b, publisher.id))}`);
    console.log(`lifted: Grace ${back.frameWidth}x${back.frameHeight}`);
    const after = await engine(server);
    assert.ok(after.counters.rtp_forwarded > before.counters.rtp_forwarded, 'the media went through the engine');
  } finally {
    await browser.close();
    server.stop();
  }
});

/** Joins three talkers with synthetic microphones and waits until each hears both others. */
async function talkers(browser, server, room, query = {}) {
  const people = [];
  for (const name of ['Ada', 'Grace', 'Linus']) {
    people.push(await join(browser, server.url, room, name, { query: { fakeAudio: '1', video: 'none', ...query } }));
  }
  for (const p of people) {
    const others = people.filter((q) => q !== p).map((q) => q.id);
    const ok = await until(async () => {
      const s = await stats(p);
      return others.every((id) => s.perParticipant[id] && s.perParticipant[id].audioBytes > 0);
    }, 60000);
    assert.ok(ok, `${p.name} receives audio from ${others.join(', ')}: ${JSON.stringify(await stats(p))}`);
  }
  return people;
}

/** Makes `speaker` the only one talking and waits until every page shows them as the active speaker. */
async function talks(people, speaker) {
  for (const p of people) {
    const ok = await p.page.evaluate((on) => window.switchyard.setTalking(on), p === speaker);
    assert.ok(ok, `${p.name}'s page has a synthetic microphone`);
  }
  for (const p of people) {
    const shown = await until(async () => (await speakerOf(p)) === speaker.id, 30000);
    assert.ok(shown, `${p.name} shows ${speaker.name} (${speaker.id}) as the active speaker, not ${await speakerOf(p)}`);
    assert.deepEqual(await highlighted(p), [speaker.id], `${p.name} highlights ${speaker.name}'s tile only`);
  }
}

test('the active speaker follows whoever talks, announced by the SFU', { timeout: 240000 }, async () => {
  const server = await startServer(['--sfu-only']);
  const browser = await launchBrowser();
  try {
    const people = await talkers(browser, server, 'speakers');
    assert.equal(await people[0].page.evaluate(() => window.switchyard.mode), 'sfu');
    await talks(people, people[0]);
    await talks(people, people[1]);
    await talks(people, people[2]);
  } finally {
    await browser.close();
    server.stop();
  }
});

test('the active speaker follows whoever talks in a P2P mesh, detected by each page', { timeout: 240000 }, async () => {
  const server = await startServer(LOOPBACK);
  const browser = await launchBrowser();
  try {
    const people = await talkers(browser, server, 'mesh-speakers');
    assert.equal(await people[0].page.evaluate(() => window.switchyard.mode), 'p2p');
    assert.equal(await server.transports(), 0, 'no media through the engine');
    await talks(people, people[1]);
    await talks(people, people[0]);
  } finally {
    await browser.close();
    server.stop();
  }
});
