import { startCollector } from '/work/main/e2e/harness.mjs';
const c = await startCollector();
console.log('URL', c.url, c.stateDir);
process.on('SIGTERM', async () => { await c.dispose(); process.exit(0); });
setInterval(() => {}, 1000);
