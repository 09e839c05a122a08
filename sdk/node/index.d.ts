// Type definitions for @telemetryd/client (hand-written; the implementation is
// index.cjs and lib/*.cjs).

/** A data value: text, a 64-bit integer (a safe-integer number or a BigInt) or a boolean. */
export type DataValue = string | number | bigint | boolean;

/**
 * Event data: a small map of name → scalar (at most 32 entries, not counting
 * those left `undefined`; at most 64 keys listed).
 */
export type EventData = Record<string, DataValue> | Map<string, DataValue>;

/** What a product may do. */
export type Mode = 'off' | 'local' | 'on';

/** The consent layer that decided a product's mode. */
export type Layer = 'system' | 'environment' | 'user_file' | 'default';

/** Environment lookups (defaults to `process.env`). */
export type Env = Record<string, string | undefined>;

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** The product, e.g. `cfdev` (a-z, 0-9, _; starting with a letter; at most 64). */
  product: string;
  /**
   * The host CLI's version, e.g. `1.2.0` (A-Z a-z 0-9 . _ + -; at most 64). When not
   * given (or empty): `TELEMETRY_BUILD` from `env` if not empty, else `unknown`, as
   * for telemetry-emit.
   */
  build?: string;
  /** Budget of each call in ms (default 100, also for 0 or less; at most a day). */
  timeoutMs?: number;
  /** Environment to read instead of `process.env` (TELEMETRY_SOCKET, DO_NOT_TRACK, ...). */
  env?: Env;
  /** The daemon's socket (else TELEMETRY_SOCKET, else the default). */
  socket?: string;
  /** The state dir (else TELEMETRY_STATE_DIR, else the default). */
  stateDir?: string;
  /** The user's consent file (else TELEMETRY_CONSENT_FILE, else STATE_DIR/consent). */
  consentFile?: string;
  /** The administrator's consent file (else TELEMETRY_SYSTEM_CONSENT_FILE, else /etc/telemetry/consent). */
  systemConsentFile?: string;
  /**
   * `false`: never start telemetryd when nothing serves the socket (default true;
   * TELEMETRY_AUTOSTART=0 also turns it off).
   */
  autostart?: boolean;
  /**
   * The telemetryd to start when nothing serves the socket: the one you ship with
   * your CLI, e.g. `path.join(__dirname, '..', 'bin', 'telemetryd')`. Used when it
   * is an absolute path to an executable file and TELEMETRY_DAEMON is not set; else
   * `telemetryd` on PATH.
   */
  daemon?: string;
}

/** Per-call options. */
export interface CallOptions {
  /** This call's budget in ms, instead of the client's (0 or less: the client's). */
  timeoutMs?: number;
}

/** What {@link Client.emit} / {@link Client.emitNoWait} did. */
export type EmitOutcome =
  /** The daemon committed the event to disk. */
  | { status: 'acknowledged'; id: string; accepted: number; duplicates: number }
  /** No-wait: the line was written to the daemon. */
  | { status: 'queued'; id: string }
  /** The daemon could not take it now: it waits in the spool for the daemon. */
  | { status: 'spooled'; id: string; file: string; reason: string; autostart?: AutostartResult }
  /** The spool is full: the event is lost (noted in the spool's drop file, for the daemon to count). */
  | { status: 'dropped'; id: string; reason: string; autostart?: AutostartResult }
  /** Refused for good (locally: `invalid`; by the daemon: `not_in_catalogue`, `consent_off`, ...). */
  | { status: 'refused'; code: string; message: string; id?: string }
  /**
   * Consent is off; `layer` says who decided. Nothing was sent or written.
   * `reason`: why the user's consent file was not believed (another user could
   * have written it), when that is so.
   */
  | { status: 'off'; layer: Layer; reason?: string }
  /** Something else went wrong (e.g. the spool could not be written). */
  | { status: 'failed'; reason: string; id?: string; autostart?: AutostartResult };

/** What autostart did after the socket had no daemon. */
export type AutostartResult = 'spawned' | 'recently' | 'disabled' | 'not_found' | 'failed';

/** The consent of the client's product as the files and the environment say. */
export interface ConsentOutcome {
  mode: Mode;
  layer: Layer;
  /** With layer `environment`: the variable that opts out. */
  variable?: string | null;
  /**
   * Why the check could not be made (then mode is off), or why the user's
   * consent file was not believed (another user could have written it: it
   * counts as undecided).
   */
  error?: string;
}

/** The daemon's reply to a consent change (ConsentReport). */
export interface ConsentReport {
  consent: ProductConsent;
  purged: number;
  final_event: boolean;
  file: string;
  [field: string]: unknown;
}

/** What {@link Client.setConsent} did. */
export type SetConsentOutcome =
  | {
      status: 'recorded';
      mode: Mode;
      /** The consent file written. */
      file: string;
      /** Whether the daemon applied it now (else at its next start). */
      daemonNotified: boolean;
      /** The daemon's report, when notified. */
      applied?: ConsentReport;
      /** Why the daemon was not notified. */
      daemonError?: string;
      /** The old consent file could not be read (not UTF-8, over 1 MiB, no
       * permission): where it was kept, renamed beside the new one (which
       * keeps the lines that can still be read). */
      kept?: string;
      /** Something to tell the user: a kept unreadable file. */
      warning?: string;
      /** The product's consent now (the system file or the environment may keep it off). */
      effective: { mode: Mode; layer: Layer };
    }
  /**
   * The file was written, but the running daemon reads consent from another
   * file (`daemonFile`), so it did not apply the decision: it keeps the one it
   * had (after an `off`, it goes on uploading). `message` names both files and
   * the fix (TELEMETRY_CONSENT_FILE), as `telemetryctl consent` says it (exit 3).
   */
  | {
      status: 'not_applied';
      mode: Mode;
      /** The consent file written. */
      file: string;
      /** The consent file the running daemon reads. */
      daemonFile: string;
      message: string;
      daemonNotified: false;
      /** The daemon's report (its consent, from its own file). */
      applied: ConsentReport;
      kept?: string;
      warning?: string;
      /** The product's consent now, as this client's files say. */
      effective: { mode: Mode; layer: Layer };
    }
  | { status: 'refused'; code: 'invalid'; message: string }
  | { status: 'failed'; reason: string };

/** What {@link Client.prompt} did. */
export type PromptOutcome =
  /** Asked on the terminal; the answer is recorded. */
  | { status: 'asked'; mode: 'on' | 'off'; recorded: SetConsentOutcome }
  /** The user's file already decides: not asked. */
  | { status: 'already_decided'; mode: Mode }
  /** The system file or the environment forces off: not asked. */
  | { status: 'forced_off'; layer: 'system' | 'environment' }
  /** stdin or stderr is not a terminal: not asked, nothing recorded. */
  | { status: 'not_a_terminal' }
  /** Asked, but no answer could be read: nothing recorded. */
  | { status: 'no_answer' }
  | { status: 'refused'; code: 'invalid'; message: string }
  | { status: 'failed'; reason: string };

/** A product's consent as the daemon sees it. */
export interface ProductConsent {
  product: string;
  mode: Mode;
  layer: Layer;
  manifest?: string;
  manifest_error?: string | null;
  version?: number;
  consented_version?: number;
  new_events?: string[];
  [field: string]: unknown;
}

/** The daemon's StatusReport (fields it adds later pass through). */
export interface StatusReport {
  daemon_version: string;
  uptime_secs: number;
  destination: string;
  pending_events: number;
  pending_bytes: number;
  sealed_batches: number;
  uploaded_events: number;
  last_upload_us: number | null;
  last_upload_key: string | null;
  last_error: string | null;
  next_attempt_us: number | null;
  consecutive_failures: number;
  local_events: number;
  consent: ProductConsent[];
  consent_file: string;
  incidents: string[];
  dropped: [string, number][];
  refusals?: {
    product: string;
    code: string;
    count: number;
    /** The event of the latest refusal ("" if none). */
    last_event?: string;
    /** The message the latest refusal was answered with ("" from an older daemon). */
    last_message?: string;
  }[];
  next_upload_us?: number | null;
  destinations?: Record<string, unknown>[];
  [field: string]: unknown;
}

/** What {@link Client.status} got. */
export type StatusOutcome =
  | { status: 'ok'; report: StatusReport }
  | { status: 'refused'; code: string; message: string }
  | { status: 'failed'; reason: string; code?: string };

/** Where things are. */
export interface Paths {
  socket: string;
  stateDir: string;
  consentFile: string;
  systemConsentFile: string;
  spoolDir: string;
}

/** A client for one product. Every method resolves (never rejects, never throws). */
export interface Client {
  readonly product: string;
  /** The build sent: the option, else TELEMETRY_BUILD, else `unknown`. */
  readonly build: string;
  readonly timeoutMs: number;
  /** Record an event and wait until the daemon has committed it (or spool it). */
  emit(event: string, data?: EventData, options?: CallOptions): Promise<EmitOutcome>;
  /** Record an event without waiting for the daemon's reply (or spool it). */
  emitNoWait(event: string, data?: EventData, options?: CallOptions): Promise<EmitOutcome>;
  /** The product's consent from the files and the environment, without the daemon. */
  consent(): Promise<ConsentOutcome>;
  /** Record the user's decision in their consent file and tell the daemon. */
  setConsent(mode: Mode, options?: CallOptions): Promise<SetConsentOutcome>;
  /** Ask once on a terminal (stderr/stdin), default No, and record the answer. */
  prompt(text?: string, options?: CallOptions): Promise<PromptOutcome>;
  /** The daemon's status report. */
  status(options?: CallOptions): Promise<StatusOutcome>;
  /** The locations this client uses now (null if they cannot be computed). */
  paths(): Paths | null;
}

/** Create a client. Never throws: bad options surface as `refused` outcomes. */
export function createClient(options: ClientOptions): Client;

/** Parse `KEY=VALUE` (`KEY:=VALUE` forces text) into typed event data. Never throws. */
export function parseKV(arg: string): { key: string; value: DataValue } | { error: string };

/** Consent from the files' texts and an environment (the pure core of the consent check). */
export function resolveConsent(
  product: string,
  inputs: { system?: string | null | { unreadable: true }; env?: Env; user?: string | null },
): { mode: Mode; layer: Layer };

/** One parsed consent-file line. */
export interface ConsentEntry {
  product: string;
  mode: Mode;
  since: string | null;
  lastOff: string | null;
  version: number | null;
}

/** A parsed consent file. */
export interface ConsentFile {
  entries: ConsentEntry[];
  /** 1-based numbers of damaged lines (0: unreadable). */
  badLines: number[];
}

/** Parse a consent file's text. */
export function parseConsentFile(text: string): ConsentFile;
/** Render a consent file in canonical form. */
export function renderConsentFile(file: ConsentFile): string;
/** Set a product's decision in a parsed file (in place), as Rust's `ConsentFile::set_version`. */
export function setEntry(
  file: ConsentFile,
  product: string,
  mode: Mode,
  since: string | null,
  version?: number | null,
): ConsentFile;

/** Every location from an environment, a uid and an OS ("linux" or "macos"). */
export function resolvePaths(env: Env, uid?: number, os?: string): Paths;
/** FNV-1a 64 of a socket path, 16 hex digits. */
export function socketHash(socket: string): string;
/** STATE_DIR/spool/events-<hash>.d for a socket. */
export function spoolDirFor(stateDir: string, socket: string): string;
/**
 * The drop file beside a spool (STATE_DIR/spool/events-<hash>.drops for
 * events-<hash>.d): one product name per line for each event dropped because the
 * spool was full, which the daemon counts (status: counters.spool_full_drops).
 */
export function spoolDropsFile(spool: string): string;
/** A fresh UUIDv7 string. */
export function uuidv7(ms?: number): string;

/** A WireEvent as sent. */
export interface WireEvent {
  id: string;
  event: string;
  product: string;
  build: string;
  timestamp_us: number | bigint;
  data: Record<string, DataValue>;
}

/** Encoders for every request: each returns one JSON line with its newline. */
export const requests: {
  emit(events: WireEvent[], ack: boolean): string;
  status(): string;
  flush(): string;
  consentChanged(product: string, build: string): string;
  show(product: string | null, afterSeq: number): string;
  purge(product: string | null): string;
  probe(): string;
  forget(product: string, build: string): string;
  receipts(key: string | null, after: number): string;
  stop(): string;
};

/** A decoded reply line. */
export interface Reply {
  kind:
    | 'ack'
    | 'queued'
    | 'status'
    | 'flushed'
    | 'error'
    | 'consent_applied'
    | 'events'
    | 'purged'
    | 'probed'
    | 'forgotten'
    | 'receipts'
    | 'stopping'
    | 'unknown'
    | 'bad';
  body: any;
  problem?: string;
}

/** Decode one reply line. Never throws. */
export function decodeResponse(line: string | Buffer): Reply;

/** The generic consent question for a product. */
export function genericPrompt(product: string): string;
/** The "how to change" text shown after the question. */
export function howToChange(product: string): string;

/** Default budget of a call, in ms. */
export const DEFAULT_TIMEOUT_MS: number;
/** Error codes after which an event is not retried. */
export const FINAL_CODES: readonly string[];
/** The protocol's limits on events. */
export const LIMITS: Readonly<{
  maxNameLen: number;
  maxBuildLen: number;
  maxDataEntries: number;
  maxStringLen: number;
  maxEventsPerEmit: number;
}>;
/** Longest JSON line, newline included. */
export const MAX_LINE_LEN: number;
/** Most files in a spool dir. */
export const MAX_SPOOL_FILES: number;
/** Largest drop file a writer appends to (64 KiB). */
export const MAX_DROPS_BYTES: number;
/** The protocol version. */
export const PROTOCOL_VERSION: number;
