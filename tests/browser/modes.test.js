// Hybrid rooms in real headless Chromium: C2C and P2P mesh rooms carry no media through the engine,
// and a room that grows past --p2p-max switches to the SFU and back without anyone reloading.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, launchBrowser, receivesFrom, startServer, stats, until } from './harness.js';

// Small video keeps seven pages (each encoding once per peer in the mesh) within two cores.
const SMALL = { video: '320x180', fps: '15' };
// Media stays on loopback: the server drops relayed candidates from any other network.
const LOOPBACK = ['--allowed-candidate-net', '127.0.0.0/8'];

async function joinAll(browser, url, room, names) {
  const people = [];
  for (const name of names) people.push(await join(browser, url, room, name, { query: SMALL }));
  return people;
}

const othersOf = (people, p) => people.filter((q) => q !== p).map((q) => q.id);

/** Waits until each of `people` decodes video and audio from every other one. */
async function everyoneReceives(people, timeout = 60000) {
  for (const p of people) {
    const others = othersOf(people, p);
    const ok = await until(() => receivesFrom(p, others), timeout);
    assert.ok(ok, `${p.name} decodes from ${others.join(', ')}: ${JSON.stringify(await stats(p))}`);
  }
}

const view = (p) => p.page.evaluate(() => ({
  mode: window.switchyard.mode,
  topology: window.switchyard.topology,
  peers: window.switchyard.peers(),
  publish: !!window.switchyard.publishPc,
  subscribe: !!window.switchyard.subscribePc,
}));

test('two people run C2C: browser to browser, nothing through the engine', { timeout: 120000 }, async () => {
  const server = await startServer([...LOOPBACK, '--turn-url', 'turn:127.0.0.1:9?transport=udp']);
  const browser = await launchBrowser();
  try {
    const before = (await server.stats()).totals;
    const people = await joinAll(browser, server.url, 'duo', ['Ada', 'Grace']);
    await everyoneReceives(people);
    const after = (await server.stats()).totals;
    assert.equal(after.rtp_forwarded, before.rtp_forwarded, 'the engine forwarded no RTP');
    assert.equal(await server.transports(), 0, 'no engine transports');
    for (const p of people) {
      const v = await view(p);
      assert.equal(v.mode, 'c2c');
      assert.equal(v.topology, 'mesh');
      assert.deepEqual(Object.keys(v.peers), othersOf(people, p));
      assert.ok(!v.publish && !v.subscribe, 'no connection to the server');
      // iceServers carry our TURN URL with a TURN REST credential minted for this participant.
      const ice = await p.page.evaluate(() => window.switchyard.iceServers);
      assert.equal(ice.length, 1);
      assert.deepEqual(ice[0].urls, ['turn:127.0.0.1:9?transport=udp']);
      assert.match(ice[0].username, new RegExp(`^\\d+:${p.id}$`));
      assert.equal(ice[0].credential.length, 28);
    }
    const rooms = await server.rooms();
    assert.deepEqual(rooms.map((r) => [r.name, r.mode, r.participants.length]), [['duo', 'c2c', 2]]);
  } finally {
    await browser.close();
    server.stop();
  }
});

test('four people run a P2P mesh: each decodes all others, nothing through the engine', { timeout: 180000 }, async () => {
  const server = await startServer(LOOPBACK);
  const browser = await launchBrowser();
  try {
    const before = (await server.stats()).totals;
    const people = await joinAll(browser, server.url, 'quad', ['Ada', 'Grace', 'Linus', 'Margaret']);
    await everyoneReceives(people);
    const after = (await server.stats()).totals;
    assert.equal(after.rtp_forwarded, before.rtp_forwarded, 'the engine forwarded no RTP');
    assert.equal(await server.transports(), 0, 'no engine transports');
    for (const p of people) {
      const v = await view(p);
      assert.equal(v.mode, 'p2p');
      assert.deepEqual(Object.keys(v.peers).sort(), othersOf(people, p).sort());
      assert.ok(Object.values(v.peers).every((s) => s === 'connected'), JSON.stringify(v.peers));
      assert.ok(!v.publish && !v.subscribe, 'no connection to the server');
    }
  } finally {
    await browser.close();
    server.stop();
  }
});

/**
 * Waits until each of `people` has seen the room switch to `mode` (after epoch `after`) and decodes
 * everyone again; returns each one's time from the announcement to recovery, in ms.
 */
async function switchTimes(people, mode, after, timeout = 90000) {
  const times = [];
  for (const p of people) {
    const sw = await until(
      () => p.page.evaluate(({ mode, after }) => {
        const s = window.switchyard.lastSwitch;
        return s && s.mode === mode && s.epoch > after && s.recoveredAt ? s : null;
      }, { mode, after }),
      timeout,
    );
    assert.ok(sw, `${p.name} recovered after the switch to ${mode}: ${JSON.stringify(await p.page.evaluate(() => window.switchyard.switches))}`);
    times.push(sw.recoveredAt - sw.announcedAt);
  }
  return times;
}

function report(label, times) {
  const sorted = [...times].sort((a, b) => a - b);
  const s = (ms) => `${(ms / 1000).toFixed(1)} s`;
  console.log(`switch ${label}: ${s(sorted[sorted.length - 1])} (max over ${times.length} participants; median ${s(sorted[Math.floor(sorted.length / 2)])})`);
}

const epochOf = (p) => p.page.evaluate(() => window.switchyard.epoch);
const modeOf = (p) => p.page.evaluate(() => window.switchyard.mode);

// Default thresholds (--c2c-max 2 --p2p-max 6 --hysteresis 1): the 7th joiner moves the room to the
// SFU; it stays there at 6 and goes back to the mesh at 5. SWITCH_P2P_MAX=3 runs the same scenario
// with 4 people for slower machines.
const P2P_MAX = Number(process.env.SWITCH_P2P_MAX || 6);

test(`a room grows past --p2p-max ${P2P_MAX} into the SFU and shrinks back to the mesh`, { timeout: 420000 }, async () => {
  const server = await startServer([...LOOPBACK, '--p2p-max', String(P2P_MAX)]);
  const browser = await launchBrowser();
  const names = ['Ada', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara', 'Dennis'].slice(0, P2P_MAX + 1);
  try {
    const mesh = await joinAll(browser, server.url, 'growing', names.slice(0, P2P_MAX));
    await everyoneReceives(mesh, 120000);
    assert.equal(await modeOf(mesh[0]), P2P_MAX > 2 ? 'p2p' : 'c2c');
    const meshEpoch = await epochOf(mesh[0]);
    const quiet = (await server.stats()).totals.rtp_forwarded;

    // One more: the room switches to the SFU for everyone.
    const last = await join(browser, server.url, 'growing', names[P2P_MAX], { query: SMALL });
    const all = [...mesh, last];
    report(`mesh->sfu (${all.length} people)`, await switchTimes(mesh, 'sfu', meshEpoch));
    await everyoneReceives(all, 120000);
    for (const p of all) {
      const v = await view(p);
      assert.deepEqual([v.mode, v.topology, Object.keys(v.peers).length, v.publish, v.subscribe], ['sfu', 'sfu', 0, true, true]);
    }
    assert.ok((await server.stats()).totals.rtp_forwarded - quiet > 100, 'the engine forwards the media now');
    assert.equal(await server.transports(), 2 * all.length, 'a publish and a subscribe transport each');
    const sfuEpoch = await epochOf(mesh[0]);

    // Hysteresis: back at p2p_max the room stays in the SFU...
    await last.page.evaluate(() => window.switchyard.leave());
    await last.context.close();
    const stay = mesh;
    assert.ok(await until(async () => (await server.rooms())[0]?.participants.length === P2P_MAX, 15000));
    assert.equal(await modeOf(stay[0]), 'sfu');
    const snapshot = {};
    for (const p of stay) snapshot[p.id] = (await stats(p)).perParticipant;
    for (const p of stay) {
      assert.ok(await until(() => receivesFrom(p, othersOf(stay, p), snapshot[p.id]), 30000), `${p.name} still decodes in the SFU`);
    }
    assert.equal(await epochOf(stay[0]), sfuEpoch, 'no switch at the threshold');

    // ...and one fewer takes it back to the mesh, with no engine transports left.
    const leaver = stay.pop();
    await leaver.page.evaluate(() => window.switchyard.leave());
    await leaver.context.close();
    report(`sfu->mesh (${stay.length} people)`, await switchTimes(stay, stay.length > 2 ? 'p2p' : 'c2c', sfuEpoch));
    await everyoneReceives(stay);
    assert.equal(await server.transports(), 0, 'the SFU transports are gone');
    const settled = (await server.stats()).totals.rtp_forwarded;
    for (const p of stay) snapshot[p.id] = (await stats(p)).perParticipant;
    for (const p of stay) {
      assert.ok(await until(() => receivesFrom(p, othersOf(stay, p), snapshot[p.id]), 30000), `${p.name} decodes in the mesh`);
    }
    assert.equal((await server.stats()).totals.rtp_forwarded, settled, 'the engine forwards nothing in the mesh');
  } finally {
    await browser.close();
    server.stop();
  }
});

// Switches overlap with joins and leaves: everyone must still end up decoding everyone.
test('joins and leaves during a switch converge; an SFU-only client keeps the room in the SFU', { timeout: 300000 }, async () => {
  const server = await startServer([...LOOPBACK, '--c2c-max', '2', '--p2p-max', '2', '--hysteresis', '0']);
  const browser = await launchBrowser();
  const joinRoom = (name, query = {}) => join(browser, server.url, 'churn', name, { query: { ...SMALL, ...query } });
  const leave = async (p) => {
    await p.page.evaluate(() => window.switchyard.leave());
    await p.context.close();
  };
  try {
    const [a, b] = [await joinRoom('Ada'), await joinRoom('Grace')];
    await everyoneReceives([a, b]);
    assert.equal(await modeOf(a), 'c2c');
    let epoch = await epochOf(a);

    // Two join at once: the first moves the room to the SFU, the second arrives mid-switch.
    const [c, d] = await Promise.all([joinRoom('Linus'), joinRoom('Margaret')]);
    await everyoneReceives([a, b, c, d], 90000);
    for (const p of [a, b, c, d]) assert.equal((await view(p)).topology, 'sfu');
    await switchTimes([a, b], 'sfu', epoch);
    epoch = await epochOf(a);

    // Both leave at once: back to C2C; then someone joins and leaves straight away (two switches
    // in quick succession) and the pair still ends up connected browser to browser.
    await Promise.all([leave(c), leave(d)]);
    await switchTimes([a, b], 'c2c', epoch);
    const e = await joinRoom('Ken');
    await leave(e);
    assert.ok(await until(async () => (await server.rooms())[0]?.participants.length === 2, 15000));
    assert.ok(await until(async () => (await epochOf(a)) >= epoch + 3, 15000), 'to the SFU and back once more');
    assert.equal(await modeOf(a), 'c2c');
    const sw = await until(() => a.page.evaluate(() => window.switchyard.lastSwitch?.recoveredAt), 60000);
    assert.ok(sw, 'Ada decodes Grace again after the join-and-leave');
    await everyoneReceives([a, b]);
    for (const p of [a, b]) {
      const v = await view(p);
      assert.deepEqual([v.mode, v.topology, Object.keys(v.peers).length, v.publish, v.subscribe], ['c2c', 'mesh', 1, false, false]);
    }
    assert.ok(await until(async () => (await server.transports()) === 0, 10000), 'no engine transports left');

    // A client that cannot run the mesh (?mesh=0, like the load generator or aiortc) joins: the
    // room goes to the SFU although it is small, and back to C2C when it leaves.
    await leave(b);
    const bot = await joinRoom('Bot', { mesh: '0' });
    assert.equal(await modeOf(bot), 'sfu');
    await everyoneReceives([a, bot]);
    await leave(bot);
    assert.ok(await until(async () => (await modeOf(a)) === 'c2c', 15000));
    assert.ok(await until(async () => (await server.transports()) === 0, 10000), 'no engine transports left');
  } finally {
    await browser.close();
    server.stop();
  }
});

// A stand-in for getDisplayMedia (headless Chromium has no screen to pick): a moving canvas.
const FAKE_SCREEN = () => {
  navigator.mediaDevices.getDisplayMedia = async () => {
    const canvas = Object.assign(document.createElement('canvas'), { width: 320, height: 180 });
    const ctx = canvas.getContext('2d');
    let n = 0;
    setInterval(() => {
      ctx.fillStyle = `hsl(${(n += 7) % 360} 60% 50%)`;
      ctx.fillRect(0, 0, 320, 180);
    }, 66);
    return canvas.captureStream(15);
  };
};

/** The number of live video tracks on `viewer`'s tile for participant `id`. */
const videosOf = (viewer, id) => viewer.page.evaluate((id) => {
  const tile = document.querySelector(`.tile[data-participant="${id}"]`);
  return tile ? [...tile.querySelectorAll('video')].filter((v) => !v.hidden && v.srcObject?.getVideoTracks()[0]?.readyState === 'live').length : 0;
}, id);

test('a screen share renegotiates the mesh from either side and survives a switch', { timeout: 180000 }, async () => {
  const server = await startServer([...LOOPBACK, '--p2p-max', '2', '--hysteresis', '0']);
  const browser = await launchBrowser();
  const joinRoom = async (name) => {
    const p = await join(browser, server.url, 'screens', name, { query: SMALL });
    await p.page.evaluate(FAKE_SCREEN);
    return p;
  };
  try {
    const [a, b] = [await joinRoom('Ada'), await joinRoom('Grace')];
    await everyoneReceives([a, b]);
    // The later joiner (the polite peer, which never made an offer yet) shares: it offers now.
    await b.page.click('#screen-button');
    assert.ok(await until(async () => (await videosOf(a, b.id)) === 2, 20000), 'Ada sees Grace\'s camera and screen');
    // The earlier joiner shares too.
    await a.page.click('#screen-button');
    assert.ok(await until(async () => (await videosOf(b, a.id)) === 2, 20000), 'Grace sees Ada\'s camera and screen');
    // A third person moves the room to the SFU: the shares come along.
    const c = await joinRoom('Linus');
    for (const [viewer, sharer] of [[c, a], [c, b], [a, b], [b, a]]) {
      assert.ok(await until(async () => (await videosOf(viewer, sharer.id)) === 2, 30000), `${viewer.name} sees ${sharer.name}'s screen in the SFU`);
    }
    await everyoneReceives([a, b, c]);
    // Back to the mesh; Grace stops sharing there.
    await c.page.evaluate(() => window.switchyard.leave());
    await c.context.close();
    assert.ok(await until(async () => (await modeOf(a)) === 'c2c', 15000));
    assert.ok(await until(async () => (await videosOf(a, b.id)) === 2 && (await videosOf(b, a.id)) === 2, 30000), 'screens again in the mesh');
    await b.page.click('#screen-button');
    assert.ok(await until(async () => (await videosOf(a, b.id)) === 1, 20000), 'Grace\'s screen is gone for Ada');
    assert.equal(await videosOf(b, a.id), 2);
    await everyoneReceives([a, b]);
  } finally {
    await browser.close();
    server.stop();
  }
});
