// The SDK's decisions, as plain functions over plain data (no browser globals; tested in
// Node by sdk-wasm/js/test/engine.test.mjs): what an event carries (ids, session,
// campaign, consent snapshot), whether it may be kept, stored or sent under the visitor's
// consent, which events form the next batch, what a response means (done, retry after a
// backoff, or refused), and what is shed at the queue's bound.
//
// What must match the collector byte for byte (identifier normalization and hashing, raw
// PII detection, campaign fields) is not here: it comes from the tracking-plan crate
// compiled to wasm, passed in as `pii`. The browser is reached only by the adapter
// (boot.js), which applies the storage operations this engine emits (takeOps), sends the
// batches it builds under a cross-tab Web Lock, and reports each response back.
//
// Written in JavaScript rather than Rust on purpose: the same engine compiled to wasm
// weighed about 20 KB gzip more for every visitor (measured), against an install budget
// of 17 KB in all (README, "SDK API").

export const LIBRARY = 'sightline.js';
export const VERSION = '0.1.0';
/** Events kept at most (queued plus waiting for consent). At the bound the oldest event
 * is shed and counted: recent events describe the visit that is still going on. */
export const MAX_QUEUE = 1000;
export const MAX_EVENT_BYTES = 32 * 1024;
export const MAX_BATCH_BYTES = 500 * 1024;

/** UTF-8 bytes of `s`, at most: the collector's limits are bytes, and non-Latin text takes
 * two or three bytes a UTF-16 unit (a surrogate half is counted three, a pair six: over,
 * never under). */
export const utf8 = (s) => {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) n += c > 0x7ff ? 2 : 1;
  }
  return n;
};
export const MAX_BATCH_EVENTS = 100;
/** Requests that outlive the page (fetch keepalive) share a 64 KB budget. */
export const UNLOAD_BYTES = 60000;
/** A burst of calls is gathered this long before it is sent. */
export const FLUSH_DELAY_MS = 200;
export const SESSION_MS = 30 * 60 * 1000;
const MIN_BACKOFF = 500;
const MAX_BACKOFF = 60000;
/** Storage keys (localStorage). Event chunks: `sl_e:` + time + sequence + tab id. */
export const EVENT_PREFIX = 'sl_e:';
const K_ANON = 'sl_aid';
const K_USER = 'sl_uid';
const K_SESSION = 'sl_sess';
const K_CONSENT = 'sl_consent';
const K_FIRST = 'sl_ft';
const K_LAST = 'sl_lt';
/** Length of a tab id (the suffix of its event keys). */
const TAB_LEN = 6;
/** Consent category bits an event needs to be kept and sent. */
const ANALYTICS = 1;
const MARKETING = 2;
/** Event fields that are the SDK's own ids and times: never raw PII, not scanned. */
const OWN = { messageId: 1, anonymousId: 1, timestamp: 1, version: 1 };
/** Strings worth asking the shared PII rules about: an `@` (or its `%40`, `%2540` encodings),
 * four digits in a row, or digits in groups (`+33 6 12 34 56 78`). */
const SUSPECT = /@|%[24]|\d{4}|\d[\s.()-]+\d/;
/** Keys whose name says they hold an email or a phone number (the shared rules decide). */
const NAMED = /mail|phone|mobil|tel|cell|fax|sms|msisdn|whatsapp/i;

/** RFC 3339 UTC time of `ms`. The date and time up to the second are formatted once per
 * second: `toISOString` costs about 10 µs a call in Chromium, a tenth of the SDK's
 * budget for 1,000 calls. */
let isoSecond;
let isoPrefix;
export const iso = (ms) => {
  const sec = Math.floor(ms / 1000);
  if (sec !== isoSecond) {
    isoSecond = sec;
    isoPrefix = new Date(sec * 1000).toISOString().slice(0, 20);
  }
  return isoPrefix + String(Math.floor(ms) - sec * 1000).padStart(3, '0') + 'Z';
};

const b36 = (n, width) => Math.floor(n).toString(36).padStart(width, '0').slice(-width);
const tri = (c) => (c === '1' ? true : c === '0' ? false : undefined);
const triChar = (v) => (v === true ? '1' : v === false ? '0' : '-');

/**
 * @param {object} o
 * @param {string} o.writeKey
 * @param {boolean} o.optOut consent is assumed until denied (default opt-in: nothing is
 *   stored or sent before the visitor grants analytics)
 * @param {boolean} o.storage localStorage works here
 * @param {() => number} o.random a number in [0, 1)
 * @param {() => string} o.uuid a UUID v4
 * @param {boolean} o.gpc the browser sends Global Privacy Control: marketing is denied
 *   whatever the visitor or a CMP grants
 * @param {object} o.pii the shared tracking-plan rules (wasm.js): `redact(s)` gives `s`
 *   with raw emails and phones hashed (or undefined), `campaign(url)` the UTM fields by
 *   their Segment name and click ids prefixed with `+`, `hashIds(email, phone)` the
 *   soft-login hashes or `{error}`
 */
export function createEngine({ writeKey, optOut, storage, random, uuid, pii, gpc = false }) {
  let anon = '';
  let user;
  let session = '';
  let lastActivity = 0;
  let sessionSaved = 0;
  /** The visitor's choice per category (undefined: not stated yet). */
  let consent = {};
  let consentSource = '';
  let firstTouch;
  let lastTouch;
  let clickIds;
  let touchedUrl;
  /** Items: { key_, owner_, json_, bytes_ (its UTF-8 size), needs_, ctx_, storedIn_, pending_, restored_ } (fields ending
   * in `_` are internal: the build shortens their names). `owner_`: the tab
   * that created it (only it sends the event while it lives; a closed tab's events are
   * adopted by one other tab). `ctx_`: its whole context as JSON text (page facts,
   * library, session, campaign, consent snapshot: see record), the same string for
   * consecutive events that share it.
   * `storedIn_`: the chunk holding it, once written (events are stored in chunks of up to
   * MAX_BATCH_EVENTS lines, one write per chunk). */
  let queue = [];
  /** Opt-in mode before a decision: events wait here, unstamped, never stored or sent. */
  let waiting = [];
  /** Keys of the batch in flight. */
  let inflight = new Set();
  let seq = 0;
  const tab = b36(random() * 36 ** TAB_LEN, TAB_LEN);
  let ops = [];
  let backoff = 0;
  const stats = { queued: 0, waiting: 0, sent: 0, shed: 0, rejected: 0, purged: 0, notPersisted: 0 };

  const granted = (v) => (v === undefined ? optOut : v);
  /** Marketing as applied: Global Privacy Control denies it. */
  const adsOk = (v) => !gpc && granted(v);
  const decided = () => optOut || consent.analytics !== undefined;
  const mayStore = () => storage && granted(consent.analytics);
  const set = (k, v) => ops.push(['s', k, v]);
  const remove = (k) => ops.push(['r', k]);
  /** Writes an identifier or campaign value, when consent allows storage. */
  const save = (k, v) => { if (mayStore()) set(k, v); };

  /** Writes a chunk with the events still in it, or removes it when none is left. A
   * chunk is lines: `c` and the shared context of the events after it, then per event
   * its consent needs (a digit) and its JSON. */
  const writeChunk = (chunk) => {
    const lines = [];
    let ctx;
    for (const i of queue) {
      if (i.storedIn_ !== chunk) continue;
      if (i.ctx_ !== ctx) { ctx = i.ctx_; lines.push('c' + (ctx || '{}')); }
      lines.push(i.needs_ + i.json_);
    }
    if (lines.length) set(chunk, lines.join('\n')); else remove(chunk);
  };
  /** Rewrites the chunks that held events just removed from the queue. */
  const rewrite = (chunks) => { for (const c of new Set(chunks)) if (c) writeChunk(c); };

  /** Sheds the oldest events past MAX_QUEUE (never one being sent). */
  const bound = () => {
    while (queue.length + waiting.length > MAX_QUEUE) {
      if (waiting.length) waiting.shift();
      else {
        const at = queue.findIndex((i) => !inflight.has(i.key_));
        if (at < 0) break;
        const [item] = queue.splice(at, 1);
        rewrite([item.storedIn_]);
      }
      stats.shed++;
    }
  };

  const touchSession = (now) => {
    if (!session || now - lastActivity > SESSION_MS) {
      session = uuid();
      sessionSaved = 0;
    }
    lastActivity = now;
    // Written at most once a minute: the 30-minute rule does not need more.
    if (now - sessionSaved > 60000) {
      sessionSaved = now;
      save(K_SESSION, session + '.' + Math.floor(now));
    }
  };

  /** First and last touch from the page URL, kept only under consent (click ids under
   * marketing consent). Once per URL: the same landing page does not touch again. */
  const touchCampaign = (url) => {
    if (url === touchedUrl) return;
    touchedUrl = url;
    const utm = {};
    const clicks = {};
    let any = 0;
    for (const [k, v] of pii.campaign(url)) {
      any = 1;
      // Raw PII in a campaign value (utm_term=an email) is hashed once, here.
      if (k[0] === '+') clicks[k.slice(1)] = clean(v); else utm[k] = clean(v);
    }
    if (!any) return;
    const touch = {};
    if (Object.keys(utm).length) touch.campaign = utm;
    const hasClicks = Object.keys(clicks).length > 0;
    if (hasClicks && adsOk(consent.marketing)) touch.clickIds = clicks;
    const text = JSON.stringify(touch);
    if (!firstTouch) {
      firstTouch = touch;
      save(K_FIRST, text);
    }
    lastTouch = touch;
    save(K_LAST, text);
    clickIds = hasClicks ? clicks : undefined;
  };

  /** The consent snapshot an event carries (Segment's `context.consent` format). */
  const snapshot = () => {
    const s = {
      categoryPreferences: {
        necessary: true,
        analytics: granted(consent.analytics),
        marketing: adsOk(consent.marketing),
        personalization: granted(consent.personalization),
      },
    };
    if (consentSource) s.source = consentSource;
    if (gpc) s.gpc = true;
    return s;
  };

  /** `s` with raw emails and phones replaced by their digest (the shared rules). */
  const clean = (s) => (SUSPECT.test(s) ? pii.redact(s) ?? s : s);

  /** A value under key `k`: a field named like `phone` or `email` is asked about in
   * any format (numbers too), others only when they look suspect. */
  const cleanField = (k, v) => {
    if (NAMED.test(k) && (typeof v === 'string' || typeof v === 'number')) {
      return pii.redactField(k, String(v)) ?? (typeof v === 'string' ? clean(v) : v);
    }
    return typeof v === 'string' ? clean(v) : v;
  };

  /** An object whose keys hold raw PII, copied with the keys replaced (the page's
   * object is never changed). */
  const cleanKeys = (v) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return v;
    let out;
    for (const k of Object.keys(v)) {
      const c = SUSPECT.test(k) ? pii.redact(k) : undefined;
      if (c !== undefined) (out ||= { ...v }, delete out[k], out[c] = v[k]);
    }
    return out || v;
  };

  /** Event JSON with every raw email and phone in its keys and strings replaced by its
   * digest (shared tracking-plan rules), or undefined if it cannot be serialized. */
  const serialize = (e) => {
    try {
      return JSON.stringify(e, (k, v) => (OWN[k] ? v : cleanKeys(cleanField(k, v))));
    } catch {
      return undefined; // a cycle or a BigInt in the page's properties
    }
  };

  /** Adds the consent snapshot to a context's JSON text. Built again only when the
   * context or the consent changed: consecutive events share one string (compared by
   * reference when batches and chunks are built). */
  let snapText;
  let stampIn;
  let stampOut;
  const stamp = (ctx) => {
    if (ctx !== stampIn || !snapText) {
      stampIn = ctx;
      stampOut = ctx.slice(0, -1) + ',"consent":' + (snapText ||= JSON.stringify(snapshot())) + '}';
    }
    return stampOut;
  };

  /** An event's context before the consent snapshot: the page's facts and its own
   * (session, campaign), built again only when either changed. */
  let pageIn;
  let ownIn;
  let contextOut;
  const contextText = (page, own) => {
    if (page !== pageIn || own !== ownIn) {
      pageIn = page;
      ownIn = own;
      contextOut = page.slice(0, -1) + ',' + own.slice(1);
    }
    return contextOut;
  };

  /** The page's facts and the library, as JSON with raw PII redacted: serialized once
   * per page (the adapter passes the same object until the page changes). */
  let pageFor;
  let pageJson;
  const pageText = (ctx) => {
    if (ctx !== pageFor) {
      pageFor = ctx;
      pageJson = serialize(Object.assign({}, ctx, { library: { name: LIBRARY, version: VERSION } })) || '{}';
    }
    return pageJson;
  };

  const enqueue = (json, needs, now, ctx) => {
    seq = (seq + 1) % 36 ** 4;
    queue.push({
      key_: EVENT_PREFIX + b36(now, 9) + b36(seq, 4) + tab,
      owner_: tab,
      json_: json,
      bytes_: utf8(json),
      needs_: needs,
      ctx_: ctx,
      pending_: mayStore(),
    });
    bound();
  };

  /** Builds an event: `kind` track, page, identify, alias, group, screen; `name` the
   * event, page or screen name, group id or previous id; `body` properties or traits.
   * Returns false when it was not kept (over 32 KB, not serializable, or analytics
   * denied). `page`: { ctx (page facts: page, locale, timezone, screen, userAgent), url,
   * now }. */
  const record = (kind, name, body, page, consentRecord) => {
    const { ctx, url, now } = page;
    const analytics = granted(consent.analytics);
    if (!consentRecord && consent.analytics === false) return false; // not collected
    touchSession(now);
    // Before a decision the campaign is kept in memory only; events that wait carry it.
    const collect = analytics || !decided();
    if (collect) touchCampaign(url);
    const e = { type: kind, messageId: uuid(), anonymousId: anon };
    if (user) e.userId = user;
    if (name != null) e[{ track: 'event', group: 'groupId', alias: 'previousId' }[kind] || 'name'] = name;
    if (body && typeof body === 'object' && !Array.isArray(body)) e[kind === 'identify' || kind === 'group' ? 'traits' : 'properties'] = body;
    e.timestamp = iso(now);
    const c = { sessionId: session };
    let needs = consentRecord ? 0 : ANALYTICS;
    if (collect) {
      if (lastTouch && lastTouch.campaign) c.campaign = lastTouch.campaign;
      if (firstTouch) c.firstTouch = firstTouch;
      if (clickIds && adsOk(consent.marketing)) {
        c.clickIds = clickIds;
        needs |= MARKETING;
      }
    }
    // The context (page facts, library, session, campaign, then the consent snapshot) is
    // kept beside the event: events that share it, nearly all of a page's, send it once
    // per batch as Segment's batch-level `context` and store it once per chunk.
    const json = serialize(e);
    const context = contextText(pageText(ctx), JSON.stringify(c));
    if (!json || utf8(json) + utf8(context) > MAX_EVENT_BYTES) {
      stats.rejected++;
      return false;
    }
    if (decided() || consentRecord) enqueue(json, needs, now, stamp(context));
    else {
      waiting.push([json, needs, context]);
      bound();
    }
    return true;
  };

  /** Drops queued events the current consent no longer allows (never one in flight). */
  const purge = () => {
    const a = granted(consent.analytics);
    const m = adsOk(consent.marketing);
    const gone = [];
    queue = queue.filter((i) => {
      const ok = (!(i.needs_ & ANALYTICS) || a) && (!(i.needs_ & MARKETING) || m);
      if (!ok) {
        stats.purged++;
        inflight.delete(i.key_);
        gone.push(i.storedIn_);
      }
      return ok;
    });
    rewrite(gone);
  };

  /** Applies a consent decision (undefined leaves a category as it is). Events that
   * waited for it are stamped and queued, or dropped; queued events the new state no
   * longer allows are purged; the decision itself is sent as a `Consent Updated` record. */
  const setConsent = (a, m, p, source, page) => {
    const before = mayStore();
    const next = {
      analytics: a ?? consent.analytics,
      marketing: m ?? consent.marketing,
      personalization: p ?? consent.personalization,
    };
    if (consent.analytics !== undefined && next.analytics === consent.analytics &&
        next.marketing === consent.marketing && next.personalization === consent.personalization) {
      return; // a CMP repeating its state on every page is not a new decision
    }
    consent = next;
    touchedUrl = undefined; // the landing URL is read again under the new consent
    consentSource = String(source).slice(0, 40);
    snapText = undefined;
    // The choice itself is necessary: always kept.
    if (storage) set(K_CONSENT, triChar(next.analytics) + triChar(next.marketing) + triChar(next.personalization) + '.' + consentSource);
    if (mayStore() && !before) {
      // Storage just became allowed: keep the identifiers from now on.
      set(K_ANON, anon);
      if (user) set(K_USER, user);
      if (firstTouch) set(K_FIRST, JSON.stringify(firstTouch));
      if (lastTouch) set(K_LAST, JSON.stringify(lastTouch));
      sessionSaved = 0;
    }
    if (!granted(next.analytics) && before) for (const k of [K_ANON, K_USER, K_SESSION, K_FIRST, K_LAST]) remove(k);
    if (!adsOk(next.marketing)) {
      // Click ids are ad identifiers: gone from memory and storage with marketing.
      clickIds = undefined;
      const strip = (t, k) => {
        const kept = t && t.campaign ? { campaign: t.campaign } : undefined;
        if (kept) save(k, JSON.stringify(kept)); else if (t && mayStore()) remove(k);
        return kept;
      };
      firstTouch = strip(firstTouch, K_FIRST);
      lastTouch = strip(lastTouch, K_LAST);
    }
    const held = waiting;
    waiting = [];
    if (granted(next.analytics)) {
      for (const [json, needs, context] of held) enqueue(json, needs, page.now, stamp(context));
    } else stats.purged += held.length;
    purge();
    record('track', 'Consent Updated', {
      analytics: granted(next.analytics),
      marketing: adsOk(next.marketing),
      personalization: granted(next.personalization),
    }, page, true);
  };

  /** Events removed after a response: one merge pass (keys were taken in queue order). */
  const removeKeys = (keys) => {
    const gone = [];
    let n = 0;
    queue = queue.filter((i) => {
      if (!keys.has(i.key_)) return true;
      n++;
      gone.push(i.storedIn_);
      return false;
    });
    rewrite(gone);
    return n;
  };

  /** Builds the next batch's body, at most `maxBytes` long, and marks its events in
   * flight. Only this tab's own (and adopted) events go. `present`: the event keys now
   * in storage (read under the cross-tab lock); a restored event whose chunk is gone was
   * sent by another tab. */
  const nextBatch = (now, maxBytes, present) => {
    if (inflight.size) return undefined;
    if (present) queue = queue.filter((i) => !i.restored_ || !i.storedIn_ || present.has(i.storedIn_));
    // A batch holds events of one context (one page, session and consent state), sent
    // once beside them.
    const parts = [];
    let ctx;
    let size = 120 + utf8(writeKey);
    for (const i of queue) {
      if (i.owner_ !== tab) continue;
      if (!parts.length) {
        ctx = i.ctx_;
        size += ctx ? utf8(ctx) : 0;
      } else if (i.ctx_ !== ctx) break;
      if (parts.length >= MAX_BATCH_EVENTS || size + i.bytes_ + 1 > maxBytes) break;
      parts.push(i.json_);
      size += i.bytes_ + 1;
      inflight.add(i.key_);
    }
    if (!parts.length) return undefined;
    return '{"batch":[' + parts.join(',') + ']' + (ctx ? ',"context":' + ctx : '') +
      ',"sentAt":"' + iso(now) + '","writeKey":' + JSON.stringify(writeKey) + '}';
  };

  return {
    tab,
    /** Takes back what an earlier page stored: call for every `sl_*` key in sorted (time)
     * order, then start(). */
    restore(key, value) {
      if (key === K_ANON) anon = value || anon;
      else if (key === K_USER) user = value || user;
      else if (key === K_SESSION) {
        const [id, last] = value.split('.');
        if (id) { session = id; lastActivity = sessionSaved = Number(last) || 0; }
      } else if (key === K_CONSENT && value.length >= 3) {
        consent = { analytics: tri(value[0]), marketing: tri(value[1]), personalization: tri(value[2]) };
        consentSource = value.slice(4) || 'stored';
      } else if (key === K_FIRST || key === K_LAST) {
        try {
          const t = JSON.parse(value);
          if (key === K_FIRST) firstTouch = t; else lastTouch = t;
        } catch {}
      } else if (key.startsWith(EVENT_PREFIX) && key.length > EVENT_PREFIX.length + TAB_LEN) {
        // A chunk (see writeChunk). Events stored without a context line carry their
        // whole context themselves.
        let ctx;
        value.split('\n').forEach((line, n) => {
          const needs = +line[0];
          const json = line.slice(1);
          if (json[0] !== '{' || !json.endsWith('}')) return;
          if (line[0] === 'c') ctx = json;
          else if (needs <= 3) {
            queue.push({ key_: key + '#' + n, owner_: key.slice(-TAB_LEN), json_: json, bytes_: utf8(json), needs_: needs, ctx_: ctx, storedIn_: key, restored_: true });
          }
        });
      }
    },
    /** Finishes the restore: a fresh anonymous id if none was stored, and nothing kept
     * that the stored consent no longer allows. */
    start() {
      if (!anon) { anon = uuid(); save(K_ANON, anon); }
      purge();
    },
    /** Adopts the anonymous id of the collector's first-party cookie. */
    adopt(id) { if (id && id !== anon) { anon = id; save(K_ANON, id); } },
    anon: () => anon,
    user: () => user,
    record: (kind, name, body, page) => record(kind, name, body, page),
    identify(userId, traits, page) {
      if (userId) { user = clean(userId); save(K_USER, user); }
      return record('identify', undefined, traits, page);
    },
    alias(userId, previous, page) {
      const prev = previous ?? user ?? anon;
      user = clean(userId);
      save(K_USER, user);
      return record('alias', prev, undefined, page);
    },
    /** Soft login: the email and/or phone normalized and hashed by the shared rules
     * (wasm; the raw values are neither stored nor sent), sent as identify traits.
     * Returns the traits, or `{error}` when neither value could be used. */
    softLogin(email, phone, page) {
      const { error, ...traits } = pii.hashIds(email ?? '', phone ?? '');
      if (!Object.keys(traits).length) return { error: error || 'nothing to hash' };
      record('identify', undefined, traits, page);
      return traits;
    },
    /** A new visitor on this browser: new anonymous and session ids, no user id. */
    reset() {
      anon = uuid();
      user = undefined;
      session = '';
      save(K_ANON, anon);
      if (storage) { remove(K_USER); remove(K_SESSION); }
    },
    setConsent,
    /** Google Consent Mode v2 state (`granted`/`denied`/empty for unknown). */
    consentGcm(analyticsStorage, adStorage, adUserData, adPersonalization, page) {
      const v = (s) => (s === 'granted' ? true : s === 'denied' ? false : undefined);
      const ads = v(adStorage);
      const data = v(adUserData);
      const m = ads === undefined && data === undefined ? undefined
        : (ads === true && data !== false) || (data === true && ads !== false);
      setConsent(v(analyticsStorage), m, v(adPersonalization), 'gcm', page);
    },
    /** IAB TCF v2.2 purpose consents (`purposes[n]` true: purpose n granted). Analytics:
     * purposes 1 (store/access) and 8 (measure content); marketing: 1, 3, 4 and 7 (ad
     * profile, personalized ads, ad measurement); personalization: 1, 5 and 6. */
    consentTcf(purposes, page) {
      const all = (...n) => n.every((i) => !!purposes[i]);
      setConsent(all(1, 8), all(1, 3, 4, 7), all(1, 5, 6), 'tcf', page);
    },
    consent: () => ({
      analytics: granted(consent.analytics),
      marketing: adsOk(consent.marketing),
      personalization: granted(consent.personalization),
      decided: decided(),
    }),
    /** Storage operations to perform, in order: ['s', key, value] and ['r', key]. Events
     * recorded since the last call are written here, in chunks: the adapter calls this
     * once per task, so a burst of calls costs a few writes, not one per event. */
    takeOps() {
      let group = [];
      const flush = () => {
        const chunk = group[0].key_;
        for (const i of group) { i.pending_ = false; i.storedIn_ = chunk; }
        writeChunk(chunk);
        group = [];
      };
      for (const i of queue) {
        if (i.pending_) group.push(i);
        if (group.length === MAX_BATCH_EVENTS) flush();
      }
      if (group.length) flush();
      const out = ops;
      ops = [];
      return out;
    },
    /** The adapter could not write chunk `key` (quota): its events live in this tab only. */
    notPersisted(key) {
      stats.notPersisted++;
      for (const i of queue) if (i.storedIn_ === key) i.storedIn_ = undefined;
    },
    /** Milliseconds until the queue should be sent: 0 when a full batch is ready, the
     * gathering delay otherwise, -1 when there is nothing to send. */
    delay() {
      if (inflight.size) return -1;
      let n = 0;
      let bytes = 0;
      for (const i of queue) {
        if (i.owner_ !== tab) continue;
        bytes += i.bytes_;
        if (++n >= MAX_BATCH_EVENTS) break;
      }
      return !n ? -1 : n >= MAX_BATCH_EVENTS || bytes >= MAX_BATCH_BYTES / 2 ? 0 : FLUSH_DELAY_MS;
    },
    /** Tabs whose stored events this tab restored: the adapter adopts those whose tab is
     * gone (by taking their lock) and lets go of the others. */
    foreignTabs: () => [...new Set(queue.filter((i) => i.owner_ !== tab).map((i) => i.owner_))],
    /** This tab now sends the events of `t` (a closed tab whose lock it took). */
    adoptTab(t) { for (const i of queue) if (i.owner_ === t) i.owner_ = tab; },
    /** Another live tab owns these restored events and will send them: this tab lets go
     * of them (storage keeps them for whichever tab outlives the owner). */
    forgetTab(t) { queue = queue.filter((i) => i.owner_ !== t); },
    /** Whether nextBatch needs the stored keys: only events read back from storage can
     * have been sent by another tab (a live tab's own events are its alone). */
    needsPresent: () => queue.some((i) => i.restored_ && i.owner_ === tab),
    batch: nextBatch,
    /** What the collector answered for the batch in flight: `status` 0 for a network
     * failure, `retryAfter` in seconds. Returns the delay before sending again: -1 to go
     * on now, a backoff in ms to retry the same events (same messageIds, so the collector
     * stores each once), -2 when the batch was refused (a 4xx other than 429: retrying
     * cannot help; the events are dropped and counted). */
    done(status, retryAfter) {
      const keys = inflight;
      inflight = new Set();
      if (!status || status === 429 || status >= 500) {
        backoff = Math.min(MAX_BACKOFF, Math.max(MIN_BACKOFF, backoff * 2));
        return Math.max(backoff * (0.9 + 0.2 * random()), (retryAfter || 0) * 1000);
      }
      backoff = 0;
      const n = removeKeys(keys);
      if (status < 300) { stats.sent += n; return -1; }
      stats.rejected += n;
      return -2;
    },
    /** The page is going away: a last batch of what is not in flight, within the 64 KB
     * budget of requests that outlive the page. Its events leave this page's queue but
     * stay in storage: nobody learns whether a request made at unload arrived, so the
     * next page sends them again and the collector answers `duplicate` for those that
     * did (at least once, never lost). */
    unloadBatch(now) {
      const busy = inflight;
      const all = queue;
      queue = all.filter((i) => !busy.has(i.key_));
      inflight = new Set();
      const body = nextBatch(now, UNLOAD_BYTES);
      const handed = inflight;
      queue = all.filter((i) => !handed.has(i.key_));
      inflight = busy;
      return body;
    },
    /** Counters for the page. */
    stats: () => Object.assign({}, stats, { queued: queue.length, waiting: waiting.length }),
  };
}
