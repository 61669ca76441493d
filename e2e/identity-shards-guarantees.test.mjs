// The guarantees again, with each source's identity graph over four Durable Objects
// (IDENTITY_SHARDS=4): no raw PII in any shard, reset() and revocation, and senders
// retrying through two SIGKILLs of the collector (commits over several shards cut at
// any point) get every event stored once, each sender one whole person.
process.env.E2E_IDENTITY_SHARDS = '4';
await import('./guarantees.test.mjs');
