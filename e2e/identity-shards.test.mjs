// The collector's tests again, with each source's identity graph over four Durable
// Objects (IDENTITY_SHARDS=4): stitching, the shared device, unmerge, erasure, the admin
// lists and the subrequest bounds hold as they do over one object.
process.env.E2E_IDENTITY_SHARDS = '4';
await import('./collector.test.mjs');
