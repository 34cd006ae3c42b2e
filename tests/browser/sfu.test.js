// Three people hold a call through the SFU in real headless Chromium; a fourth joins and leaves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { join, launchBrowser, receivesFrom, startServer, stats, until } from './harness.js';

const DOCS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs');

test('three participants in SFU mode each decode video and audio from both others', { timeout: 240000 }, async () => {
  // --sfu-only: with the default thresholds three people would be a P2P mesh (see modes.test.js).
  const server = await startServer(['--sfu-only']);
  const browser = await launchBrowser();
  try {
    const before = (await server.stats()).totals;
    const people = [];
    for (const name of ['Ada', 'Grace', 'Linus']) people.push(await join(browser, server.url, 'standup', name));
    const ids = people.map((p) => p.id);
    for (const p of people) {
      const others = ids.filter((id) => id !== p.id);
      const ok = await until(() => receivesFrom(p, others), 60000);
      assert.ok(ok, `${p.name} decodes from ${others.join(', ')}: ${JSON.stringify(await stats(p))}`);
    }
    const mode = await people[0].page.evaluate(() => window.switchyard.mode);
    assert.equal(mode, 'sfu');
    // The media went through the engine.
    const after = (await server.stats()).totals;
    assert.ok(after.rtp_forwarded - before.rtp_forwarded > 100, `engine forwarded ${after.rtp_forwarded} RTP packets`);
    assert.ok(after.rx_packets > before.rx_packets);

    // Chat reaches everyone.
    await people[1].page.evaluate(() => window.switchyard.sendChat('Morning all, screens up in 5'));
    for (const p of people) {
      const got = await until(
        () => p.page.evaluate(() => window.switchyard.chatLog.some((m) => m.text === 'Morning all, screens up in 5')),
        10000,
      );
      assert.ok(got, `${p.name} received the chat message`);
    }

    if (process.env.SCREENSHOT) {
      mkdirSync(DOCS, { recursive: true });
      await people[0].page.waitForTimeout(1500);
      await people[0].page.screenshot({ path: path.join(DOCS, 'web-client.png') });
    }

    // A fourth joins: everyone sees them; they see everyone.
    const base = {};
    for (const p of people) base[p.id] = (await stats(p)).perParticipant;
    const fourth = await join(browser, server.url, 'standup', 'Margaret');
    const ok4 = await until(() => receivesFrom(fourth, ids), 60000);
    assert.ok(ok4, `the fourth participant decodes from all three: ${JSON.stringify(await stats(fourth))}`);
    for (const p of people) {
      const ok = await until(() => receivesFrom(p, [fourth.id]), 60000);
      assert.ok(ok, `${p.name} decodes from the fourth participant`);
    }
    // ...and leaves: the tile goes away and the others keep receiving each other.
    await fourth.page.evaluate(() => window.switchyard.leave());
    await fourth.context.close();
    for (const p of people) {
      const gone = await until(
        () => p.page.evaluate((id) => !window.switchyard.participants().includes(id), fourth.id),
        15000,
      );
      assert.ok(gone, `${p.name} saw the fourth participant leave`);
      const snapshot = (await stats(p)).perParticipant;
      const others = ids.filter((id) => id !== p.id);
      const still = await until(() => receivesFrom(p, others, snapshot), 30000);
      assert.ok(still, `${p.name} still decodes from ${others.join(', ')} after the fourth left`);
    }
    const count = await people[0].page.evaluate(() => window.switchyard.participants().length);
    assert.equal(count, 2);
  } finally {
    await browser.close();
    server.stop();
  }
});
