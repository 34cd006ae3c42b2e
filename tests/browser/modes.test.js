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
