// Sightline browser SDK: the public API of `window.sightline`.

export interface SightlineConfig {
  /** The site's write key (required). */
  writeKey: string;
  /** Collector origin or path prefix; default: this page's origin. */
  endpoint?: string;
  /** `opt-in` (default): nothing is stored or sent before analytics consent. */
  consent?: 'opt-in' | 'opt-out';
  /** Default country (ISO 3166 alpha-2) for national phone numbers in softLogin. */
  country?: string;
  /** Report refused and flagged events (tracking-plan violations) in the console. */
  debug?: boolean;
  /** Send the initial page view (default true). */
  autoPage?: boolean;
  /** Send a page view on pushState, replaceState and popstate (default true). */
  spa?: boolean;
}

export type Properties = Record<string, unknown>;

export interface ConsentChoice {
  analytics?: boolean;
  marketing?: boolean;
  personalization?: boolean;
  /** Where the choice came from, kept in the consent log (`banner`, `cmp`, ...). */
  source?: string;
  /** The version of the notice the visitor answered, kept with the record as its evidence. */
  version?: string | number;
  /**
   * A consent manager's own keys and values, read by the collector's rule:
   * `statistics`, `preferences`, OneTrust's `C0002`..., `"ACCEPT"`/`"DENY"`, 1/0.
   * Any other key or value states nothing.
   */
  [managerKey: string]: boolean | number | string | undefined;
}

export interface ConsentState {
  analytics: boolean;
  marketing: boolean;
  personalization: boolean;
  /** Whether the visitor has decided (always true in opt-out mode). */
  decided: boolean;
}

export interface SoftLoginResult {
  email_sha256?: string;
  /** Google's variant (gmail/googlemail dots removed), only when it differs. */
  email_sha256_google?: string;
  phone_sha256?: string;
  /** Meta's variant: E.164 digits without `+`. */
  phone_sha256_meta?: string;
  error?: string;
}

export interface Stats {
  queued: number;
  waiting: number;
  sent: number;
  /** Events dropped at the queue's bound (1,000): the oldest go first. */
  shed: number;
  rejected: number;
  purged: number;
}

/** A call's callback (Segment's): called once the call is sent, or after 300 ms. */
export type Done = () => void;

/**
 * A call's options, as analytics.js reads them. `context` and every other key (over
 * it) are merged into the event's context; raw PII in them is hashed. For that call only.
 */
export interface CallOptions {
  integrations?: Record<string, boolean | object>;
  /** The event's time. */
  timestamp?: Date | string | number;
  context?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface Sightline {
  /** Resolves once the SDK has loaded and replayed the calls made before. */
  ready: Promise<void>;
  init(config: SightlineConfig): Promise<void>;
  /**
   * The calls below take, as Segment's do, a function as their last argument: called
   * once the call is sent, or after 300 ms (a callback that navigates does not wait on
   * the network). An options object ({@link CallOptions}) may come before it.
   */
  track(event: string, properties?: Properties | Done, options?: CallOptions | Done, callback?: Done): void;
  page(category?: string | Properties | Done, name?: string | Properties | Done, properties?: Properties | CallOptions | Done, options?: CallOptions | Done, callback?: Done): void;
  screen(name: string, properties?: Properties | Done, options?: CallOptions | Done, callback?: Done): void;
  identify(userId?: string | Properties | Done, traits?: Properties | Done, options?: CallOptions | Done, callback?: Done): void;
  /** Hashes (SHA-256 of the normalized value) in the browser; the raw value never leaves the page. */
  softLogin(ids: { email?: string; phone?: string }): SoftLoginResult;
  alias(userId: string, previousId?: string | Done, options?: CallOptions | Done, callback?: Done): void;
  group(groupId: string, traits?: Properties | Done, options?: CallOptions | Done, callback?: Done): void;
  /**
   * analytics.js's trackLink: a click on each element given is tracked as `event`. The
   * navigation is not held back: the event is stored first and leaves with the page's
   * last request, or the next page's. The name and properties may be functions of the
   * element. Callable before the SDK has loaded.
   */
  trackLink(elements: Element | ArrayLike<Element> | null | undefined, event: string | ((el: Element) => string), properties?: Properties | ((el: Element) => Properties)): Sightline;
  /** analytics.js's trackForm: a submit of each form given is tracked, as {@link trackLink}. */
  trackForm(forms: Element | ArrayLike<Element> | null | undefined, event: string | ((el: Element) => string), properties?: Properties | ((el: Element) => Properties)): Sightline;
  /** analytics.js's other name for {@link trackLink}. */
  trackClick: Sightline['trackLink'];
  /** analytics.js's other name for {@link trackForm}. */
  trackSubmit: Sightline['trackForm'];
  consent: { set(choice: ConsentChoice): void; get(): ConsentState };
  /** A new anonymous id; the user id is forgotten. */
  reset(): void;
  /** Sends what is queued; resolves when the queue is empty or a retry is scheduled. */
  flush(): Promise<Stats>;
  debug(on?: boolean): void;
  anonymousId(): string;
  /**
   * analytics.js's: this visitor's anonymous id from the next event on (a server's, or
   * another domain's, to join them). False when refused: empty, over 200 characters, or
   * a placeholder every visitor would share (`undefined`, `null`, `0`). An email or phone
   * number becomes its SHA-256. Callable before the SDK has loaded.
   */
  setAnonymousId(id: string): boolean;
  userId(): string | undefined;
  stats(): Stats;
  /**
   * The current visitor's segments and the traits the site marks shareable. Asked of
   * the collector only under personalization consent; otherwise `{segments: [], traits: {}}`.
   */
  segments(): Promise<{ segments: string[]; traits: Record<string, string | number | boolean> }>;
}

declare global {
  interface Window {
    sightline: Sightline;
  }
}
