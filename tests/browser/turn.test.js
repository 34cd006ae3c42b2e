// A C2C call whose browsers may use only relayed candidates (iceTransportPolicy "relay") completes
// through the engine's built-in TURN server, with credentials minted by the control daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, launchBrowser, receivesFrom, startServer, stats, until } from './harness.js';

test('a relay-only C2C call flows through our TURN server', { timeout: 120000 }, async () => {
  // The all-in-one server runs TURN on a free port and hands out turn:/stun: URLs for it.
  const server = await startServer(['--allowed-candidate-net', '127.0.0.0/8']);
  const browser = await launchBrowser();
  try {
    const before = (await server.stats()).totals;
    const query = { video: '320x180', fps: '15', relay: '1' };
    const a = await join(browser, server.url, 'relayed', 'Ada', { query });
    const b = await join(browser, server.url, 'relayed', 'Grace', { query });
    const ice = await a.page.evaluate(() => window.switchyard.iceServers);
    assert.ok(ice.length === 1 && ice[0].urls.some((u) => u.startsWith('turn:')), JSON.stringify(ice));
    for (const [p, q] of [[a, b], [b, a]]) {
      const ok = await until(() => receivesFrom(p, [q.id]), 60000);
      assert.ok(ok, `${p.name} decodes ${q.name} through TURN: ${JSON.stringify(await stats(p))}`);
      const paths = await p.page.evaluate(() => window.switchyard.peerPaths());
      assert.equal(paths[q.id].local, 'relay', `${p.name}'s selected pair uses a relayed candidate: ${JSON.stringify(paths)}`);
    }
    assert.equal(await a.page.evaluate(() => window.switchyard.mode), 'c2c');
    await a.page.waitForTimeout(2000);
    const after = (await server.stats()).totals;
    assert.ok(after.turn_allocations - before.turn_allocations >= 2, `allocations: ${after.turn_allocations}`);
    const relayed = after.turn_relayed_to_peer - before.turn_relayed_to_peer;
    assert.ok(relayed > 100, `media relayed by TURN: ${relayed} packets`);
    assert.equal(after.rtp_forwarded, before.rtp_forwarded, 'no SFU forwarding for a C2C room');
    console.log(`relay-only C2C: ${relayed} packets relayed to peers, ${after.turn_relayed_to_client - before.turn_relayed_to_client} to clients`);
  } finally {
    await browser.close();
    server.stop();
  }
});
